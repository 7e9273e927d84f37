"""PolicyRuntime: the robot's tick, L1 chunk updates and the bumpless swap, on real sim states."""

import numpy as np
import pytest
import torch
from cloud_brain.learning.policy_export import export_onnx, initial_net
from nestor_core.policy_model import load_model
from nestor_core.policy_runtime import PolicyRuntime, RuntimeConfig
from nestor_sim.tracking_env import TrackingEnv


@pytest.fixture(scope="module")
def models(kuka_task_file):
    first = load_model(export_onnx(initial_net(kuka_task_file, 0)), version=1)
    net = initial_net(kuka_task_file, 0)
    with torch.no_grad():
        for p in net.mlp.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(9)))
    second = load_model(export_onnx(net), version=2)
    return first, second


@pytest.fixture()
def env(kuka_task_file):
    env = TrackingEnv(kuka_task_file)
    yield env
    env.close()


def run(runtime, env, ticks, obs=None):
    if obs is None:
        obs, _ = env.reset(seed=0, options={"shifts": []})
    for _ in range(ticks):
        out = runtime.step(obs)
        obs, *_ = env.step(out.action)
    return obs


def test_fast_weights_learn_and_frozen_do_not(models, env):
    model = models[0]
    fast = PolicyRuntime(model, RuntimeConfig(l1_step_scale=0.0))
    run(fast, env, 300)
    frozen = PolicyRuntime(model, RuntimeConfig(l0_step_scale=0.0, l1_step_scale=0.0))
    run(frozen, env, 300)
    assert np.abs(fast.fast_state).max() > 1.0
    np.testing.assert_array_equal(frozen.fast_state, model.fast_init)


def test_l1_updates_once_per_chunk(models, env):
    runtime = PolicyRuntime(models[0], RuntimeConfig(l1_period=50))
    run(runtime, env, 49)
    assert runtime.l1.updates == 0 and not runtime.l1.state.any()
    run(runtime, env, 1, obs=runtime.buffer.last_obs())
    assert runtime.l1.updates == 1 and runtime.l1.state.any()


def test_swap_is_bumpless_and_keeps_l1(models, env):
    first, second = models
    runtime = PolicyRuntime(first, RuntimeConfig(l1_period=20))
    run(runtime, env, 200)
    before, _ = runtime._frozen_run(runtime.model, runtime.fast_state)
    l1 = runtime.l1.state.copy()
    runtime.swap(second)
    after, _ = runtime._frozen_run(runtime.model, runtime.fast_state)
    assert runtime.model is second and runtime.swaps == 1
    np.testing.assert_allclose(after, before, atol=1e-3)
    np.testing.assert_array_equal(runtime.l1.state, l1)
    # Without the re-basing the actions would differ: the models' slow weights differ here.
    plain, _ = runtime._frozen_run(second, second.fast_init + 0 * runtime.fast_state)
    assert np.abs(plain - before).max() > 1e-2


def test_swap_before_any_tick_starts_from_fast_init(models):
    first, second = models
    runtime = PolicyRuntime(first)
    runtime.swap(second)
    np.testing.assert_array_equal(runtime.fast_state, second.fast_init)


@pytest.mark.parametrize(
    "field,value", [("horizon", 1), ("l0_step_scale", 1.5), ("l1_period", 0), ("l1_step_scale", -1.0)]
)
def test_runtime_config_errors_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        RuntimeConfig(**{field: value}).validate()
