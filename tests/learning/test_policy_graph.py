"""The policy graph: torch mirror == ONNX export, checkpoint round trip, verification, safety."""

import dataclasses

import numpy as np
import onnx
import pytest
import torch
from cloud_brain.learning.policy_export import export_onnx, import_onnx, initial_net
from cloud_brain.learning.policy_net import NestedPolicy, NetSpec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from learning_testlib import onnx_beside_torch, perturbed_net
from nestor_core import policy_io
from nestor_core.policy_model import ModelRejected, load_model, sha256_hex

SPEC = NetSpec(
    task="t",
    controlled_joints=tuple("abc"),
    passive_joints=("p",),
    kp=(50.0, 40.0, 30.0),
    kd=(5.0, 4.0, 3.0),
    effort_limit=(20.0, 15.0, 10.0),
    obs_scale=(1.0,) * 14,
    hidden=16,
    key_features=8,
)


def perturbed(seed: int = 1) -> NestedPolicy:
    return perturbed_net(NestedPolicy, SPEC, seed)


def feeds(rng, net=SPEC, scale=1.0):
    return {
        "obs": (scale * rng.normal(size=(1, net.obs_dim))).astype(np.float32),
        "prev_obs": (scale * rng.normal(size=(1, net.obs_dim))).astype(np.float32),
        "fast_state": rng.normal(size=(net.act_dim, net.key_dim)).astype(np.float32),
        "l1_state": rng.normal(size=(net.act_dim, net.key_dim)).astype(np.float32),
        "l0_scale": np.ones(1, np.float32),
    }


def test_onnx_export_matches_torch_forward():
    net = perturbed()
    model = load_model(export_onnx(net))
    for name, g, w in onnx_beside_torch(net, model, feeds, policy_io.INPUTS, policy_io.OUTPUTS):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4, err_msg=name)


def test_onnx_is_the_checkpoint_round_trip():
    net = perturbed(3)
    data = export_onnx(net)
    assert export_onnx(import_onnx(data)) == data
    again = import_onnx(data)
    f = feeds(np.random.default_rng(1))
    a = load_model(data).session.run(["action"], f)[0]
    b = load_model(export_onnx(again)).session.run(["action"], f)[0]
    np.testing.assert_array_equal(a, b)


def test_initial_model_is_the_pd_prior(kuka_task_file):
    net = initial_net(kuka_task_file)
    model = load_model(export_onnx(net))
    rng = np.random.default_rng(2)
    f = feeds(rng, net.spec, scale=0.1)
    f["fast_state"][:] = 0.0
    f["l1_state"][:] = 0.0
    f["l0_scale"][:] = 0.0
    action = model.session.run(["action"], f)[0][0]
    n = net.spec.act_dim
    obs = f["obs"][0]
    prior = np.asarray(net.spec.kp) * (obs[2 * n : 3 * n] - obs[:n]) + np.asarray(net.spec.kd) * (
        obs[3 * n : 4 * n] - obs[n : 2 * n]
    )
    np.testing.assert_allclose(
        action, np.clip(prior, -np.asarray(net.spec.effort_limit), net.spec.effort_limit), rtol=1e-4, atol=1e-3
    )


def test_load_model_refuses_bad_models():
    data = export_onnx(perturbed())
    with pytest.raises(ModelRejected, match="sha256_mismatch"):
        load_model(data, expected_sha256="0" * 64)
    with pytest.raises(ModelRejected, match="onnx_invalid"):
        load_model(b"not an onnx model")
    proto = onnx.load_from_string(data)
    del proto.graph.output[-1]
    with pytest.raises(ModelRejected, match="bad_signature"):
        load_model(proto.SerializeToString())
    proto = onnx.load_from_string(data)
    keep = [p for p in proto.metadata_props if p.key != "nestor.act_dim"]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    with pytest.raises(ModelRejected, match="bad_metadata"):
        load_model(proto.SerializeToString())
    assert load_model(data, expected_sha256=sha256_hex(data)).sha256 == sha256_hex(data)


def test_load_model_refuses_non_finite_outputs():
    net = perturbed()
    with torch.no_grad():
        net.mlp[-1].bias.fill_(float("nan"))
        net.u_max.fill_(float("inf"))
    with pytest.raises(ModelRejected, match="non_finite_output"):
        load_model(export_onnx(net))


SPECIAL = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.sampled_from([np.nan, np.inf, -np.inf, 3e38, -3e38, 0.0]),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    obs=arrays(np.float32, (1, SPEC.obs_dim), elements=SPECIAL),
    prev=arrays(np.float32, (1, SPEC.obs_dim), elements=SPECIAL),
    fast=arrays(np.float32, (SPEC.act_dim, SPEC.key_dim), elements=SPECIAL),
    l1=arrays(np.float32, (SPEC.act_dim, SPEC.key_dim), elements=SPECIAL),
    scale=arrays(np.float32, (1,), elements=SPECIAL),
)
def test_l0_update_is_numerically_safe_for_any_input(obs, prev, fast, l1, scale):
    """Issue 3: normalised keys, clipped updates, no NaN or inf under any input."""
    session = _SAFE_MODEL.session
    outputs = session.run(None, {"obs": obs, "prev_obs": prev, "fast_state": fast, "l1_state": l1, "l0_scale": scale})
    for name, value in zip(policy_io.OUTPUTS, outputs, strict=True):
        assert np.all(np.isfinite(value)), name
    key = outputs[policy_io.OUTPUTS.index("key")]
    assert abs(float(np.linalg.norm(key)) - 1.0) < 1e-3
    limits = np.asarray(SPEC.effort_limit, np.float32)
    assert np.all(np.abs(outputs[0][0]) <= limits + 1e-4)


_SAFE_MODEL = load_model(export_onnx(perturbed(5)))


def test_l0_scale_zero_freezes_the_fast_memory():
    model = load_model(export_onnx(perturbed()))
    f = feeds(np.random.default_rng(4))
    f["fast_state"] = np.clip(f["fast_state"], -1, 1)
    f["l0_scale"][:] = 0.0
    fast_out = model.session.run(["fast_state_out"], f)[0]
    np.testing.assert_array_equal(fast_out, f["fast_state"])
    f["l0_scale"][:] = 1.0
    assert not np.array_equal(model.session.run(["fast_state_out"], f)[0], f["fast_state"])


def test_spec_dims():
    spec = dataclasses.replace(SPEC, key_features=4)
    assert (spec.obs_dim, spec.act_dim, spec.key_dim) == (14, 3, 5)
