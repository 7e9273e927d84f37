"""Undoing a shift, or resetting with shifts active, restores the nominal dynamics exactly (==)."""

import itertools

import numpy as np
import pytest
from nestor_sim.shifts import SHIFT_TYPES, apply_shift, parse_shift
from nestor_sim.tracking_env import TrackingEnv

# One shift of every type per task (the crane's payload hangs on the pole).
SHIFTS = {
    "kuka": ["payload:2.0", "damping:3.0", "friction:4.0", "actuator_gain:0.5", "torque_bias:5.0"],
    "crane": ["payload:2.0#pole", "damping:3.0", "friction:4.0", "actuator_gain:0.5", "torque_bias:5.0"],
}


@pytest.fixture(scope="module", params=["kuka", "crane"])
def env(request, kuka_yaml, crane_yaml):
    env = TrackingEnv(kuka_yaml if request.param == "kuka" else crane_yaml)
    env.reset(seed=0, options={"shifts": []})
    env.shift_texts = SHIFTS[request.param]
    yield env
    env.close()


def dynamics(env):
    """Every dynamics property a shift could touch, as the engine and the plant report it."""
    p, body, plant = env.plant.client, env.body, env.plant
    links = range(-1, p.getNumJoints(body))
    return {
        # mass, lateral friction, local inertia diagonal, inertial pos/orn, restitution,
        # rolling/spinning friction, contact damping/stiffness, body type, collision margin.
        "links": [p.getDynamicsInfo(body, link) for link in links],
        "joints": [p.getJointInfo(body, j)[6:8] for j in links if j >= 0],  # damping, friction
        "plant": {k: getattr(plant, k).tolist() for k in ("effort_gain", "torque_bias", "friction", "damping")},
    }


def rollout(env, seed=7, ticks=60):
    """Observation trace of a fixed effort sequence on a no-shift episode."""
    env.reset(seed=seed, options={"shifts": []})
    limit = env.effort_limit
    return np.array([env.step(0.3 * limit * np.sin(k / 7.0 + np.arange(len(limit))))[0] for k in range(ticks)])


def test_every_type_is_covered():
    for texts in SHIFTS.values():
        assert {parse_shift(t).type for t in texts} == set(SHIFT_TYPES)


@pytest.mark.parametrize("kind", sorted(SHIFT_TYPES))
def test_apply_changes_and_undo_restores_each_type(env, kind):
    nominal = dynamics(env)
    text = next(t for t in env.shift_texts if t.startswith(kind))
    undo = apply_shift(env.plant, parse_shift(text))
    assert dynamics(env) != nominal
    undo()
    assert dynamics(env) == nominal
    undo()  # A second call changes nothing.
    assert dynamics(env) == nominal


def test_payload_adds_its_mass_and_keeps_inertia(env):
    shift = parse_shift(env.shift_texts[0])
    link = env.plant.payload_link(shift)
    before = env.plant.client.getDynamicsInfo(env.body, link)
    undo = apply_shift(env.plant, shift)
    after = env.plant.client.getDynamicsInfo(env.body, link)
    undo()
    assert after[0] == before[0] + shift.magnitude
    assert after[2] == before[2]  # A point mass at the link's centre of mass.
    assert after[3:5] == before[3:5]


@pytest.mark.parametrize("order", ["fifo", "lifo", "mixed"])
def test_stacked_shifts_undo_exactly_in_any_order(env, order):
    nominal = dynamics(env)
    payload = env.shift_texts[0]
    texts = [payload, "damping:3.0", payload.replace("2.0", "0.7"), *env.shift_texts[1:], "actuator_gain:0.8"]
    undos = [apply_shift(env.plant, parse_shift(t)) for t in texts]
    assert env.plant.effort_gain[0] == 0.5 * 0.8
    sequence = {"fifo": undos, "lifo": undos[::-1], "mixed": undos[1::2] + undos[::2]}[order]
    for undo in sequence:
        undo()
    assert dynamics(env) == nominal


def test_apply_undo_interleaved_every_permutation_of_types(env):
    nominal = dynamics(env)
    for perm in itertools.islice(itertools.permutations(env.shift_texts), 0, None, 7):
        undos = []
        for i, text in enumerate(perm):
            undos.append(apply_shift(env.plant, parse_shift(text)))
            if i % 2:  # Undo an older shift while newer ones stay active.
                undos.pop(0)()
        for undo in undos:
            undo()
        assert dynamics(env) == nominal, perm


def test_reset_restores_nominal_with_shifts_active(env):
    nominal = dynamics(env)
    for schedule in (env.shift_texts, env.shift_texts[::-1], [env.shift_texts[0], "damping:1", env.shift_texts[0]]):
        env.reset(seed=1, options={"shifts": [f"{t.split('#')[0]}@0.02{t[len(t.split('#')[0]) :]}" for t in schedule]})
        for _ in range(3):
            env.step(np.zeros(env.task.act_dim))
        assert len(env.active_shifts()) == len(schedule)
        env.reset(seed=1, options={"shifts": []})
        assert dynamics(env) == nominal


def test_dynamics_after_shifted_episodes_are_nominal(env):
    """The behavioural check: the same episode, bit for bit, before and after shifted episodes."""
    before = rollout(env)
    for text in env.shift_texts:
        env.reset(seed=3, options={"shifts": [text]})
        for _ in range(20):
            env.step(0.2 * env.effort_limit)
    undo = apply_shift(env.plant, parse_shift(env.shift_texts[0]))
    undo()
    np.testing.assert_array_equal(rollout(env), before)
