"""The task's typed schema: ``TaskSpec`` and the specs it is made of (reference, cost, camera...).

Plain frozen dataclasses, built by ``nestor_sim.task.parse_task`` from a task YAML (its schema and
the observation layout are documented in ``nestor_sim.task``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping

import numpy as np

from nestor_sim.shifts import ShiftSpec


@dataclasses.dataclass(frozen=True)
class JointReference:
    """Smooth moving target of one controlled joint: q_ref(t) = center + amplitude sin(w t + phase).

    Attributes:
        center: Mean position (rad or m).
        amplitude: Half the peak-to-peak excursion (rad or m); 0 gives a fixed set point.
        frequency_hz: Frequency of the sinusoid (Hz).
        phase: Phase at t = 0 (rad).
    """

    center: float = 0.0
    amplitude: float = 0.0
    frequency_hz: float = 0.0
    phase: float = 0.0


@dataclasses.dataclass(frozen=True)
class CostWeights:
    """Weights of the per-tick tracking cost (see ``TrackingEnv.cost``).

    Attributes:
        w_pos: Weight of ||q_ref - q||^2.
        w_vel: Weight of ||qd_ref - qd||^2.
        w_effort: Weight of ||u / effort_limit||^2.
    """

    w_pos: float = 1.0
    w_vel: float = 0.1
    w_effort: float = 0.01


@dataclasses.dataclass(frozen=True)
class EpisodeVariation:
    """What ``TrackingEnv.reset`` draws from its seeded ``np_random`` for each episode.

    Each episode starts at a reference time offset t0 ~ U[0, reference_offset_s): the reference
    of the episode is ``q_ref(t0 + t)`` (its phase differs per seed). The controlled joints start
    on that moved reference, ``initial_positions + q_ref(t0) - q_ref(0)``, plus
    U(-initial_pose_rad, +initial_pose_rad) per joint (so an offset does not add a start-up
    position error that the initial position alone would not have). Every joint starts at rest;
    passive joints start as configured. One seed gives the same episode
    every time; ``reset()`` without a seed continues the generator (a new episode).

    Attributes:
        initial_pose_rad: Half width of the uniform initial-pose perturbation per controlled
            joint (rad or m); 0 = no perturbation.
        reference_offset_s: Width of the uniform reference time offset (s); 0 = the reference
            starts at t = 0 every episode.
    """

    initial_pose_rad: float = 0.05
    reference_offset_s: float = 10.0


@dataclasses.dataclass(frozen=True)
class CameraSpec:
    """A fixed side camera looking along +y at the plane y = marker_y.

    The camera sits at (center_x, marker_y - distance, center_z) and looks at
    (center_x, marker_y, center_z), so on the marker plane x maps linearly to the image column
    (see ``camera.calibration``).

    Attributes:
        enabled: Whether the env/bridge renders images at all.
        rate_hz: Image rate of the bridge (Hz).
        width: Image width (px).
        height: Image height (px).
        fov_deg: Vertical field of view (degrees), as in computeProjectionMatrixFOV.
        distance: Distance from the camera to the marker plane (m).
        center_x: x of the optical axis (m).
        center_z: Height of the camera and of its look-at point (m).
        marker: "rail": a red box at x = reference of the first controlled joint; "none".
        marker_y: y of the marker plane (m); in front of the robot so it is never hidden.
        marker_z: Height of the marker centre (m).
        marker_half_width: Half extent of the marker along x (m).
        marker_half_height: Half extent of the marker along z (m).
    """

    enabled: bool = False
    rate_hz: float = 10.0
    width: int = 96
    height: int = 64
    fov_deg: float = 60.0
    distance: float = 3.0
    center_x: float = 0.0
    center_z: float = 0.0
    marker: str = "none"
    marker_y: float = -0.4
    marker_z: float = 0.25
    marker_half_width: float = 0.06
    marker_half_height: float = 0.12


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """Everything the env needs to build one tracking task. See the module docstring for YAML.

    Attributes:
        name: Task id.
        urdf: Absolute path of the robot URDF.
        base_position: Base position (m).
        use_fixed_base: Whether the base is welded to the world.
        inertia_from_urdf: Use the URDF's inertia tensors (URDF_USE_INERTIA_FROM_FILE) instead of
            the ones PyBullet computes from the collision shapes.
        controlled_joints: Names of the effort-controlled joints, in action order.
        passive_joints: Names of observed, unactuated joints.
        initial_positions: Joint name -> initial position (rad or m); others start at 0.
        kp: PD prior stiffness per controlled joint (the policy graph's prior, not used by the env).
        kd: PD prior damping per controlled joint.
        effort_limit: Max |effort| per controlled joint; actions are clipped to it.
        joint_damping: Viscous damping per controlled joint (N·m·s/rad), replacing the URDF's
            <dynamics damping>; None keeps the URDF's. PyBullet integrates it explicitly, so
            on a very light link it must stay below about 2 I / (physics time step).
        reference: Moving target per controlled joint.
        control_rate_hz: Control ticks per second; one env step is one tick.
        physics_substeps: Physics steps per tick.
        episode_s: Episode length (s).
        cost: Cost weights.
        shifts: Scheduled dynamics shifts.
        camera: Camera and marker configuration.
        episode_variation: What each seeded reset varies (initial pose, reference phase).
    """

    name: str
    urdf: str
    controlled_joints: tuple[str, ...]
    kp: tuple[float, ...]
    kd: tuple[float, ...]
    effort_limit: tuple[float, ...]
    reference: tuple[JointReference, ...]
    episode_s: float
    base_position: tuple[float, float, float] = (0.0, 0.0, 0.0)
    use_fixed_base: bool = True
    inertia_from_urdf: bool = False
    passive_joints: tuple[str, ...] = ()
    initial_positions: Mapping[str, float] = dataclasses.field(default_factory=dict)
    joint_damping: tuple[float, ...] | None = None
    control_rate_hz: float = 100.0
    physics_substeps: int = 4
    cost: CostWeights = CostWeights()
    shifts: tuple[ShiftSpec, ...] = ()
    camera: CameraSpec = CameraSpec()
    episode_variation: EpisodeVariation = EpisodeVariation()

    @property
    def n_controlled(self) -> int:
        """Number of controlled joints (n)."""
        return len(self.controlled_joints)

    @property
    def obs_dim(self) -> int:
        """Length of the observation: 4 n + 2 m."""
        return 4 * len(self.controlled_joints) + 2 * len(self.passive_joints)

    @property
    def act_dim(self) -> int:
        """Length of the action: n."""
        return len(self.controlled_joints)

    @property
    def dt(self) -> float:
        """Control period (s)."""
        return 1.0 / self.control_rate_hz

    @property
    def episode_ticks(self) -> int:
        """Number of control ticks in an episode."""
        return int(round(self.episode_s * self.control_rate_hz))

    def reference_at(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Returns (q_ref, qd_ref) of the controlled joints at time ``t`` (float64 arrays)."""
        c, a, w, phase0 = self._reference_arrays
        phase = phase0 + w * t
        return c + a * np.sin(phase), a * w * np.cos(phase)

    @functools.cached_property
    def _reference_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(center, amplitude, angular frequency, phase) per controlled joint, built once."""
        c = np.array([r.center for r in self.reference])
        a = np.array([r.amplitude for r in self.reference])
        w = 2.0 * math.pi * np.array([r.frequency_hz for r in self.reference])
        return c, a, w, np.array([r.phase for r in self.reference])
