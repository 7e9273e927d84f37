"""Task specification: which robot, which joints, which moving target, which shifts.

A task is one YAML file in ``config/tasks``. ``load_task`` reads and validates it once; every
error names the file, the field and the problem, e.g.
``crane.yaml: shifts[1].type: unknown shift 'foo' (expected one of payload, damping, ...)``.

Observation layout (FIXED; the policy graph depends on it), all float32::

    obs = concat(q_c, qd_c, q_ref, qd_ref, q_p, qd_p)

with ``_c`` the controlled joints (n = len(controlled_joints)), ``_ref`` the reference of the
controlled joints at the current time and ``_p`` the passive joints (m = len(passive_joints)).
``obs_dim = 4 n + 2 m``. The action is the effort (N·m or N) of each controlled joint,
``act_dim = n``.

YAML schema (defaults in brackets)::

    name: str                        # task id, used in logs
    urdf: str                        # path; relative -> next to the YAML, then pybullet_data
    base_position: [x, y, z]         # [0, 0, 0]
    use_fixed_base: bool             # [true]
    inertia_from_urdf: bool          # [false] use the URDF inertias, not ones computed from shapes
    controlled_joints: [str, ...]    # joints driven by effort, in action order
    passive_joints: [str, ...]       # [] unactuated joints that are observed (e.g. a load)
    initial_positions: {name: float} # [{}] rad or m; missing joints start at 0
    kp: [float] * n                  # PD prior gains for the policy graph (N·m/rad or N/m)
    kd: [float] * n                  # (N·m·s/rad or N·s/m)
    effort_limit: [float] * n        # actions are clipped to +-effort_limit
    joint_damping: [float] * n       # [the URDF's] viscous damping of the controlled joints
    reference:                       # one entry per controlled joint:
      - {center, amplitude, frequency_hz, phase}   # q_ref = c + A sin(2 pi f t + phase)
    control_rate_hz: float           # [100] one env step = one control tick
    physics_substeps: int            # [4] physics steps per tick
    episode_s: float                 # episode length (s), then truncated
    cost: {w_pos, w_vel, w_effort}   # see TrackingEnv.cost
    shifts:                          # [] scheduled dynamics shifts (see shifts.ShiftSpec)
      - {type, magnitude, at_s, joint?, link?}
    episode_variation:               # what reset(seed) varies (see EpisodeVariation)
      {initial_pose_rad, reference_offset_s}   # [0.05, 10.0]; 0 switches one off
    camera: {enabled, rate_hz, width, height, fov_deg, distance, center_x, center_z,
             marker, marker_y, marker_z, marker_half_width, marker_half_height}
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import numpy as np
import yaml

from nestor_sim.shifts import SHIFT_TYPES, ShiftSpec, parse_shift, shift_problem

__all__ = [
    "CameraSpec",
    "CostWeights",
    "EpisodeVariation",
    "JointReference",
    "ShiftSpec",
    "TaskSpec",
    "load_task",
    "parse_shift",
    "with_shifts",
]


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


class _Fields:
    """Reads one YAML mapping, with errors that carry the file and the field path."""

    def __init__(self, source: str, data: Any, where: str = ""):
        self.source, self.where = source, where
        if not isinstance(data, Mapping):
            self.fail("", f"expected a mapping, got {type(data).__name__}")
        self.data = data

    def fail(self, key: str, problem: str) -> None:
        field = f"{self.where}.{key}" if self.where and key else (self.where or key)
        raise ValueError(f"{self.source}: {field}: {problem}")

    def get(self, key: str, kind: type, default: Any = ..., check=None) -> Any:
        if key not in self.data:
            if default is ...:
                self.fail(key, "missing required field")
            return default
        value = self.data[key]
        try:
            if kind is bool:
                if not isinstance(value, bool):
                    raise TypeError
            elif kind is str:
                if not isinstance(value, str):
                    raise TypeError
            elif kind is int:
                if isinstance(value, bool) or int(value) != value:
                    raise TypeError
                value = int(value)
            else:
                if isinstance(value, bool):
                    raise TypeError
                value = kind(value)
        except (TypeError, ValueError):
            self.fail(key, f"expected {kind.__name__}, got {value!r}")
        if kind is float and not math.isfinite(value):
            self.fail(key, f"must be finite, got {value!r}")
        if check is not None:
            problem = check(value)
            if problem:
                self.fail(key, problem)
        return value

    def floats(self, key: str, length: int | None, default: Any = ..., positive=False) -> tuple:
        if key not in self.data and default is not ...:
            return default
        raw = self.get(key, list)
        if length is not None and len(raw) != length:
            self.fail(key, f"expected {length} values (one per controlled joint), got {len(raw)}")
        items = _Fields(self.source, dict(enumerate(raw)), self.where)
        values = tuple(items.get(i, float) for i in range(len(raw)))
        for i, v in enumerate(values):
            if positive and v <= 0:
                self.fail(f"{key}[{i}]", f"must be > 0, got {v}")
        return values

    def names(self, key: str, default: Any = ...) -> tuple[str, ...]:
        if key not in self.data and default is not ...:
            return default
        raw = self.get(key, list)
        for i, v in enumerate(raw):
            if not isinstance(v, str) or not v:
                self.fail(f"{key}[{i}]", f"expected a joint name, got {v!r}")
        if len(set(raw)) != len(raw):
            self.fail(key, "duplicate joint names")
        return tuple(raw)

    def sub(self, key: str, index: int | None = None) -> _Fields:
        value = self.data.get(key, {}) if index is None else self.data[key][index]
        path = key if index is None else f"{key}[{index}]"
        return _Fields(self.source, value if value is not None else {}, _join(self.where, path))

    def reject_unknown(self, known: Iterable[str]) -> None:
        for key in self.data:
            if key not in known:
                self.fail(str(key), f"unknown field (expected one of {', '.join(known)})")


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _positive(v: float) -> str | None:
    return None if v > 0 else f"must be > 0, got {v}"


def _resolve_urdf(urdf: str, base_dir: Path) -> str | None:
    candidates = [Path(urdf)] if os.path.isabs(urdf) else [base_dir / urdf, Path(urdf)]
    if not os.path.isabs(urdf):
        import pybullet_data  # A data-path module only; it does not load the physics engine.

        candidates.append(Path(pybullet_data.getDataPath()) / urdf)
    for path in candidates:
        if path.is_file():
            return str(path.resolve())
    return None


def _shift_from(fields: _Fields, controlled: tuple[str, ...], urdf: str | None = None) -> ShiftSpec:
    fields.reject_unknown(["type", "magnitude", "at_s", "joint", "link"])
    kind = fields.get("type", str)
    if kind not in SHIFT_TYPES:
        fields.fail("type", f"unknown shift {kind!r} (expected one of {', '.join(SHIFT_TYPES)})")
    shift = ShiftSpec(
        type=kind,
        magnitude=fields.get("magnitude", float),
        at_s=fields.get("at_s", float, 0.0, lambda v: None if v >= 0 else "must be >= 0"),
        joint=fields.get("joint", str, None),
        link=fields.get("link", str, None),
    )
    _check_shift(shift, controlled, fields.fail, urdf)
    return shift


@functools.lru_cache(maxsize=32)
def urdf_links(urdf: str) -> tuple[str, ...]:
    """Names of the links a shift can target: each joint's child link (PyBullet's link names).

    Read from the URDF's XML, without loading the physics engine; () when it cannot be parsed
    (the env then checks the link when it loads the robot).
    """
    try:
        root = ElementTree.parse(urdf).getroot()
    except (OSError, ElementTree.ParseError):
        return ()
    return tuple(child.get("link", "") for child in root.iter("child") if child.get("link"))


def _check_shift(shift: ShiftSpec, controlled: tuple[str, ...], fail, urdf: str | None = None) -> None:
    problem = shift_problem(shift)
    if problem:
        fail(*problem)
    if shift.type == "payload" and shift.joint is not None:
        fail("joint", "payload takes 'link', not 'joint'")
    if shift.type != "payload" and shift.link is not None:
        fail("link", f"{shift.type} takes 'joint', not 'link'")
    if shift.joint is not None and shift.joint not in controlled:
        fail("joint", f"{shift.joint!r} is not a controlled joint ({', '.join(controlled)})")
    links = urdf_links(urdf) if urdf and shift.link is not None else ()
    if links and shift.link not in links:
        fail("link", f"{shift.link!r} is not a link of {os.path.basename(urdf)} ({', '.join(links)})")


_TOP_FIELDS = [f.name for f in dataclasses.fields(TaskSpec)]


def parse_task(data: Any, source: str = "<task>", base_dir: Path | str = ".") -> TaskSpec:
    """Validates a task mapping (the parsed YAML) and builds the TaskSpec.

    Args:
        data: The parsed YAML document.
        source: Name used in error messages (the file name).
        base_dir: Directory against which a relative ``urdf`` is resolved first.

    Raises:
        ValueError: naming ``source``, the field and the problem.
    """
    top = _Fields(source, data)
    top.reject_unknown(_TOP_FIELDS)
    urdf_name = top.get("urdf", str)
    urdf = _resolve_urdf(urdf_name, Path(base_dir))
    if urdf is None:
        top.fail("urdf", f"file {urdf_name!r} not found (also looked in pybullet_data)")
    controlled = top.names("controlled_joints")
    if not controlled:
        top.fail("controlled_joints", "must name at least one joint")
    passive = top.names("passive_joints", ())
    both = set(controlled) & set(passive)
    if both:
        top.fail("passive_joints", f"{sorted(both)} also listed in controlled_joints")
    n = len(controlled)

    init = top.sub("initial_positions")
    for key in init.data:
        if key not in controlled + passive:
            init.fail(str(key), "not a controlled or passive joint")
    initial = {str(k): init.get(k, float) for k in init.data}

    raw_ref = top.get("reference", list)
    if len(raw_ref) != n:
        top.fail("reference", f"expected {n} entries (one per controlled joint), got {len(raw_ref)}")
    reference = []
    for i in range(n):
        ref = top.sub("reference", i)
        ref.reject_unknown([f.name for f in dataclasses.fields(JointReference)])
        reference.append(
            JointReference(
                center=ref.get("center", float, 0.0),
                amplitude=ref.get("amplitude", float, 0.0),
                frequency_hz=ref.get("frequency_hz", float, 0.0, lambda v: None if v >= 0 else "must be >= 0"),
                phase=ref.get("phase", float, 0.0),
            )
        )

    cost = top.sub("cost")
    cost.reject_unknown([f.name for f in dataclasses.fields(CostWeights)])
    nonneg = lambda v: None if v >= 0 else f"must be >= 0, got {v}"  # noqa: E731
    weights = CostWeights(
        **{f.name: cost.get(f.name, float, f.default, nonneg) for f in dataclasses.fields(CostWeights)}
    )

    cam = top.sub("camera")
    cam.reject_unknown([f.name for f in dataclasses.fields(CameraSpec)])
    cam_kwargs = {}
    for f in dataclasses.fields(CameraSpec):
        kind = type(f.default)
        check = _positive if f.name in ("rate_hz", "width", "height", "fov_deg", "distance") else None
        cam_kwargs[f.name] = cam.get(f.name, kind, f.default, check)
    if cam_kwargs["marker"] not in ("rail", "none"):
        cam.fail("marker", f"expected 'rail' or 'none', got {cam_kwargs['marker']!r}")

    var = top.sub("episode_variation")
    var.reject_unknown([f.name for f in dataclasses.fields(EpisodeVariation)])
    variation = EpisodeVariation(
        **{f.name: var.get(f.name, float, f.default, nonneg) for f in dataclasses.fields(EpisodeVariation)}
    )

    raw_shifts = top.get("shifts", list, [])
    shifts = tuple(_shift_from(top.sub("shifts", i), controlled, urdf) for i in range(len(raw_shifts)))

    base = top.floats("base_position", 3, (0.0, 0.0, 0.0))
    damping = top.floats("joint_damping", n, None)
    for i, v in enumerate(damping or ()):
        if v < 0:
            top.fail(f"joint_damping[{i}]", f"must be >= 0, got {v}")
    return TaskSpec(
        name=top.get("name", str),
        urdf=urdf,
        base_position=base,
        use_fixed_base=top.get("use_fixed_base", bool, True),
        inertia_from_urdf=top.get("inertia_from_urdf", bool, False),
        controlled_joints=controlled,
        passive_joints=passive,
        initial_positions=initial,
        kp=top.floats("kp", n),
        kd=top.floats("kd", n),
        effort_limit=top.floats("effort_limit", n, positive=True),
        joint_damping=damping,
        reference=tuple(reference),
        control_rate_hz=top.get("control_rate_hz", float, 100.0, _positive),
        physics_substeps=top.get("physics_substeps", int, 4, _positive),
        episode_s=top.get("episode_s", float, check=_positive),
        cost=weights,
        shifts=shifts,
        camera=CameraSpec(**cam_kwargs),
        episode_variation=variation,
    )


def load_task(path: str | os.PathLike) -> TaskSpec:
    """Loads and validates a task YAML file.

    Raises:
        ValueError: naming the file, the field and the problem.
        FileNotFoundError: if ``path`` does not exist.
    """
    path = Path(path)
    with path.open() as f:
        try:
            data = yaml.safe_load(f)
        except yaml.YAMLError as err:
            raise ValueError(f"{path.name}: invalid YAML: {err}") from None
    return parse_task(data, source=path.name, base_dir=path.parent)


def with_shifts(spec: TaskSpec, shifts: Iterable[ShiftSpec | str | Mapping]) -> TaskSpec:
    """Returns a copy of ``spec`` with its shift schedule replaced.

    Args:
        spec: The task.
        shifts: ShiftSpecs, strings in the ``parse_shift`` form (``"payload:4.0@20"``) or
            mappings with the YAML keys. An empty iterable removes every shift.

    Raises:
        ValueError: naming the offending entry and the problem.
    """
    out = []
    for i, item in enumerate(shifts):
        if isinstance(item, str):
            shift = parse_shift(item)
        elif isinstance(item, ShiftSpec):
            shift = item
        else:
            shift = _shift_from(_Fields("shifts", item, f"[{i}]"), spec.controlled_joints, spec.urdf)

        def fail(key: str, problem: str, i=i) -> None:
            raise ValueError(f"shifts[{i}].{key}: {problem}")

        _check_shift(shift, spec.controlled_joints, fail, spec.urdf)
        out.append(shift)
    return dataclasses.replace(spec, shifts=tuple(out))
