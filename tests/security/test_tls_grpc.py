"""Mutual TLS and authorisation on the real server, 127.0.0.1:0, with real certificates.

The robot side uses the robot's own client classes (Uplink, WeightSync) with their TLS hooks.
"""

import logging
import queue
import sqlite3
import threading
import time

import grpc
import pytest
from cloud_brain.cli import main
from cloud_brain.config import CloudConfig, ConfigError
from cloud_brain.service.server import CloudServer, server_credentials
from cloud_testlib import make_batch, make_chunk
from nestor_core import nestor_pb2, nestor_pb2_grpc
from nestor_core.manifest import verify
from nestor_core.tls import identity_files
from nestor_robot.channel import tls_credentials
from nestor_robot.spool import Spool
from nestor_robot.uplink import Uplink, UplinkConfig
from nestor_robot.weight_sync import WeightSync, WeightSyncConfig
from security_testlib import TASK, client_credentials, initial_model

DEADLINE = 10.0


def channel(server, pki, who: str) -> grpc.Channel:
    return grpc.secure_channel(server.address, client_credentials(pki, who))


def rows(db_path) -> list[tuple]:
    with sqlite3.connect(db_path) as conn:
        return conn.execute("SELECT robot_id, first_seq, count FROM chunks ORDER BY id").fetchall()


def ingest(ch: grpc.Channel, *chunks) -> list[nestor_pb2.IngestAck]:
    requests = queue.Queue()
    for chunk in chunks:
        requests.put(chunk)
    requests.put(None)
    call = nestor_pb2_grpc.ExperienceStub(ch).Ingest(iter(requests.get, None), timeout=DEADLINE)
    return list(call)


def rejected(server) -> dict:
    return dict(server.metrics.rejected_by_reason())


def test_robot_uploads_its_own_experience(tls_server, tls_config, pki):
    with channel(tls_server, pki, "robot0") as ch:
        acks = ingest(ch, make_chunk(robot="robot0", first_seq=1, n=5), make_chunk(robot="robot0", first_seq=6, n=3))
    assert [a.acked_through_seq for a in acks] == [5, 8]
    assert rows(tls_config.db_path) == [("robot0", 1, 5), ("robot0", 6, 3)]


def test_forged_robot_id_is_denied_and_nothing_stored(tls_server, tls_config, pki):
    with channel(tls_server, pki, "robot0") as ch:
        with pytest.raises(grpc.RpcError) as err:
            ingest(ch, make_chunk(robot="robot1", first_seq=1, n=5))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "robot1" in err.value.details()
        # A stream that starts honest and then forges ends at the forged chunk.
        with pytest.raises(grpc.RpcError) as err:
            ingest(ch, make_chunk(robot="robot0", first_seq=1, n=2), make_chunk(robot="robot1", first_seq=1, n=2))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert rows(tls_config.db_path) == [("robot0", 1, 2)]
    assert rejected(tls_server) == {"forged_robot_id": 2}
    # The server keeps serving: robot1 itself uploads fine, on the same server.
    with channel(tls_server, pki, "robot1") as ch:
        assert ingest(ch, make_chunk(robot="robot1", first_seq=1, n=5))[0].acked_through_seq == 5
    assert rows(tls_config.db_path)[-1] == ("robot1", 1, 5)
    # The admin is no robot: it may not upload experience either.
    with channel(tls_server, pki, "admin") as ch, pytest.raises(grpc.RpcError) as err:
        ingest(ch, make_chunk(robot="admin", first_seq=1, n=1))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_robot_cannot_promote_or_roll_back_and_admin_can(tls_server, pki):
    arm = tls_server.registry.active("arm")
    child = tls_server.registry.register("arm", arm.onnx + b"+child", {}, parent=arm.version)
    with channel(tls_server, pki, "robot0") as ch:
        stub = nestor_pb2_grpc.ModelsStub(ch)
        for call in (
            lambda: stub.Promote(nestor_pb2.PromoteRequest(version=child.version), timeout=DEADLINE),
            lambda: stub.Rollback(nestor_pb2.RollbackRequest(task="arm"), timeout=DEADLINE),
        ):
            with pytest.raises(grpc.RpcError) as err:
                call()
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert tls_server.registry.active("arm").version == arm.version
        # Reads are allowed to a robot.
        assert {m.version for m in stub.List(nestor_pb2.ListModelsRequest(task="arm"), timeout=DEADLINE).models} == {
            arm.version,
            child.version,
        }
        status = nestor_pb2_grpc.FleetStub(ch).GetStatus(nestor_pb2.StatusRequest(), timeout=DEADLINE)
        assert len(status.models) == 3
    with channel(tls_server, pki, "admin") as ch:
        stub = nestor_pb2_grpc.ModelsStub(ch)
        assert stub.Promote(nestor_pb2.PromoteRequest(version=child.version), timeout=DEADLINE).model.status == "active"
        assert stub.Rollback(nestor_pb2.RollbackRequest(task="arm"), timeout=DEADLINE).model.version == arm.version
    assert tls_server.registry.active("arm").version == arm.version


def test_models_service_has_no_publish_rpc():
    methods = set(nestor_pb2.DESCRIPTOR.services_by_name["Models"].methods_by_name)
    # ReportBad only marks a version bad for the reporting robot; nothing adds a model.
    assert methods == {"Subscribe", "List", "Promote", "Rollback", "ReportBad"}


@pytest.mark.parametrize("who", ["no_cert", "insecure"])
def test_a_client_without_a_certificate_cannot_connect(tls_server, pki, who):
    if who == "insecure":
        ch = grpc.insecure_channel(tls_server.address)
    else:
        ch = grpc.secure_channel(tls_server.address, grpc.ssl_channel_credentials((pki / "ca.pem").read_bytes()))
    with ch, pytest.raises(grpc.RpcError) as err:
        nestor_pb2_grpc.FleetStub(ch).GetStatus(nestor_pb2.StatusRequest(), timeout=3)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_certificate_from_another_ca_cannot_connect(tls_server, tmp_path):
    from cloud_brain.service.certs import generate

    generate(tmp_path / "rogue", robots=1)
    rogue = tmp_path / "rogue"
    credentials = identity_files(rogue, "robot0").channel_credentials()
    with grpc.secure_channel(tls_server.address, credentials) as ch, pytest.raises(grpc.RpcError) as err:
        nestor_pb2_grpc.FleetStub(ch).GetStatus(nestor_pb2.StatusRequest(), timeout=3)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_cli_talks_mutual_tls(tls_server, pki, capsys, monkeypatch):
    tls = ["--ca", str(pki / "ca.pem")]
    robot = [*tls, "--cert", str(pki / "robot0.pem"), "--key", str(pki / "robot0.key")]
    assert main(["status", "--address", tls_server.address, "--json", *robot]) == 0
    assert '"transitions_stored"' in capsys.readouterr().out
    assert main(["models", "rollback", "--task", TASK, "--address", tls_server.address, *robot]) == 1
    assert "PERMISSION_DENIED" in capsys.readouterr().err
    assert main(["status", "--address", tls_server.address, "--timeout", "2"]) == 2  # no cert: unreachable
    assert main(["status", "--address", tls_server.address, *tls]) == 2  # half the TLS options
    assert "--cert, --key" in capsys.readouterr().err
    monkeypatch.setenv("NESTOR_TLS_CA", str(pki / "ca.pem"))
    monkeypatch.setenv("NESTOR_TLS_CERT", str(pki / "admin.pem"))
    monkeypatch.setenv("NESTOR_TLS_KEY", str(pki / "admin.key"))
    version = tls_server.registry.active(TASK).version
    assert main(["models", "promote", str(version), "--address", tls_server.address, "--json"]) == 0


def test_robot_clients_over_mutual_tls(tls_server, tls_config, pki, public_key, tmp_path):
    """The robot's Uplink and WeightSync with their TLS hooks, against the real server."""
    creds = tls_credentials(str(pki / "ca.pem"), str(pki / "robot0.pem"), str(pki / "robot0.key"))
    spool = Spool(tmp_path / "spool.sqlite", "robot0")
    for first in (1, 6):
        spool.append(make_batch(robot="robot0", first_seq=first, n=5))
    uplink = Uplink(spool, tls_server.address, UplinkConfig(channel_credentials=creds, backoff_max_s=0.2))
    seen = []
    sync = WeightSync(
        tls_server.address,
        "robot0",
        TASK,
        str(tmp_path / "models"),
        seen.append,
        WeightSyncConfig(channel_credentials=creds, public_key_path=str(pki / "model_signing.pub.pem")),
    )
    stop = threading.Event()
    threads = [threading.Thread(target=t.run, args=(stop,), daemon=True) for t in (uplink, sync)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (spool.acked_through() == 10 and seen):
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(5)
        spool.close()
    assert rows(tls_config.db_path) == [("robot0", 1, 5), ("robot0", 6, 5)]
    active = tls_server.registry.active(TASK)
    assert [m["version"] for m in seen] == [active.version]
    assert verify(active.manifest, active.signature, public_key, sha256=active.sha256)["task"] == TASK
    assert sync.stats()["rejected"] == 0


def test_tls_hook_names_the_parameter(pki):
    assert tls_credentials("", "", "") is None
    with pytest.raises(ValueError, match="tls_key"):
        tls_credentials(str(pki / "ca.pem"), str(pki / "robot0.pem"), "")
    with pytest.raises(ValueError, match="^tls_ca: cannot read"):
        tls_credentials("/nope/ca.pem", str(pki / "robot0.pem"), str(pki / "robot0.key"))


# ------------------------------------------------------------------ insecure mode


def test_insecure_mode_on_loopback_warns_loudly_and_enforces_nothing(tmp_path, task_files, caplog):
    config = CloudConfig(
        address="127.0.0.1:0",
        db_path=str(tmp_path / "c.db"),
        model_dir="",
        task_files=task_files,
        max_workers=256,
        grace_seconds=0.5,
    ).validate()
    config.schedule.enabled = False
    caplog.set_level(logging.WARNING, logger="cloud_brain.service.server")
    server = CloudServer(config, initial_model_fn=initial_model)
    server.start()
    try:
        assert any(r.getMessage().startswith("INSECURE:") for r in caplog.records)
        with grpc.insecure_channel(server.address) as ch:
            # No certificates, so no authorisation: dev mode on loopback only.
            assert ingest(ch, make_chunk(robot="anyone", first_seq=1, n=2))[0].acked_through_seq == 2
            stub = nestor_pb2_grpc.ModelsStub(ch)
            stub.Promote(nestor_pb2.PromoteRequest(version=1), timeout=DEADLINE)
    finally:
        server.stop(0.5)


def test_insecure_mode_is_refused_off_loopback(tmp_path):
    config = CloudConfig(address="0.0.0.0:0", db_path=str(tmp_path / "c.db"))  # not validated on purpose
    with pytest.raises(ConfigError, match="^tls: refusing"):
        server_credentials(config)
    config_file = tmp_path / "cloud.yaml"
    config_file.write_text(f"address: '0.0.0.0:0'\ndb_path: {tmp_path / 'c.db'}\n")
    assert main(["serve", "--config", str(config_file)]) == 2


def test_health_command_over_mutual_tls(tls_server, pki, capsys):
    """`nestor-cloud health` (the docker-compose healthcheck): 0 only when SERVING over mTLS."""
    admin = ["--ca", str(pki / "ca.pem"), "--cert", str(pki / "admin.pem"), "--key", str(pki / "admin.key")]
    assert main(["health", "--address", tls_server.address, *admin]) == 0
    assert "SERVING" in capsys.readouterr().out
    assert main(["health", "--address", tls_server.address, "--service", "nestor.NoSuchService", *admin]) == 1
    assert main(["health", "--address", tls_server.address, "--timeout", "2"]) == 2  # no client cert


def test_a_robot_subscribes_to_models_only_as_itself(tls_server, pki):
    """Canary choice and bad-version marks are per robot: robot0 cannot subscribe as robot1."""
    request = nestor_pb2.SubscribeRequest(robot_id="robot1", task=TASK)
    with channel(tls_server, pki, "robot0") as ch:
        stream = nestor_pb2_grpc.ModelsStub(ch).Subscribe(request, timeout=10)
        with pytest.raises(grpc.RpcError) as err:
            next(stream)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "may not subscribe as 'robot1'" in err.value.details()
    with channel(tls_server, pki, "robot1") as ch:
        stream = nestor_pb2_grpc.ModelsStub(ch).Subscribe(request, timeout=10)
        assert next(stream).version == tls_server.registry.active(TASK).version
        stream.cancel()
