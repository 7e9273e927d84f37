"""A tiny valid nestor policy (ONNX) for robot and security tests: 4 obs, 1 action, key size 2.

It has the full nestor I/O signature and metadata, so the robot's checks (onnx.checker, signature,
finite smoke run) pass; the action is `gain * sum(obs)`. Importable from any test folder (the
root conftest puts tests/ on sys.path).
"""

import json

import numpy as np
import onnx
from nestor_core import policy_io
from onnx import TensorProto, helper, numpy_helper

TASK = "kuka_track"
OBS, ACT, KEY = 4, 1, 2  # obs_dim = 4 * act_dim + 2 * passive joints (none)
# The I/O signature the cloud registry records for it.
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
    assert set(meta) == set(policy_io.METADATA_KEYS)
    helper.set_model_props(model, meta)
    onnx.checker.check_model(model)
    return model.SerializeToString()
