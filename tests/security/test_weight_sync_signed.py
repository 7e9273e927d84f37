"""Robot side of signed manifests: WeightSync with a public key, and the weight_sync node over DDS."""

import json
import os
import random
import threading
import time
from concurrent import futures

import grpc
import pytest
import ros_testlib
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nestor_core import nestor_pb2_grpc
from nestor_core.manifest import verify_stored
from nestor_robot.weight_sync import WeightSync, WeightSyncConfig
from ros_testlib import Recorder, model_update_probe, spin_until, start_node, stop_node
from security_testlib import TASK, pem, signed_update, tampered_update, tiny_policy


def make_sync(model_dir, on_model, pki, target="127.0.0.1:1", **config) -> WeightSync:
    cfg = WeightSyncConfig(
        backoff_min_s=0.02, backoff_max_s=0.1, public_key_path=str(pki / "model_signing.pub.pem"), **config
    )
    return WeightSync(target, "robot0", TASK, str(model_dir), on_model, cfg)


def _files(path) -> list[str]:
    return sorted(os.listdir(path))


def test_signed_update_is_accepted_and_its_manifest_kept_in_the_sidecar(tmp_path, pki, signing_key, public_key):
    seen = Recorder()
    sync = make_sync(tmp_path, seen, pki)
    data = tiny_policy(0.3)
    info = sync.handle_update(signed_update(4, data, signing_key, parent=3))
    assert info is not None and seen.versions == [4]
    assert set(info) == {"version", "path", "sha256", "task", "parent"}  # the announcement is unchanged
    sidecar = json.loads((tmp_path / f"{TASK}-v4.json").read_text())
    assert json.loads(sidecar["manifest"])["sha256"] == info["sha256"] and sidecar["signature"]
    assert verify_stored(info["path"], data, public_key, version=4)["parent"] == 3


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        # bytes changed and sha256 updated to match; the signature covers the genuine manifest
        (lambda key: tampered_update(2, tiny_policy(0.7), key), "manifest_mismatch"),
        # ... and the manifest rewritten to the new sha256 as well
        (lambda key: tampered_update(2, tiny_policy(0.7), key, rewrite_manifest=True), "bad_signature"),
        (lambda key: signed_update(2, tiny_policy(0.7), None), "unsigned"),
        (lambda key: signed_update(2, tiny_policy(0.7), Ed25519PrivateKey.generate()), "bad_signature"),
        # genuinely signed v2 replayed as v3
        (lambda key: _renumbered(signed_update(2, tiny_policy(0.7), key), 3), "manifest_mismatch"),
        # signature first: even a broken model is refused for its signature, before onnx.checker
        (lambda key: signed_update(2, b"not an onnx model", None), "unsigned"),
    ],
)
def test_bad_signatures_are_refused_and_the_old_model_kept(tmp_path, pki, signing_key, make, reason):
    seen = Recorder()
    sync = make_sync(tmp_path, seen, pki)
    sync.handle_update(signed_update(1, tiny_policy(0.5), signing_key))
    assert sync.handle_update(make(signing_key)) is None
    assert seen.versions == [1] and sync.current_version() == 1
    assert sync.stats()["rejected_by_reason"] == {reason: 1}
    assert _files(tmp_path) == [f"{TASK}-v1.json", f"{TASK}-v1.onnx"]


def _renumbered(update, version):
    update.version = version
    return update


def test_without_a_public_key_signatures_are_not_required(tmp_path, signing_key):
    sync = WeightSync("127.0.0.1:1", "robot0", TASK, str(tmp_path), Recorder(), WeightSyncConfig())
    assert sync.handle_update(signed_update(1, tiny_policy(), None)) is not None


def test_bad_public_key_path_is_named(tmp_path):
    with pytest.raises(ValueError, match="^public_key_path:"):
        WeightSync("127.0.0.1:1", "r", TASK, str(tmp_path), Recorder(), WeightSyncConfig(public_key_path="/nope"))


def test_load_local_with_a_key_skips_unsigned_files(tmp_path, pki, signing_key):
    unsigned_sync = WeightSync("127.0.0.1:1", "robot0", TASK, str(tmp_path), Recorder(), WeightSyncConfig())
    make_sync(tmp_path, Recorder(), pki).handle_update(signed_update(1, tiny_policy(0.1), signing_key))
    unsigned_sync.handle_update(signed_update(2, tiny_policy(0.2), None))  # stored while keys were off
    seen = Recorder()
    assert make_sync(tmp_path, seen, pki).load_local()["version"] == 1
    assert seen.versions == [1]


# ------------------------------------------------------------------ the node, over DDS, with mutual TLS


class ModelsServicer(nestor_pb2_grpc.ModelsServicer):
    """Streams scripted updates newer than the robot's version, then holds the stream open."""

    def __init__(self, updates):
        self.updates = list(updates)
        self.peers: list[str] = []
        self.lock = threading.Lock()

    def Subscribe(self, request, context):
        with self.lock:
            self.peers.append(context.auth_context().get("x509_common_name", [b""])[0].decode())
        yield from (u for u in self.updates if u.version > request.current_version)
        while context.is_active():
            time.sleep(0.02)


def wait_for(predicate, timeout: float = 30.0) -> bool:
    return ros_testlib.wait_for(predicate, timeout, period=0.05)


@pytest.mark.slow
def test_weight_sync_node_refuses_tampered_and_unsigned_models(tmp_path, pki, signing_key, monkeypatch):
    import rclpy

    domain = 1 + (os.getpid() * 13 + random.randrange(1000)) % 100
    monkeypatch.setenv("ROS_DOMAIN_ID", str(domain))
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    good = tiny_policy(0.4)
    servicer = ModelsServicer(
        [
            signed_update(1, good, signing_key),
            tampered_update(2, tiny_policy(0.6), signing_key),  # manifest_mismatch
            tampered_update(3, tiny_policy(0.6), signing_key, rewrite_manifest=True),  # bad_signature
            signed_update(4, tiny_policy(0.8), None),  # unsigned
        ]
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    nestor_pb2_grpc.add_ModelsServicer_to_server(servicer, server)
    credentials = grpc.ssl_server_credentials(
        [(pem(pki, "server.key"), pem(pki, "server.pem"))],
        root_certificates=pem(pki, "ca.pem"),
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    model_dir = tmp_path / "models"
    params = {
        "robot_id": "robot0",
        "task": TASK,
        "cloud_address": f"127.0.0.1:{port}",
        "model_dir": str(model_dir),
        "backoff_min_s": "0.05",
        "public_key_path": str(pki / "model_signing.pub.pem"),
        "tls_ca": str(pki / "ca.pem"),
        "tls_cert": str(pki / "robot0.pem"),
        "tls_key": str(pki / "robot0.key"),
    }
    proc = start_node("weight_sync_node", **params)
    context = rclpy.Context()
    received: list[dict] = []
    output = ""
    try:
        assert wait_for(lambda: (model_dir / f"{TASK}-v1.json").exists()), "model v1 never stored"
        node, executor = model_update_probe(context, domain, received)
        spin_until(executor, lambda: bool(received), proc)
        # Give refused versions time to be announced, were they (wrongly) accepted.
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            executor.spin_once(timeout_sec=0.1)
        node.destroy_node()
        executor.shutdown()
    finally:
        output = stop_node(proc, context)
        server.stop(0)
    assert [m["version"] for m in received] == [1], f"node output:\n{output}"
    assert sorted(os.listdir(model_dir)) == [f"{TASK}-v1.json", f"{TASK}-v1.onnx"]
    for version, reason in ((2, "manifest_mismatch"), (3, "bad_signature"), (4, "unsigned")):
        assert f"rejected {TASK} v{version} ({reason})" in output, output
    assert "INSECURE" not in output
    assert servicer.peers and set(servicer.peers) == {"robot0"}  # it connected with its client cert
    assert proc.returncode == 0, output
