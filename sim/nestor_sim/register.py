"""Gymnasium ids of the nestor tasks, registered when ``nestor_sim`` is imported.

    import gymnasium, nestor_sim
    env = gymnasium.make("nestor/KukaTrack-v0")                   # config/tasks/kuka_track.yaml
    env = gymnasium.make("nestor/Crane-v0")                       # config/tasks/crane.yaml
    env = gymnasium.make("nestor/Track-v0", task_file="my.yaml")  # any task file
    obs, info = env.reset(seed=0, options={"shifts": ["payload:4.0@20"]})

``gymnasium.make("nestor_sim:nestor/KukaTrack-v0")`` works without the import (gymnasium imports
the module before the id). Gymnasium 1.x no longer loads plugins by itself, so one of the two is
needed. Shifts are per-episode reset options (ShiftSpecs, ``type:magnitude[@at_s][#target]``
strings or YAML mappings; ``[]`` = none); ``make(..., shifts=[...])`` sets the schedule every
reset without options uses. Episodes truncate at the task's ``episode_s`` (TrackingEnv does it).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path

import gymnasium

NAMESPACE = "nestor"
# id -> task file name in the task directory.
TASK_IDS = {
    f"{NAMESPACE}/KukaTrack-v0": "kuka_track.yaml",
    f"{NAMESPACE}/Crane-v0": "crane.yaml",
}
TRACK_ID = f"{NAMESPACE}/Track-v0"
_ENTRY_POINT = "nestor_sim.register:make_env"


def task_dir() -> Path:
    """Directory of the shipped task files: $NESTOR_CONFIG_DIR/tasks, the source tree, or share/."""
    candidates = []
    if os.environ.get("NESTOR_CONFIG_DIR"):
        candidates.append(Path(os.environ["NESTOR_CONFIG_DIR"]) / "tasks")
    candidates.append(Path(__file__).resolve().parents[2] / "config" / "tasks")
    candidates.append(Path(sys.prefix) / "share" / "nestor_bringup" / "config" / "tasks")
    for path in candidates:
        if path.is_dir():
            return path
    raise FileNotFoundError(f"task files: none of {', '.join(map(str, candidates))} exists")


def make_env(
    task_file: str | os.PathLike | None = None,
    task_name: str | None = None,
    shifts: Iterable | None = None,
    render_mode: str | None = None,
):
    """Entry point of every nestor id: a ``TrackingEnv`` of one task file.

    Args:
        task_file: Path of a task YAML (``nestor/Track-v0`` requires it).
        task_name: File name in ``task_dir()`` (the fixed ids set it).
        shifts: Default shift schedule, replacing the task file's; None keeps the file's.
        render_mode: None, "rgb_array" or "human".

    Raises:
        ValueError: no task file given, or a bad task file or shift (naming the field).
    """
    from nestor_sim.task import load_task, with_shifts
    from nestor_sim.tracking_env import TrackingEnv

    if task_file is None and task_name is None:
        raise ValueError(f"task_file: required, e.g. gymnasium.make({TRACK_ID!r}, task_file='config/tasks/crane.yaml')")
    path = Path(task_file) if task_file is not None else task_dir() / task_name
    if not path.is_file():
        raise ValueError(f"task_file: no such file {str(path)!r}")
    spec = load_task(path)
    if shifts is not None:
        spec = with_shifts(spec, shifts)
    return TrackingEnv(spec, render_mode=render_mode)


def register_envs() -> None:
    """Registers the nestor ids with gymnasium; calling it again is a no-op."""
    for env_id, file_name in TASK_IDS.items():
        if env_id not in gymnasium.registry:
            gymnasium.register(env_id, entry_point=_ENTRY_POINT, kwargs={"task_name": file_name})
    if TRACK_ID not in gymnasium.registry:
        gymnasium.register(TRACK_ID, entry_point=_ENTRY_POINT)
