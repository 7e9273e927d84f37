"""Dynamics shifts: what they are, how to parse them, and how to apply them to a running sim.

A shift is a change of the plant in the middle of an episode (a payload is picked up, a bearing
wears, a motor weakens). The policy is expected to notice it from the tracking error and adapt.

Every shift type is one entry of ``SHIFT_TYPES``: a function ``effect(plant, shift, state)`` that
says how the shift changes the shiftable quantities. ``apply_shift`` (``Plant.apply``) applies a
shift and returns a zero-argument ``undo`` callable that reverts it exactly (see ``Plant``).
Adding a type is adding one function and one table entry; the YAML validation and the CLI parser
read the table.

This module never imports pybullet: it talks to the ``BulletClient`` held by ``Plant``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class ShiftSpec:
    """One scheduled dynamics shift.

    Attributes:
        type: Key of ``SHIFT_TYPES`` (payload, damping, friction, actuator_gain, torque_bias).
        magnitude: Size of the shift, in the unit of its type: kg added (payload), N·m·s/rad
            added (damping), N·m or N of Coulomb friction (friction), effort multiplier
            (actuator_gain, 0.5 = half-strength motor), N·m or N of constant disturbance
            (torque_bias).
        at_s: Simulated time (s since reset) at which the shift is applied; 0 applies it at reset.
        joint: Name of the one joint affected (damping, friction, actuator_gain, torque_bias);
            None affects every controlled joint.
        link: Name of the link that carries the payload (payload only); None means the last link
            of the robot (the end effector).
    """

    type: str
    magnitude: float
    at_s: float = 0.0
    joint: str | None = None
    link: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Returns a JSON-friendly dict (the keys of the YAML ``shifts`` entries)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclasses.dataclass
class Plant:
    """The handles and the effort-path state that shifts act on.

    ``TrackingEnv`` owns one. Shifts that live in the physics engine (mass, damping, friction
    motors) change the engine; shifts that live in the actuator (gain, bias) change the arrays
    below, which the env's effort path reads every physics step.

    Exact undo: the plant keeps its nominal values (taken when it is built) and the list of
    active shifts. Applying or undoing a shift recomputes every shifted quantity from the nominal
    values and the shifts still active, in the order they were applied, and pushes what changed
    to the engine. So once no shift is active every value is the nominal one bit for bit, in
    whatever order the shifts were applied and undone (an inverse such as ``x + m - m`` would
    not round-trip exactly). Arrays are updated in place: callers may hold references to them.

    Attributes:
        client: The env's ``BulletClient``.
        body: PyBullet body id of the robot.
        controlled: Joint indices of the controlled joints, in task order.
        joint_index: Joint name -> joint index, for every joint of the body.
        link_index: Link name -> link index, for every link of the body.
        effort_gain: Per controlled joint, multiplies the commanded effort (1 = nominal).
        torque_bias: Per controlled joint, constant effort added after the gain (0 = nominal).
        friction: Per controlled joint, max force of the zero-velocity motor that emulates
            Coulomb friction (0 = frictionless).
        damping: Per controlled joint, viscous joint damping (N·m·s/rad); starts at the URDF's.
        joint_scale: Per controlled joint, effort_limit / max(effort_limit). A damping,
            friction or torque_bias shift that names no joint is scaled by it, so the magnitude
            is the strongest joint's and a small wrist joint gets its proportional share (equal
            absolute values would swamp, and numerically destabilise, light wrist links).
    """

    client: Any
    body: int
    controlled: list[int]
    joint_index: dict[str, int]
    link_index: dict[str, int]
    effort_gain: np.ndarray
    torque_bias: np.ndarray
    friction: np.ndarray
    damping: np.ndarray
    joint_scale: np.ndarray | None = None

    def __post_init__(self) -> None:
        self._nominal = _Actuation(
            self.effort_gain.copy(), self.torque_bias.copy(), self.friction.copy(), self.damping.copy()
        )
        # (mass, local inertia diagonal) of every link, base (-1) included, as loaded.
        self._nominal_links = {
            link: self.client.getDynamicsInfo(self.body, link)[:3:2]
            for link in range(-1, self.client.getNumJoints(self.body))
        }
        self._active: list[tuple[object, ShiftSpec]] = []
        self._loaded: set[int] = set()  # links whose mass is (or was) changed by a payload
        self.revision = 0  # bumped whenever effort_gain / torque_bias may have changed

    def set_friction_motors(self) -> None:
        """Pushes ``friction`` to the engine as zero-velocity motors (force 0 = motor off)."""
        self.client.setJointMotorControlArray(
            self.body,
            self.controlled,
            self.client.VELOCITY_CONTROL,
            targetVelocities=[0.0] * len(self.controlled),
            forces=self.friction.tolist(),
        )

    def set_damping(self) -> None:
        """Pushes ``damping`` to the engine."""
        for joint, value in zip(self.controlled, self.damping, strict=True):
            self.client.changeDynamics(self.body, joint, jointDamping=float(value))

    def controlled_slots(self, shift: ShiftSpec) -> list[int]:
        """Positions in the controlled-joint arrays that ``shift`` affects."""
        if shift.joint is None:
            return list(range(len(self.controlled)))
        index = self.joint_index[shift.joint]
        if index not in self.controlled:
            raise ValueError(f"shift {shift.type}: joint {shift.joint!r} is not controlled")
        return [self.controlled.index(index)]

    def payload_link(self, shift: ShiftSpec) -> int:
        """Link index that carries a payload shift (default: the last link)."""
        return self.link_index[shift.link] if shift.link else max(self.link_index.values())

    def nominal_link(self, link: int) -> tuple[float, tuple[float, float, float]]:
        """(mass, local inertia diagonal) of ``link`` as loaded, before any shift."""
        return self._nominal_links[link]

    @property
    def active(self) -> list[ShiftSpec]:
        """The shifts in effect, in the order they were applied."""
        return [shift for _, shift in self._active]

    def apply(self, shift: ShiftSpec) -> Undo:
        """Applies ``shift``; returns the callable that reverts it (safe to call twice)."""
        if shift.type not in SHIFT_TYPES:
            raise ValueError(f"shift: unknown type {shift.type!r} (expected one of {', '.join(SHIFT_TYPES)})")
        if shift.type != "payload":
            self.controlled_slots(shift)  # Validates the joint before anything changes.
        token = object()
        self._active.append((token, shift))
        try:
            self._rebuild()
        except Exception:
            self._active.pop()
            self._rebuild()
            raise

        def undo() -> None:
            before = len(self._active)
            self._active = [(t, s) for t, s in self._active if t is not token]
            if len(self._active) != before:
                self._rebuild()

        return undo

    def gravity_torque(self, q: list[float]) -> np.ndarray:
        """Effort that holds the movable joints at ``q`` against gravity (true, shifted masses).

        tau = sum over links of J_com(link)^T * m(link) * (0, 0, g): the ideal gravity
        compensation a perfect model would add. Not calculateInverseDynamics: PyBullet caches
        its inverse-dynamics model on first use and ignores later changeDynamics(mass=...).
        """
        p, body = self.client, self.body
        zeros = [0.0] * len(q)
        tau = np.zeros(len(q))
        for link in range(p.getNumJoints(body)):
            info = p.getDynamicsInfo(body, link)
            mass, com = info[0], info[3]  # com: centre of mass in the link (joint) frame.
            if mass > 0.0:
                jac_lin, _ = p.calculateJacobian(body, link, com, q, zeros, zeros)
                tau += mass * 9.81 * np.asarray(jac_lin)[2]
        return tau

    def restore_nominal(self) -> None:
        """Drops every active shift and pushes every nominal value to the engine again."""
        self._active = []
        self._rebuild(force=True)

    def _rebuild(self, force: bool = False) -> None:
        state = _Actuation(
            self._nominal.effort_gain.copy(),
            self._nominal.torque_bias.copy(),
            self._nominal.friction.copy(),
            self._nominal.damping.copy(),
        )
        for _, shift in self._active:
            SHIFT_TYPES[shift.type](self, shift, state)
        self.revision += 1
        self.effort_gain[:] = state.effort_gain
        self.torque_bias[:] = state.torque_bias
        if force or not np.array_equal(self.friction, state.friction):
            self.friction[:] = state.friction
            self.set_friction_motors()
        if force or not np.array_equal(self.damping, state.damping):
            self.damping[:] = state.damping
            self.set_damping()
        self._loaded |= set(state.payload)
        for link in sorted(self._loaded):
            mass, inertia = self._nominal_links[link]
            for added in state.payload.get(link, ()):
                mass = mass + added
            current = self.client.getDynamicsInfo(self.body, link)[:3:2]
            if force or current != (mass, inertia):
                # mass= alone makes PyBullet recompute the inertia from the collision shape;
                # the nominal diagonal is set in the same call (the payload is a point mass at
                # the link's centre of mass, which adds no inertia about it).
                self.client.changeDynamics(self.body, link, mass=mass, localInertiaDiagonal=inertia)


@dataclasses.dataclass
class _Actuation:
    """The shiftable quantities while the active shifts are being combined."""

    effort_gain: np.ndarray
    torque_bias: np.ndarray
    friction: np.ndarray
    damping: np.ndarray
    payload: dict[int, list[float]] = dataclasses.field(default_factory=dict)


Undo = Callable[[], None]
Effect = Callable[[Plant, ShiftSpec, _Actuation], None]


def _payload(plant: Plant, shift: ShiftSpec, state: _Actuation) -> None:
    state.payload.setdefault(plant.payload_link(shift), []).append(shift.magnitude)


def _array_shift(
    name: str,
    combine: Callable[[np.ndarray, np.ndarray], np.ndarray],
    scaled: bool = False,
) -> Effect:
    """Builds a shift that edits one of the per-joint arrays.

    Args:
        name: The ``Plant`` / ``_Actuation`` array to edit.
        combine: (old values, magnitude) -> new values.
        scaled: scale the magnitude by ``Plant.joint_scale`` when the shift names no joint.
    """

    def effect(plant: Plant, shift: ShiftSpec, state: _Actuation) -> None:
        array = getattr(state, name)
        slots = plant.controlled_slots(shift)
        magnitude = np.full(len(slots), shift.magnitude)
        if scaled and shift.joint is None and plant.joint_scale is not None:
            magnitude = magnitude * plant.joint_scale[slots]
        array[slots] = combine(array[slots], magnitude)

    return effect


# The one table of shift types: how each one changes the shiftable quantities. Order is the
# order shown in error messages.
SHIFT_TYPES: dict[str, Effect] = {
    "payload": _payload,
    "damping": _array_shift("damping", lambda old, m: old + m, scaled=True),
    "friction": _array_shift("friction", lambda old, m: old + m, scaled=True),
    "actuator_gain": _array_shift("effort_gain", lambda old, m: old * m),
    "torque_bias": _array_shift("torque_bias", lambda old, m: old + m, scaled=True),
}


def _at_least(low: float, why: str) -> Callable[[float], str | None]:
    return lambda m: None if m >= low else f"must be >= {low:g} ({why}), got {m:g}"


# What a magnitude must satisfy to make physical sense, per type (one entry per SHIFT_TYPES key).
# Checked on every route (task YAML, CLI, sim_bridge parameter) before anything runs.
SHIFT_MAGNITUDE_RULES: dict[str, Callable[[float], str | None]] = {
    "payload": _at_least(0.0, "a payload adds mass"),
    "damping": _at_least(0.0, "negative damping feeds energy into the joint"),
    "friction": _at_least(0.0, "a friction force is a magnitude"),
    "actuator_gain": lambda m: None if m > 0 else f"must be > 0 (an effort multiplier), got {m:g}",
    "torque_bias": lambda m: None,
}


def shift_problem(shift: ShiftSpec) -> tuple[str, str] | None:
    """(field, problem) when `shift` makes no physical sense (magnitude, time), else None."""
    if shift.type not in SHIFT_TYPES:
        return "type", f"unknown shift {shift.type!r} (expected one of {', '.join(SHIFT_TYPES)})"
    if not np.isfinite(shift.magnitude):
        return "magnitude", f"must be finite, got {shift.magnitude}"
    problem = SHIFT_MAGNITUDE_RULES[shift.type](shift.magnitude)
    if problem:
        return "magnitude", problem
    if not (np.isfinite(shift.at_s) and shift.at_s >= 0):
        return "at_s", f"must be >= 0 (seconds since reset), got {shift.at_s:g}"
    return None


def apply_shift(plant: Plant, shift: ShiftSpec) -> Undo:
    """Applies ``shift`` to ``plant``; returns the callable that reverts it exactly."""
    return plant.apply(shift)


_SHIFT_RE = re.compile(
    r"^\s*(?P<type>\w+)\s*:\s*(?P<mag>[-+0-9.eE]+)\s*(@\s*(?P<at>[-+0-9.eE]+))?\s*"
    r"(#\s*(?P<target>[\w./-]+))?\s*$"
)


def parse_shift(text: str) -> ShiftSpec:
    """Parses the CLI/parameter form ``type:magnitude[@at_s][#target]``.

    ``target`` names the link for ``payload`` and the joint for the other types.

    Examples:
        ``parse_shift("payload:4.0@20")`` -> 4 kg on the last link at t = 20 s.
        ``parse_shift("friction:2@5#lbr_iiwa_joint_2")`` -> 2 N·m friction on joint 2 at 5 s.

    Raises:
        ValueError: naming the text and the problem (grammar, unknown type, a magnitude or time
            that makes no physical sense; see ``SHIFT_MAGNITUDE_RULES``).
    """
    match = _SHIFT_RE.match(text)
    if not match:
        raise ValueError(f"shift {text!r}: expected 'type:magnitude[@at_s][#target]'")
    kind = match["type"]
    if kind not in SHIFT_TYPES:
        raise ValueError(f"shift {text!r}: unknown shift {kind!r} (expected one of {', '.join(SHIFT_TYPES)})")
    try:
        magnitude = float(match["mag"])
        at_s = float(match["at"]) if match["at"] else 0.0
    except ValueError as err:
        raise ValueError(f"shift {text!r}: {err}") from None
    target = match["target"]
    if kind == "payload":
        shift = ShiftSpec(kind, magnitude, at_s, link=target)
    else:
        shift = ShiftSpec(kind, magnitude, at_s, joint=target)
    problem = shift_problem(shift)
    if problem:
        raise ValueError(f"shift {text!r}: {problem[0]}: {problem[1]}")
    return shift


def format_shift(shift: ShiftSpec) -> str:
    """The CLI/parameter form ``type:magnitude@at_s[#target]`` of a shift (inverse of ``parse_shift``)."""
    target = shift.link if shift.type == "payload" else shift.joint
    return f"{shift.type}:{shift.magnitude:g}@{shift.at_s:g}" + (f"#{target}" if target else "")
