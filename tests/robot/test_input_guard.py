"""The sensor guard without DDS: what it refuses, and the command it sends instead."""

import numpy as np
import pytest
from nestor_robot.input_guard import InputGuard, observation_layout


def _guard(hold_ticks=2):
    labels, limits = observation_layout(("j1", "j2"), ("p1",), max_abs_position=10.0, max_abs_velocity=50.0)
    return InputGuard(labels, limits, act_dim=2, hold_ticks=hold_ticks)


def test_layout_matches_the_observation():
    labels, limits = observation_layout(("j1", "j2"), ("p1",), 10.0, 50.0)
    assert len(labels) == len(limits) == 4 * 2 + 2 * 1
    assert labels[1] == "joint_states.position[j2]" and labels[2] == "joint_states.velocity[j1]"
    assert labels[4] == "target.position[j1]" and labels[-1] == "joint_states.velocity[p1]"
    assert limits.tolist() == [10, 10, 50, 50, 10, 10, 50, 50, 10, 50]


@pytest.mark.parametrize(
    ("index", "value", "expected"),
    [
        (1, np.nan, "non_finite: joint_states.position[j2] is nan"),
        (2, np.inf, "non_finite: joint_states.velocity[j1] is inf"),
        (5, -np.inf, "non_finite: target.position[j2] is -inf"),
        (0, 10.5, "out_of_range: joint_states.position[j1] = 10.5, beyond +-10"),
        (9, -60.0, "out_of_range: joint_states.velocity[p1] = -60, beyond +-50"),
    ],
)
def test_bad_entries_are_named(index, value, expected):
    guard = _guard()
    obs = np.zeros(10, np.float32)
    assert guard.check(obs) is None
    obs[index] = value
    assert guard.check(obs) == expected


def test_limits_are_inclusive():
    obs = np.zeros(10, np.float32)
    obs[0], obs[2] = 10.0, -50.0
    assert _guard().check(obs) is None


def test_holds_the_last_good_command_then_zero():
    guard = _guard(hold_ticks=2)
    assert guard.safe_command().tolist() == [0.0, 0.0]  # nothing good yet: zero effort
    guard.good(np.array([3.0, -4.0]))
    assert guard.bad("x").tolist() == [3.0, -4.0]
    assert guard.bad("x").tolist() == [3.0, -4.0]
    assert not guard.holding_zero
    assert guard.bad("y").tolist() == [0.0, 0.0]
    assert guard.holding_zero and guard.streak == 3 and guard.last_reason == "y"
    guard.good(np.array([1.0, 1.0]))
    assert guard.streak == 0 and guard.bad_ticks == 3 and guard.longest_streak == 3
    assert guard.bad("z").tolist() == [1.0, 1.0]


def test_hold_zero_ticks_sends_zero_at_once():
    guard = _guard(hold_ticks=0)
    guard.good(np.array([3.0, -4.0]))
    assert guard.bad("x").tolist() == [0.0, 0.0]
