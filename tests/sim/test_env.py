"""TrackingEnv: the Gymnasium contract, the fixed obs layout and the shift schedule."""

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from nestor_sim.task import load_task
from nestor_sim.tracking_env import TrackingEnv


@pytest.fixture(params=["kuka", "crane"])
def env(request, kuka_yaml, crane_yaml):
    env = TrackingEnv(kuka_yaml if request.param == "kuka" else crane_yaml)
    yield env
    env.close()


def test_check_env(env):
    check_env(env, skip_render_check=True)


def test_obs_layout(env):
    spec = env.task
    n, m = spec.n_controlled, len(spec.passive_joints)
    obs, info = env.reset(seed=1)
    assert obs.dtype == np.float32 and obs.shape == (4 * n + 2 * m,)
    names, pos, vel, _ = env.joint_state()
    q_ref, qd_ref = spec.reference_at(0.0)
    np.testing.assert_allclose(obs[:n], pos[:n], atol=1e-6)
    np.testing.assert_allclose(obs[n : 2 * n], vel[:n], atol=1e-6)
    np.testing.assert_allclose(obs[2 * n : 3 * n], q_ref, atol=1e-6)
    np.testing.assert_allclose(obs[3 * n : 4 * n], qd_ref, atol=1e-6)
    np.testing.assert_allclose(obs[4 * n : 4 * n + m], pos[n:], atol=1e-6)
    assert names == list(spec.controlled_joints) + list(spec.passive_joints)
    assert set(info) >= {"cost", "t", "tick", "shifts_active"}


def test_step_time_cost_and_truncation(crane_yaml):
    env = TrackingEnv(crane_yaml)
    env.reset(options={"shifts": []})
    obs, reward, terminated, truncated, info = env.step(np.array([1e6]))
    assert env.joint_state()[3][0] == env.task.effort_limit[0]  # Clipped.
    assert info["tick"] == 1 and info["t"] == pytest.approx(0.01)
    assert reward == pytest.approx(-info["cost"]) and info["cost"] > 0
    assert not terminated and not truncated
    for _ in range(env.task.episode_ticks - 1):
        *_, truncated, _ = env.step(np.zeros(1))
    assert truncated
    with pytest.raises(ValueError, match="expected 1 values, got 2"):
        env.apply_effort([0.0, 0.0])
    env.close()
    env.close()  # Safe twice.


def test_shift_fires_mid_episode_and_reset_reverts(crane_yaml):
    env = TrackingEnv(crane_yaml)
    _, info = env.reset(options={"shifts": ["payload:2.0@0.05#pole"]})
    assert info["shifts_active"] == []
    fired = []
    for _ in range(10):
        *_, info = env.step(np.zeros(1))
        fired += info["shift_events"]
    assert [(e["type"], e["tick"]) for e in fired] == [("payload", 5)]
    assert info["shifts_active"] == [{"type": "payload", "magnitude": 2.0, "at_s": 0.05, "link": "pole"}]
    pole = env.plant.link_index["pole"]
    assert env.plant.client.getDynamicsInfo(env.body, pole)[0] == pytest.approx(2.1)
    env.reset()
    assert env.plant.client.getDynamicsInfo(env.body, pole)[0] == pytest.approx(0.1)
    env.close()


def test_deterministic_rollout(crane_yaml):
    def rollout():
        env = TrackingEnv(crane_yaml)
        env.reset(seed=3)
        out = [env.step(np.array([np.sin(k / 10.0) * 5.0]))[0] for k in range(50)]
        env.close()
        return np.array(out)

    np.testing.assert_array_equal(rollout(), rollout())


def test_kuka_pd_prior_tracks_with_gravity_error_and_payload_hurts(kuka_yaml):
    """The numbers the policy is designed around: PD alone is stable; a payload costs >30 %."""
    spec = load_task(kuka_yaml)
    env = TrackingEnv(spec)
    kp, kd, n = np.array(spec.kp), np.array(spec.kd), spec.n_controlled
    obs, _ = env.reset(options={"shifts": ["payload:4.0@4"]})
    costs = []
    for _ in range(800):
        q, qd, q_ref, qd_ref = (obs[i * n : (i + 1) * n] for i in range(4))
        obs, _, terminated, _, info = env.step(kp * (q_ref - q) + kd * (qd_ref - qd))
        assert not terminated
        costs.append(info["cost"])
    env.close()
    pre, post = np.mean(costs[100:400]), np.mean(costs[500:800])
    assert np.isfinite(costs).all() and pre < 0.2
    assert post > 1.3 * pre
