"""Dynamics shifts: what they are, how to parse them, and how to apply them to a running sim.

A shift is a change of the plant in the middle of an episode (a payload is picked up, a bearing
wears, a motor weakens). The policy is expected to notice it from the tracking error and adapt.

Every shift type is one entry of ``SHIFT_TYPES``: a function ``apply(plant, shift)`` that changes
the plant and returns a zero-argument ``undo`` callable that restores it. Adding a type is adding
one function and one table entry; the YAML validation and the CLI parser read the table.

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


Undo = Callable[[], None]


def _payload(plant: Plant, shift: ShiftSpec) -> Undo:
    link = plant.link_index[shift.link] if shift.link else max(plant.link_index.values())
    before = plant.client.getDynamicsInfo(plant.body, link)[0]
    plant.client.changeDynamics(plant.body, link, mass=before + shift.magnitude)
    return lambda: plant.client.changeDynamics(plant.body, link, mass=before)


def _array_shift(
    name: str,
    combine: Callable[[np.ndarray, np.ndarray], np.ndarray],
    push: str | None = None,
    scaled: bool = False,
):
    """Builds a shift that edits one of the plant's per-joint arrays.

    Args:
        name: The ``Plant`` array to edit.
        combine: (old values, magnitude) -> new values.
        push: ``Plant`` method that hands the array to the engine; None when the env's effort
            path reads the array every step.
        scaled: scale the magnitude by ``Plant.joint_scale`` when the shift names no joint.
    """

    def apply(plant: Plant, shift: ShiftSpec) -> Undo:
        array = getattr(plant, name)
        slots = plant.controlled_slots(shift)
        before = array[slots].copy()
        magnitude = np.full(len(slots), shift.magnitude)
        if scaled and shift.joint is None and plant.joint_scale is not None:
            magnitude = magnitude * plant.joint_scale[slots]
        array[slots] = combine(before, magnitude)
        if push:
            getattr(plant, push)()

        def undo() -> None:
            array[slots] = before
            if push:
                getattr(plant, push)()

        return undo

    return apply


# The one table of shift types. Order is the order shown in error messages.
SHIFT_TYPES: dict[str, Callable[[Plant, ShiftSpec], Undo]] = {
    "payload": _payload,
    "damping": _array_shift("damping", lambda old, m: old + m, "set_damping", scaled=True),
    "friction": _array_shift("friction", lambda old, m: old + m, "set_friction_motors", scaled=True),
    "actuator_gain": _array_shift("effort_gain", lambda old, m: old * m),
    "torque_bias": _array_shift("torque_bias", lambda old, m: old + m, scaled=True),
}


def apply_shift(plant: Plant, shift: ShiftSpec) -> Undo:
    """Applies ``shift`` to ``plant``; returns the callable that reverts it."""
    return SHIFT_TYPES[shift.type](plant, shift)


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
        ValueError: naming the text and the problem.
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
        return ShiftSpec(kind, magnitude, at_s, link=target)
    return ShiftSpec(kind, magnitude, at_s, joint=target)
