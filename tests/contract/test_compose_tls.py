"""The compose healthcheck and the robots really speak mutual TLS with what the certs service wrote."""

from __future__ import annotations

import pathlib
import subprocess
import sys
from concurrent import futures

import grpc
import pytest
from compose_model import CLOUD, cloud_listen_port, host_port, load_compose
from compose_pki import materialized, service_argv
from dockerfiles import launch_arguments
from grpc_health.v1 import health, health_pb2, health_pb2_grpc


def _health_server(volumes, servicer):
    """A gRPC health server with the cloud's bundle: server cert, client certs required."""
    compose = volumes.compose
    from cloud_brain.cli import _parser

    certs_dir = volumes.host_path(CLOUD, _parser().parse_args(service_argv(compose, CLOUD)[1:]).certs)
    credentials = grpc.ssl_server_credentials(
        [((certs_dir / "server.key").read_bytes(), (certs_dir / "server.pem").read_bytes())],
        root_certificates=(certs_dir / "ca.pem").read_bytes(),
        require_client_auth=True,
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    return server, port


def test_healthcheck_probe():
    """The compose healthcheck, run as the container would (its env, its files), against real mTLS."""
    compose = load_compose()
    service = compose["services"][CLOUD]
    test = service["healthcheck"]["test"]
    assert test[0] == "CMD" and test[1] == "nestor-cloud", test
    port = cloud_listen_port(compose)
    with materialized(compose) as volumes:
        env = {k: str(v) for k, v in service["environment"].items()}
        for key in ("NESTOR_TLS_CA", "NESTOR_TLS_CERT", "NESTOR_TLS_KEY"):
            env[key] = str(volumes.host_path(CLOUD, env[key]))
        servicer = health.HealthServicer()
        server, bound = _health_server(volumes, servicer)
        argv = [str(pathlib.Path(sys.executable).parent / "nestor-cloud")] + [
            w.replace(f"127.0.0.1:{port}", f"127.0.0.1:{bound}") for w in test[2:]
        ]

        def run(extra_env=None) -> int:
            full_env = {"PATH": "/usr/bin:/bin", **env, **(extra_env or {})}
            return subprocess.run(argv, env=full_env, capture_output=True, timeout=60).returncode

        try:
            assert f"127.0.0.1:{bound}" in argv
            servicer.set("", health_pb2.HealthCheckResponse.SERVING)
            assert run() == 0
            servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
            assert run() == 1
            servicer.set("", health_pb2.HealthCheckResponse.SERVING)
            # Without the admin certificate the TLS handshake fails: unhealthy, not healthy.
            assert run({"NESTOR_TLS_CERT": "", "NESTOR_TLS_KEY": "", "NESTOR_TLS_CA": ""}) != 0
        finally:
            server.stop(0)
        assert run() == 2  # nothing listening


def test_robot_reaches_the_cloud_by_service_name():
    """robot0's bundle verifies the server as `cloud_brain` (the name it dials); another name fails."""
    compose = load_compose()
    with materialized(compose) as volumes:
        servicer = health.HealthServicer()
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        server, port = _health_server(volumes, servicer)
        try:
            host, _ = host_port(launch_arguments(compose["services"]["robot0"]["command"])["cloud"])
            assert host == CLOUD
            robot = volumes.host_path("robot0", "/certs")
            credentials = grpc.ssl_channel_credentials(
                (robot / "ca.pem").read_bytes(),
                (robot / "robot0.key").read_bytes(),
                (robot / "robot0.pem").read_bytes(),
            )

            def check(name: str):
                options = [("grpc.ssl_target_name_override", name)]
                with grpc.secure_channel(f"127.0.0.1:{port}", credentials, options=options) as channel:
                    return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)

            assert check(host).status == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.RpcError) as err:
                check("not_the_cloud")
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        finally:
            server.stop(0)
