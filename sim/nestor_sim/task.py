"""Task specification: which robot, which joints, which moving target, which shifts.

A task is one YAML file in ``config/tasks``. ``load_task`` reads and validates it once (the one
task-file parser; the typed result is ``task_spec.TaskSpec``, fields read by ``task_fields``); every
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
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import yaml

from nestor_sim.shifts import SHIFT_TYPES, ShiftSpec, parse_shift, shift_problem
from nestor_sim.task_fields import Fields, positive
from nestor_sim.task_spec import CameraSpec, CostWeights, EpisodeVariation, JointReference, TaskSpec

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


def _resolve_urdf(urdf: str, base_dir: Path) -> str | None:
    candidates = [Path(urdf)] if os.path.isabs(urdf) else [base_dir / urdf, Path(urdf)]
    if not os.path.isabs(urdf):
        import pybullet_data  # A data-path module only; it does not load the physics engine.

        candidates.append(Path(pybullet_data.getDataPath()) / urdf)
    for path in candidates:
        if path.is_file():
            return str(path.resolve())
    return None


def _shift_from(fields: Fields, controlled: tuple[str, ...], urdf: str | None = None) -> ShiftSpec:
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
    top = Fields(source, data)
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
        check = positive if f.name in ("rate_hz", "width", "height", "fov_deg", "distance") else None
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
        control_rate_hz=top.get("control_rate_hz", float, 100.0, positive),
        physics_substeps=top.get("physics_substeps", int, 4, positive),
        episode_s=top.get("episode_s", float, check=positive),
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
            shift = _shift_from(Fields("shifts", item, f"[{i}]"), spec.controlled_joints, spec.urdf)

        def fail(key: str, problem: str, i=i) -> None:
            raise ValueError(f"shifts[{i}].{key}: {problem}")

        _check_shift(shift, spec.controlled_joints, fail, spec.urdf)
        out.append(shift)
    return dataclasses.replace(spec, shifts=tuple(out))
