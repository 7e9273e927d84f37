"""The cloud's view of a task file: TaskSpec (name, file, policy dims), loaded once at start.

The task files themselves are parsed by `nestor_sim.task` (the one task-file parser); errors are
ConfigErrors naming `task_files`.
"""

from __future__ import annotations

import dataclasses
import pathlib

from cloud_brain.config import ConfigError, read_yaml_mapping


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """What the cloud needs to know about a task: its name and policy dimensions.

    Attributes:
        name: task name carried by chunks and models (e.g. "kuka_track").
        file: the task YAML it came from (handed to initial_model and run_round).
        obs_dim: observation width, or None when the task file does not say (then chunks are
            only checked for internal consistency).
        act_dim: action width, or None likewise.
    """

    name: str
    file: str
    obs_dim: int | None = None
    act_dim: int | None = None


def _joint_dims(path: pathlib.Path) -> tuple[int, int]:
    """obs/act dims of a nestor_sim task, read by nestor_sim.task (the one task-file parser)."""
    from nestor_sim.task import load_task as load_sim_task

    try:
        task = load_sim_task(path)
    except Exception as err:  # its errors name the file and field; keep them
        raise ConfigError(f"task_files: {err}") from None
    return task.obs_dim, task.act_dim


def load_task(path: str | pathlib.Path) -> TaskSpec:
    """Read a task YAML: `name` (default: file stem) and its policy dims.

    Dims come from explicit top-level `obs_dim`/`act_dim` when present (tasks that are not
    nestor_sim tasks, tests), else from the joint lists of a nestor_sim task.
    """
    path = pathlib.Path(path)
    tree = read_yaml_mapping(path, "task_files")
    name = tree.get("name") or path.stem
    if not isinstance(name, str):
        raise ConfigError(f"task_files: {path}: name must be a string, got {name!r}")
    if "obs_dim" in tree or "act_dim" in tree:
        dims = (tree.get("obs_dim"), tree.get("act_dim"))
    else:
        dims = _joint_dims(path)
    for key, value in zip(("obs_dim", "act_dim"), dims, strict=True):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ConfigError(f"task_files: {path}: {key} must be a positive integer, got {value!r}")
    return TaskSpec(name=name, file=str(path), obs_dim=dims[0], act_dim=dims[1])


def load_tasks(paths: list[str]) -> dict[str, TaskSpec]:
    """Load every task file; names must be unique."""
    tasks: dict[str, TaskSpec] = {}
    for path in paths:
        spec = load_task(path)
        if spec.name in tasks:
            raise ConfigError(f"task_files: task {spec.name!r} defined twice ({tasks[spec.name].file}, {path})")
        tasks[spec.name] = spec
    return tasks
