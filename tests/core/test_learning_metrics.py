"""Learning metrics on synthetic cost traces with known answers."""

import numpy as np
import pytest
from nestor_core import learning_metrics as lm


def trace(pre=1.0, spike=10.0, settle=1.0, shift=400, recover_at=100, n=1200):
    cost = np.full(n, pre)
    t = np.arange(n - shift)
    decay = np.where(t < recover_at, spike + (settle - spike) * t / recover_at, settle)
    cost[shift:] = decay
    return cost


def test_recovery_counts_ticks_until_back_in_band():
    ticks = lm.recovery_ticks(trace(recover_at=100), 400)
    # The raw cost is back in the band at ~99 ticks; the 20-tick trailing average lags ~10-15.
    assert 100 <= ticks <= 120


def test_no_recovery_when_the_cost_settles_higher():
    assert lm.recovery_ticks(trace(settle=1.5), 400) is None


def test_a_shift_that_is_never_felt_recovers_at_zero():
    assert lm.recovery_ticks(np.ones(1000), 400) == 0


def test_a_brief_dip_is_not_recovery():
    cost = trace(settle=2.0)
    cost[600:620] = 0.5  # 20 ticks inside the band, then out again
    assert lm.recovery_ticks(cost, 400) is None


def test_pre_shift_cost_needs_history():
    with pytest.raises(ValueError, match="no ticks before the shift"):
        lm.pre_shift_cost(np.ones(10), 0)


def test_forgetting_is_relative_increase():
    assert lm.forgetting(2.0, 2.5) == pytest.approx(0.25)
    assert lm.forgetting(2.0, 1.0) == pytest.approx(-0.5)


def test_moving_average_is_trailing():
    np.testing.assert_allclose(lm.moving_average(np.array([1.0, 3.0, 5.0]), 2), [1.0, 2.0, 4.0])
