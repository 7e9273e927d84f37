"""The yardsticks themselves (issue 9): they must fail when they are wrong.

A do-nothing shift must score as no shift at all on the paired metrics, while a real one must not;
the classic RLS baseline must recover within the bound its forgetting factor implies.
"""

import pathlib

import numpy as np
import pytest
from cloud_brain.learning.evaluation import rollout
from cloud_brain.learning.policy_export import initial_model
from nestor_core import learning_metrics
from nestor_core.policy_model import load_model
from nestor_core.policy_runtime import RuntimeConfig
from nestor_core.rls import RlsAdapter, RlsEstimator, recovery_bound_ticks
from nestor_sim.tracking_env import TrackingEnv

REPO = pathlib.Path(__file__).resolve().parents[2]
KUKA = str(REPO / "config" / "tasks" / "kuka_track.yaml")


@pytest.fixture(scope="module")
def kuka():
    env = TrackingEnv(KUKA)
    model = load_model(initial_model(KUKA, 0)[0])
    yield env, model
    env.close()


def _paired(env, model, shift: str, seed: int = 3, ticks: int = 900, adapter=None, runtime=None):
    shifted = rollout(model, env, [shift], seed, ticks, runtime, adapter=adapter)
    control = rollout(model, env, [], seed, ticks, runtime, adapter=adapter)
    return shifted, control


def test_a_do_nothing_shift_scores_no_recovery_and_unit_ratios(kuka):
    env, model = kuka
    shifted, control = _paired(env, model, "torque_bias:0@2")
    s = shifted.shift_tick
    assert s == 200
    assert learning_metrics.recovery_ticks_paired(shifted.cost, control.cost, s) == 0
    ratios = learning_metrics.window_ratios(shifted.cost, control.cost, s, env.task.control_rate_hz)
    for name in ("0-0.5s", "0.5-1s", "1-2s", "2-5s"):
        assert ratios[name] == pytest.approx(1.0, abs=0.02), name
    assert learning_metrics.late_ratio(shifted.cost, control.cost, s) == pytest.approx(1.0, abs=0.02)


def test_a_real_shift_is_seen_by_the_paired_yardsticks(kuka):
    env, model = kuka
    shifted, control = _paired(env, model, "payload:4@2", runtime=RuntimeConfig(l0_step_scale=0.0, l1_step_scale=0))
    s = shifted.shift_tick
    ratios = learning_metrics.window_ratios(shifted.cost, control.cost, s, env.task.control_rate_hz)
    assert ratios["0.5-1s"] > 1.5
    # Frozen, nothing learns: it never comes back to its control.
    assert learning_metrics.recovery_ticks_paired(shifted.cost, control.cost, s) is None
    assert not learning_metrics.blew_up(shifted.cost, control.cost)
    assert learning_metrics.blew_up(np.r_[control.cost, np.nan], control.cost)


def test_recovery_paired_counts_from_the_shift_against_the_control():
    control = np.full(400, 1.0)
    cost = control.copy()
    cost[100:160] = 5.0  # 60 ticks off, then back exactly
    rec = learning_metrics.recovery_ticks_paired(cost, control, 100)
    # the 20-tick mean is back inside the band 20 ticks after the cost is.
    assert rec == 60 + learning_metrics.MA_WINDOW - 1
    assert learning_metrics.recovery_ticks_paired(cost, control, 100, hold=250) is None  # back for < 250 ticks
    cost[160:] = 1.2  # settles 20 % above its control: never recovered
    assert learning_metrics.recovery_ticks_paired(cost, control, 100) is None


@pytest.mark.parametrize("forgetting", [0.8, 0.9, 0.95])
def test_rls_recovers_from_a_torque_bias_step_within_its_forgetting_bound(forgetting):
    """1-DoF plant m qdd = u + b with an exact disturbance measurement (known m), constant basis."""
    m, dt, step_at, bias = 2.0, 0.01, 400, 5.0
    rls = RlsEstimator(1, 1, forgetting)
    q = qd = 0.0
    est_error, prev = [], None
    for t in range(step_at + 200):
        b = bias if t >= step_at else 0.0
        u = -30.0 * q - 8.0 * qd - float(rls.predict(np.ones(1))[0])  # PD + cancel the estimate
        qdd = (u + b) / m
        if prev is not None:
            rls.update(np.ones(1), np.array([m * prev[0] - prev[1]]))  # measured d of the last tick
        prev = (qdd, u)
        qd += qdd * dt
        q += qd * dt
        est_error.append(abs(float(rls.predict(np.ones(1))[0]) - b))
    after = np.array(est_error[step_at:]) / bias
    first_within = int(np.argmax(after <= 0.1))
    bound = recovery_bound_ticks(forgetting)
    assert first_within <= bound
    assert first_within >= bound - 2  # the bound is tight: the derivation, not just a loose cap
    assert np.all(after[first_within:] <= 0.1 + 1e-9)


def test_rls_baseline_cancels_a_torque_bias_on_the_arm():
    """The `rls` method as the benchmark runs it.

    The window model with its fast level off, RLS on [1, q] fed the graph's measured disturbance,
    after a torque-bias step.
    """
    from cloud_brain.learning.window_model import initial_model as window_initial_model

    env = TrackingEnv(KUKA)
    try:
        model = load_model(window_initial_model(KUKA, 0)[0])
        still = RuntimeConfig(l0_step_scale=0.0, l1_step_scale=0.0)
        task = env.task
        plain = rollout(model, env, ["torque_bias:10@2"], 1, 900, still)
        adapted = rollout(model, env, ["torque_bias:10@2"], 1, 900, still, adapter=RlsAdapter(task.effort_limit))
        # measured: 0.59 without, 1.0e-4 with
        assert np.mean(adapted.cost[-400:]) < 0.01 * np.mean(plain.cost[-400:])
    finally:
        env.close()
