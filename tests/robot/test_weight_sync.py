"""Weight sync: verify-then-store-then-announce, over real gRPC and, for the node, over DDS."""

import hashlib
import json
import os
import random
import threading
import time
from concurrent import futures

import grpc
import pytest
from nestor_core import nestor_pb2, nestor_pb2_grpc
from nestor_robot.weight_sync import WeightSync, WeightSyncConfig
from policy_testlib import ACT, KEY, OBS, TASK, tiny_policy  # noqa: F401
from ros_testlib import Recorder, model_update_probe, spin_until, start_node, stop_node, wait_for


def update(version: int, onnx_bytes: bytes, parent: int = 0, sha256: str | None = None) -> nestor_pb2.ModelUpdate:
    digest = sha256 or hashlib.sha256(onnx_bytes).hexdigest()
    manifest = json.dumps({"version": version, "parent": parent, "sha256": digest}, sort_keys=True).encode()
    return nestor_pb2.ModelUpdate(
        version=version, parent=parent, task=TASK, sha256=digest, onnx=onnx_bytes, manifest=manifest
    )


def tampered(version: int, onnx_bytes: bytes) -> nestor_pb2.ModelUpdate:
    """Announced with the digest of the genuine bytes, delivered with one weight byte flipped."""
    good = update(version, onnx_bytes)
    bad = bytearray(onnx_bytes)
    bad[len(bad) // 2] ^= 0x01
    good.onnx = bytes(bad)
    return good


def make_sync(model_dir, on_model, target="127.0.0.1:1", **config) -> WeightSync:
    cfg = WeightSyncConfig(backoff_min_s=0.02, backoff_max_s=0.1, **config)
    return WeightSync(target, "robot_w", TASK, str(model_dir), on_model, cfg)


# ------------------------------------------------------------------ plain logic


def test_valid_model_is_written_atomically_and_announced(tmp_path):
    seen = Recorder()
    sync = make_sync(tmp_path, seen)
    data = tiny_policy()
    info = sync.handle_update(update(3, data, parent=2))
    path = tmp_path / f"{TASK}-v3.onnx"
    assert info == {
        "version": 3,
        "path": str(path),
        "sha256": hashlib.sha256(data).hexdigest(),
        "task": TASK,
        "parent": 2,
    }
    assert seen.models == [info]
    assert path.read_bytes() == data
    assert json.loads((tmp_path / f"{TASK}-v3.json").read_text())["sha256"] == info["sha256"]
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")]
    assert sync.current_version() == 3
    # The same version again is not re-announced.
    assert sync.handle_update(update(3, data, parent=2)) is None
    assert seen.versions == [3] and sync.stats()["unchanged"] == 1


def test_tampered_model_is_refused_and_the_old_one_kept(tmp_path):
    seen = Recorder()
    sync = make_sync(tmp_path, seen)
    sync.handle_update(update(1, tiny_policy(0.5)))
    assert sync.handle_update(tampered(2, tiny_policy(0.7))) is None
    assert seen.versions == [1] and sync.current_version() == 1
    assert not (tmp_path / f"{TASK}-v2.onnx").exists()
    assert sync.stats()["rejected_by_reason"] == {"sha256_mismatch": 1}


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: update(2, b"not an onnx model"), "onnx_invalid"),
        (lambda: update(2, tiny_policy(float("nan"))), "non_finite_output"),
        (lambda: update(2, tiny_policy(task="other_task")), "wrong_task"),
        (lambda: update(2, tiny_policy(), sha256="0" * 64), "sha256_mismatch"),
        (lambda: nestor_pb2.ModelUpdate(version=2, task="other", sha256="", onnx=b""), "wrong_task"),
    ],
)
def test_every_failed_check_keeps_the_old_model(tmp_path, make, reason):
    seen = Recorder()
    sync = make_sync(tmp_path, seen)
    sync.handle_update(update(1, tiny_policy()))
    assert sync.handle_update(make()) is None
    assert seen.versions == [1] and sync.current_version() == 1
    assert sync.stats()["rejected_by_reason"] == {reason: 1}
    assert sorted(os.listdir(tmp_path)) == [f"{TASK}-v1.json", f"{TASK}-v1.onnx"]


def test_manifest_must_agree_with_the_update(tmp_path):
    sync = make_sync(tmp_path, Recorder())
    bad = update(2, tiny_policy())
    bad.manifest = json.dumps({"version": 2, "sha256": "f" * 64}).encode()
    assert sync.handle_update(bad) is None
    assert sync.stats()["rejected_by_reason"] == {"manifest_mismatch": 1}


def test_load_local_adopts_the_newest_verified_model(tmp_path):
    sync = make_sync(tmp_path, Recorder())
    sync.handle_update(update(1, tiny_policy(0.1)))
    sync.handle_update(update(2, tiny_policy(0.2), parent=1))
    (tmp_path / f"{TASK}-v5.onnx").write_bytes(tiny_policy(0.5))  # no sidecar: an interrupted write
    seen = Recorder()
    assert make_sync(tmp_path, seen).load_local()["version"] == 2
    assert seen.versions == [2] and seen.models[0]["parent"] == 1
    # A damaged newest file is skipped, never used.
    path = tmp_path / f"{TASK}-v2.onnx"
    path.write_bytes(path.read_bytes()[:-3] + b"xyz")
    seen = Recorder()
    restarted = make_sync(tmp_path, seen)
    assert restarted.load_local()["version"] == 1
    assert restarted.current_version() == 1


# ------------------------------------------------------------------ real gRPC


class ModelsServicer(nestor_pb2_grpc.ModelsServicer):
    """Test double of the cloud's Models service.

    It streams the scripted versions newer than the robot's, then holds the stream open.
    """

    def __init__(self, updates):
        self.updates = list(updates)
        self.requests: list[nestor_pb2.SubscribeRequest] = []
        self.lock = threading.Lock()

    def Subscribe(self, request, context):
        with self.lock:
            self.requests.append(request)
            updates = [u for u in self.updates if u.version > request.current_version]
        yield from updates
        while context.is_active():
            time.sleep(0.02)


def start_models_server(servicer, port: int = 0) -> tuple[grpc.Server, int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    nestor_pb2_grpc.add_ModelsServicer_to_server(servicer, server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    assert bound
    server.start()
    return server, bound


def test_subscribe_over_grpc_resubscribes_with_current_version(tmp_path):
    good1, good3 = tiny_policy(0.1), tiny_policy(0.3)
    servicer = ModelsServicer([update(1, good1), tampered(2, tiny_policy(0.2)), update(3, good3, parent=1)])
    server, port = start_models_server(servicer)
    seen = Recorder()
    sync = make_sync(tmp_path, seen, target=f"127.0.0.1:{port}", stream_deadline_s=0.5)
    stop = threading.Event()
    thread = threading.Thread(target=sync.run, args=(stop,), daemon=True)
    thread.start()
    try:
        assert wait_for(lambda: seen.versions == [1, 3])
        server.stop(0)
        server, _ = start_models_server(servicer, port)
        # The deadline expires / the server restarts: the robot re-subscribes at version 3.
        assert wait_for(lambda: len(servicer.requests) >= 3)
        assert servicer.requests[0].current_version == 0
        assert servicer.requests[-1].current_version == 3
        assert servicer.requests[-1].robot_id == "robot_w" and servicer.requests[-1].task == TASK
    finally:
        stop.set()
        thread.join(5)
        server.stop(0)
    assert not thread.is_alive()
    assert seen.versions == [1, 3]  # v2 (tampered) was never announced, nor v3 again
    assert (tmp_path / f"{TASK}-v3.onnx").read_bytes() == good3
    stats = sync.stats()
    assert stats["rejected_by_reason"]["sha256_mismatch"] >= 1 and stats["accepted"] == 2


# ------------------------------------------------------------------ the node, over DDS


def _domain_id() -> int:
    return 1 + (os.getpid() * 7 + random.randrange(1000)) % 100


@pytest.mark.slow
def test_weight_sync_node_announces_verified_model_on_dds(tmp_path, monkeypatch):
    import rclpy

    domain = _domain_id()
    monkeypatch.setenv("ROS_DOMAIN_ID", str(domain))
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    data = tiny_policy(0.4)
    servicer = ModelsServicer([tampered(6, tiny_policy(0.6)), update(7, data, parent=6)])
    server, port = start_models_server(servicer)
    model_dir = tmp_path / "models"
    proc = start_node(
        "weight_sync_node",
        robot_id="robot_dds",
        task=TASK,
        cloud_address=f"127.0.0.1:{port}",
        model_dir=model_dir,
        backoff_min_s=0.05,
    )
    context = rclpy.Context()
    received: list[dict] = []
    try:
        # Subscribe only after the node announced: transient-local durability must deliver it.
        assert wait_for(lambda: (model_dir / f"{TASK}-v7.json").exists(), timeout=30), "model never stored"
        node, executor = model_update_probe(context, domain, received)
        spin_until(executor, lambda: bool(received), proc)
        node.destroy_node()
        executor.shutdown()
    finally:
        output = stop_node(proc, context)
        server.stop(0)
    assert received, f"no MODEL_UPDATE on DDS; node output:\n{output}"
    assert received == [
        {
            "version": 7,
            "parent": 6,
            "task": TASK,
            "sha256": hashlib.sha256(data).hexdigest(),
            "path": str(model_dir / f"{TASK}-v7.onnx"),
        }
    ]
    assert not (model_dir / f"{TASK}-v6.onnx").exists()
    assert "sha256_mismatch" in output
    assert proc.returncode == 0, output


def test_store_writes_model_then_sidecar_privately_and_leaves_no_temp(tmp_path):
    from nestor_robot.model_store import local_models, store_model

    path = str(tmp_path / f"{TASK}-v4.onnx")
    store_model(path, b"model", json.dumps({"sha256": "ab" * 32, "parent": 3}).encode())
    assert (tmp_path / f"{TASK}-v4.onnx").read_bytes() == b"model"
    assert sorted(os.listdir(tmp_path)) == [f"{TASK}-v4.json", f"{TASK}-v4.onnx"]  # no temporary file left
    assert all(os.stat(tmp_path / name).st_mode & 0o777 == 0o600 for name in os.listdir(tmp_path))
    assert local_models(str(tmp_path), TASK) == [
        {"version": 4, "path": path, "sha256": "ab" * 32, "task": TASK, "parent": 3}
    ]


def test_the_gate_session_is_unoptimized_and_still_runs_every_check():
    from nestor_core.policy_model import ModelRejected, load_model

    data = tiny_policy()
    gate, policy = load_model(data, optimize=False), load_model(data)
    assert (gate.obs_dim, gate.act_dim, gate.sha256) == (policy.obs_dim, policy.act_dim, policy.sha256)
    for bad, reason in ((b"not an onnx model", "onnx_invalid"), (tiny_policy(float("nan")), "non_finite_output")):
        with pytest.raises(ModelRejected) as err:
            load_model(bad, optimize=False)
        assert err.value.reason == reason
