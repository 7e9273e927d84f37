"""TrackingEnv: the Gymnasium contract, the fixed obs layout and the shift schedule."""

import dataclasses

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from nestor_sim.task import EpisodeVariation, load_task
from nestor_sim.tracking_env import TrackingEnv


@pytest.fixture(params=["kuka", "crane", "xarm"])
def env(request, kuka_yaml, crane_yaml, xarm_yaml):
    env = TrackingEnv({"kuka": kuka_yaml, "crane": crane_yaml, "xarm": xarm_yaml}[request.param])
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
    q_ref, qd_ref = spec.reference_at(env.reference_offset_s)  # The episode's reference at t = 0.
    np.testing.assert_array_equal(np.concatenate(env.reference()), np.concatenate([q_ref, qd_ref]))
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


def trace(env, seed, shifts=(), ticks=40):
    """Observations and costs of one episode under a fixed effort sequence."""
    obs, _ = env.reset(seed=seed, options={"shifts": list(shifts)})
    rows, limit = [obs], env.effort_limit
    for k in range(ticks):
        obs, reward, *_ = env.step(0.2 * limit * np.cos(k / 5.0 + np.arange(len(limit))))
        rows.append(np.append(obs, reward))
    return np.concatenate(rows)


def test_seeds_vary_the_episode_and_repeat_exactly(env):
    spec = env.task
    first = trace(env, 11)
    offset, perturbation = env.reference_offset_s, env.initial_perturbation.copy()
    other = trace(env, 12)
    assert env.reference_offset_s != offset
    assert np.abs(first - other).max() > 1e-3  # Two seeds: two episodes.
    trace(env, 11, shifts=[f"payload:2.0@0.1{'#pole' if spec.passive_joints else ''}", "damping:2@0.2"])
    np.testing.assert_array_equal(trace(env, 11), first)  # Same seed, same episode, bit for bit.
    assert env.reference_offset_s == offset
    # The draws are within the task's ranges, and the start follows the moved reference.
    variation = spec.episode_variation
    assert 0.0 <= offset < variation.reference_offset_s
    assert np.all(np.abs(perturbation) <= variation.initial_pose_rad) and np.any(perturbation != 0)
    obs, _ = env.reset(seed=11, options={"shifts": []})
    n = spec.n_controlled
    shift = spec.reference_at(offset)[0] - spec.reference_at(0.0)[0]
    initial = np.array([spec.initial_positions.get(j, 0.0) for j in spec.controlled_joints])
    np.testing.assert_allclose(obs[:n], initial + shift + perturbation, atol=1e-6)
    passive = [spec.initial_positions.get(j, 0.0) for j in spec.passive_joints]
    np.testing.assert_allclose(obs[4 * n : 4 * n + len(passive)], passive, atol=1e-6)  # Unchanged.


def test_episode_variation_can_be_switched_off(crane_yaml):
    spec = dataclasses.replace(load_task(crane_yaml), episode_variation=EpisodeVariation(0.0, 0.0))
    env = TrackingEnv(spec)
    a, b = trace(env, 1), trace(env, 2)
    env.close()
    np.testing.assert_array_equal(a, b)


def test_bad_episode_variation_names_field(tmp_path, crane_yaml):
    path = tmp_path / "crane.yaml"
    path.write_text(crane_yaml.read_text() + "episode_variation: {initial_pose_rad: -1}\n")
    with pytest.raises(ValueError, match=r"^crane.yaml: episode_variation.initial_pose_rad: must be >= 0"):
        load_task(path)


def pd_costs(spec, shifts, ticks, seed=0):
    """Per-tick cost under the task's PD prior alone (no gravity compensation, zero residual)."""
    env = TrackingEnv(spec)
    kp, kd, n = np.array(spec.kp), np.array(spec.kd), spec.n_controlled
    obs, _ = env.reset(seed=seed, options={"shifts": shifts})
    costs, speed = [], []
    for _ in range(ticks):
        q, qd, q_ref, qd_ref = (obs[i * n : (i + 1) * n] for i in range(4))
        obs, _, terminated, _, info = env.step(kp * (q_ref - q) + kd * (qd_ref - qd))
        assert not terminated
        costs.append(info["cost"])
        speed.append(np.abs(obs[n : 2 * n]).max())
    env.close()
    return np.array(costs), np.array(speed)


def test_xarm6_pd_prior_is_stable_and_payload_hurts(xarm_yaml):
    """10 s of PD alone: finite, no joint flying off, a visible gravity error; 2 kg costs more."""
    spec = load_task(xarm_yaml)
    nominal, speed = pd_costs(spec, [], 1000)
    # rad/s: below the xArm's joint speed limit (3.14, the URDF's); an unstable joint hits 100.
    assert np.isfinite(nominal).all() and speed.max() < 3.14
    assert 1e-3 < nominal[100:].mean() < 0.1
    loaded, speed = pd_costs(spec, ["payload:2.0@4"], 1000)
    assert np.isfinite(loaded).all() and speed.max() < 3.14
    np.testing.assert_array_equal(loaded[:399], nominal[:399])  # Same seed, same episode.
    assert loaded[500:].mean() > 1.5 * nominal[500:].mean()
