"""The window policy (issue 10).

Torch mirror == ONNX, checkpoint round trip, safety, the fit itself, the robot runtime's window and
swap, and the closed loop on the arm.
"""

import pathlib

import numpy as np
import pytest
import torch
from cloud_brain.learning.evaluation import rollout
from cloud_brain.learning.window_export import export_window_onnx, import_window_onnx
from cloud_brain.learning.window_model import initial_model
from cloud_brain.learning.window_policy import WindowPolicy, WindowSpec, ridge_fit
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from learning_testlib import onnx_beside_torch, perturbed_net
from nestor_core import learning_metrics, policy_io
from nestor_core.policy_model import load_model
from nestor_core.policy_runtime import PolicyRuntime, RuntimeConfig
from nestor_sim.tracking_env import TrackingEnv

REPO = pathlib.Path(__file__).resolve().parents[2]
KUKA = str(REPO / "config" / "tasks" / "kuka_track.yaml")
SPEC = WindowSpec(
    task="t", controlled_joints=tuple("abc"), passive_joints=("p",), effort_limit=(20.0, 15.0, 10.0), hidden=16
)
K = 6


def perturbed(seed: int = 1) -> WindowPolicy:
    return perturbed_net(WindowPolicy, SPEC, seed)


def feeds(rng, scale=1.0):
    n, d = SPEC.act_dim, SPEC.obs_dim
    return {
        "obs": (scale * rng.normal(size=(1, d))).astype(np.float32),
        "prev_obs": (scale * rng.normal(size=(1, d))).astype(np.float32),
        "prev_action": (5 * rng.normal(size=(1, n))).astype(np.float32),
        "window_dist": (3 * rng.normal(size=(K, n))).astype(np.float32),
        "window_action": (5 * rng.normal(size=(K, n))).astype(np.float32),
        "window_age": np.arange(K, -1, -1, dtype=np.float32).reshape(-1, 1),
        "l0_scale": np.ones(1, np.float32),
    }


def test_window_onnx_matches_torch_forward():
    net = perturbed()
    model = load_model(export_window_onnx(net))
    assert model.l0_kind == policy_io.WINDOW
    for name, g, w in onnx_beside_torch(net, model, feeds, policy_io.WINDOW_INPUTS, policy_io.WINDOW_OUTPUTS):
        # float32 differences of large efforts: tolerance relative to the output's magnitude
        scale = max(1.0, float(np.abs(w).max()))
        np.testing.assert_allclose(g, w, rtol=1e-3, atol=1e-4 * scale, err_msg=name)


def test_window_onnx_is_the_checkpoint():
    data = export_window_onnx(perturbed(3))
    assert export_window_onnx(import_window_onnx(data)) == data


def test_ridge_fit_recovers_a_bias_and_a_gain_exactly_and_respects_the_prior():
    u = torch.linspace(-0.5, 0.5, 16).reshape(1, -1, 1).repeat(1, 1, 2)
    d = 0.1 - 0.4 * u  # bias 0.1, actuator gain 0.6 (g = -0.4)
    age = torch.arange(15, -1, -1, dtype=torch.float32).reshape(1, -1, 1)
    prior = torch.zeros(1, 2, 2)
    c, g = ridge_fit(d, u, age, prior, torch.full((1, 2), -0.01), torch.full((1, 2), -0.01), 1e-6, 1e-6)
    np.testing.assert_allclose(c.numpy(), 0.1, atol=1e-4)
    np.testing.assert_allclose(g.numpy(), -0.4, atol=1e-3)
    # With every slot empty (age 1e4: weight 0), the fit is the prior.
    prior = torch.tensor([[[0.05, 0.2], [-0.05, -0.1]]])
    c, g = ridge_fit(
        d, u, torch.full_like(age, 1e4), prior, torch.full((1, 2), -0.01), torch.full((1, 2), -0.01), 1.0, 1.0
    )
    np.testing.assert_allclose(torch.stack([c[0], g[0]], 1).numpy(), prior[0].numpy(), atol=1e-6)


SPECIAL = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.sampled_from([np.nan, np.inf, -np.inf, 3e38, -3e38, 0.0]),
)
_SAFE = load_model(export_window_onnx(perturbed(5)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    obs=arrays(np.float32, (1, SPEC.obs_dim), elements=SPECIAL),
    prev=arrays(np.float32, (1, SPEC.obs_dim), elements=SPECIAL),
    act=arrays(np.float32, (1, SPEC.act_dim), elements=SPECIAL),
    wd=arrays(np.float32, (K, SPEC.act_dim), elements=SPECIAL),
    wa=arrays(np.float32, (K, SPEC.act_dim), elements=SPECIAL),
    age=arrays(np.float32, (K + 1, 1), elements=SPECIAL),
    scale=arrays(np.float32, (1,), elements=SPECIAL),
)
def test_window_graph_is_numerically_safe_for_any_input(obs, prev, act, wd, wa, age, scale):
    """The fast level stays finite and the command within its limits under adversarial input."""
    names = policy_io.WINDOW_INPUTS
    outputs = _SAFE.session.run(None, dict(zip(names, (obs, prev, act, wd, wa, age, scale), strict=True)))
    for name, value in zip(policy_io.WINDOW_OUTPUTS, outputs, strict=True):
        assert np.all(np.isfinite(value)), name
    assert np.all(np.abs(outputs[0][0]) <= np.asarray(SPEC.effort_limit) + 1e-4)


def test_l0_scale_zero_turns_the_compensation_off():
    model = load_model(export_window_onnx(perturbed()))
    f = feeds(np.random.default_rng(4))
    f["l0_scale"][:] = 0.0
    action, fast_read, *_ = model.session.run(None, f)
    ff = model.session.run(["feedforward"], f)[0]
    np.testing.assert_allclose(fast_read, 0.0, atol=1e-6)
    np.testing.assert_allclose(action, np.clip(ff, -np.asarray(SPEC.effort_limit), SPEC.effort_limit), atol=1e-5)


@pytest.fixture(scope="module")
def kuka():
    env = TrackingEnv(KUKA)
    model = load_model(initial_model(KUKA, 0)[0], version=1)
    yield env, model
    env.close()


def test_runtime_fills_the_window_in_order_and_a_swap_re_measures_it(kuka):
    env, model = kuka
    runtime = PolicyRuntime(model, RuntimeConfig(horizon=8))
    obs, _ = env.reset(seed=0, options={"shifts": []})
    for _ in range(5):
        out = runtime.step(obs)
        obs, *_ = env.step(out.action)
    w = runtime.window
    assert w.filled == 4
    np.testing.assert_array_equal(w.age[3:7, 0], [4, 3, 2, 1])
    assert np.all(w.age[:3, 0] == policy_io.EMPTY_AGE)
    before = w.dist.copy()
    runtime.swap(model)  # the same model: re-measuring reproduces every buffered disturbance
    np.testing.assert_allclose(w.dist, before, atol=1e-5)


def test_the_fast_level_cancels_a_torque_bias_step_on_the_arm(kuka):
    env, model = kuka
    runs = {}
    for name, config in (("frozen", RuntimeConfig(l0_step_scale=0.0)), ("window", RuntimeConfig())):
        shifted = rollout(model, env, ["torque_bias:10@2"], 0, 700, config)
        control = rollout(model, env, [], 0, 700, config)
        runs[name] = learning_metrics.late_ratio(shifted.cost, control.cost, shifted.shift_tick, (200, 500))
    assert runs["window"] < 1.2 < runs["frozen"]


def test_the_gate_checks_the_gain_change_a_robot_reported_through_l1():
    from cloud_brain.learning.window_consolidation import lived_scenarios
    from nestor_core.experience import ExperienceBatch

    def batch(robot, g):
        state = np.zeros((3, 2), np.float32)
        state[:, 1] = g
        return ExperienceBatch(
            robot_id=robot,
            task="t",
            first_seq=1,
            stamp=np.zeros(1),
            obs=np.zeros((1, 14), np.float32),
            action=np.zeros((1, 3), np.float32),
            fast_read=np.zeros((1, 3), np.float32),
            slow_read=np.zeros((1, 3), np.float32),
            cost=np.zeros(1, np.float32),
            surprise=np.zeros(1, np.float32),
            model_versions=np.ones(1, np.int64),
            l1_state=state,
        )

    got = lived_scenarios([batch("a", 0.0), batch("b", -0.3), batch("b", -0.52), batch("c", 0.02)], 3, 4.0)
    assert got == {"actuator_gain:0.5 (lived)": ["actuator_gain:0.5@4"]}


def test_the_window_is_used_horizon_2_recovers_measurably_worse(kuka):
    """Cut to one buffered transition, the fast level cannot see the effort vary and fits no gain.

    So a payload is cancelled much later (issue 10's window test; measured 2.0 vs 202 at 0.5-1 s).
    """
    env, model = kuka
    result = {}
    for name, config in (("default", RuntimeConfig()), ("horizon2", RuntimeConfig(horizon=2))):
        shifted = rollout(model, env, ["payload:4@2"], 0, 500, config)
        control = rollout(model, env, [], 0, 500, config)
        result[name] = learning_metrics.window_ratios(shifted.cost, control.cost, shifted.shift_tick, 100.0)
    assert result["default"]["0.5-1s"] < 0.2 * result["horizon2"]["0.5-1s"], result
    assert result["default"]["1-2s"] < result["horizon2"]["1-2s"], result
