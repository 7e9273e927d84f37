"""Test helpers for the security tests: a tiny valid policy, signed updates, TLS channels.

Importable by subprocesses too (conftest puts this directory on sys.path).
"""

import hashlib
import json
import pathlib

import grpc
import numpy as np
import onnx
from nestor_core import nestor_pb2, policy_io
from nestor_core.manifest import build_manifest, sign
from onnx import TensorProto, helper, numpy_helper

TASK = "kuka_track"
OBS, ACT, KEY = 4, 1, 2  # obs_dim = 4 * act_dim + 2 * passive joints (none)
IO = {"inputs": {"obs": [1, OBS]}, "outputs": {"action": [1, ACT]}}


def tiny_policy(gain: float = 0.5, task: str = TASK) -> bytes:
    """A valid 4-in/1-out policy graph with the nestor I/O signature and metadata."""
    f = TensorProto.FLOAT
    inputs = [
        helper.make_tensor_value_info("obs", f, [1, OBS]),
        helper.make_tensor_value_info("prev_obs", f, [1, OBS]),
        helper.make_tensor_value_info("fast_state", f, [ACT, KEY]),
        helper.make_tensor_value_info("l1_state", f, [ACT, KEY]),
        helper.make_tensor_value_info("l0_scale", f, [1]),
    ]
    outputs = [
        helper.make_tensor_value_info("action", f, [1, ACT]),
        helper.make_tensor_value_info("fast_state_out", f, [ACT, KEY]),
        helper.make_tensor_value_info("fast_read", f, [1, ACT]),
        helper.make_tensor_value_info("l1_read", f, [1, ACT]),
        helper.make_tensor_value_info("surprise", f, [1, ACT]),
        helper.make_tensor_value_info("update_dir", f, [ACT, KEY]),
        helper.make_tensor_value_info("key", f, [1, KEY]),
    ]
    weights = [
        numpy_helper.from_array(np.full((OBS, ACT), gain, np.float32), "w"),
        numpy_helper.from_array(np.zeros((OBS, ACT), np.float32), "w0"),
        numpy_helper.from_array(np.zeros((OBS, KEY), np.float32), "wkey"),
    ]
    nodes = [
        helper.make_node("MatMul", ["obs", "w"], ["raw"]),
        helper.make_node("Mul", ["raw", "l0_scale"], ["action"]),
        helper.make_node("Identity", ["fast_state"], ["fast_state_out"]),
        helper.make_node("MatMul", ["prev_obs", "w"], ["fast_read"]),
        helper.make_node("MatMul", ["obs", "w0"], ["l1_read"]),
        helper.make_node("Sub", ["action", "fast_read"], ["surprise"]),
        helper.make_node("Identity", ["l1_state"], ["update_dir"]),
        helper.make_node("MatMul", ["obs", "wkey"], ["key"]),
    ]
    graph = helper.make_graph(nodes, "tiny_policy", inputs, outputs, weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    meta = {
        "nestor.task": task,
        "nestor.obs_dim": str(OBS),
        "nestor.act_dim": str(ACT),
        "nestor.key_dim": str(KEY),
        "nestor.controlled_joints": json.dumps(["j0"]),
        "nestor.passive_joints": json.dumps([]),
        "nestor.control_rate_hz": "100.0",
        "nestor.l1_step": "0.01",
        "nestor.l1_decay": "0.001",
        policy_io.FAST_INIT: json.dumps([[0.0] * KEY] * ACT),
    }
    helper.set_model_props(model, meta)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def signed_update(version: int, onnx_bytes: bytes, key, parent: int = 0, task: str = TASK) -> nestor_pb2.ModelUpdate:
    """A genuine update: manifest over these bytes, signed with `key` (None = unsigned)."""
    digest = hashlib.sha256(onnx_bytes).hexdigest()
    manifest = build_manifest(version, parent, task, digest, IO, {"cost": 1.0}, 1700000000.0)
    return nestor_pb2.ModelUpdate(
        version=version,
        parent=parent,
        task=task,
        sha256=digest,
        onnx=onnx_bytes,
        manifest=manifest,
        signature=sign(manifest, key) if key is not None else b"",
    )


def tampered_bytes(onnx_bytes: bytes) -> bytes:
    """One weight byte flipped: still a loadable model, different sha256."""
    bad = bytearray(onnx_bytes)
    bad[len(bad) // 2] ^= 0x01
    return bytes(bad)


def tampered_update(version: int, onnx_bytes: bytes, key, rewrite_manifest: bool = False) -> nestor_pb2.ModelUpdate:
    """Bytes changed and `sha256` updated to match, but the signature is over the genuine manifest.

    rewrite_manifest=False keeps the genuine manifest (it names the old sha256: manifest_mismatch);
    True rewrites the manifest to the new sha256 too (the signature no longer verifies: bad_signature).
    """
    update = signed_update(version, onnx_bytes, key)
    bad = tampered_bytes(onnx_bytes)
    digest = hashlib.sha256(bad).hexdigest()
    update.onnx = bad
    update.sha256 = digest
    if rewrite_manifest:
        manifest = json.loads(update.manifest)
        manifest["sha256"] = digest
        update.manifest = build_manifest(**{k: manifest[k] for k in (
            "version", "parent", "task", "sha256", "io_signature", "metrics", "created_unix")})
    return update


def pem(pki: pathlib.Path, name: str) -> bytes:
    return (pki / name).read_bytes()


def client_credentials(pki: pathlib.Path, who: str) -> grpc.ChannelCredentials:
    """Mutual-TLS client credentials of `who` (robot0, admin, ...)."""
    return grpc.ssl_channel_credentials(pem(pki, "ca.pem"), pem(pki, f"{who}.key"), pem(pki, f"{who}.pem"))
