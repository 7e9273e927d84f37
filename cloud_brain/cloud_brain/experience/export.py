"""What an export reads: one robot's transitions in a seq and time range, its joints, its events.

The file formats (``export_mcap``, ``export_parquet``) share this selection, so a range means the
same rows in every format. ``FORMATS`` maps a format name to its writer; a new format is one
module with a ``write(path, store, selection, layout, events)`` function plus one entry.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import pathlib
from collections.abc import Iterator

import numpy as np
from nestor_core.experience import ExperienceBatch

from cloud_brain.experience.store import ExperienceStore


class ExportError(ValueError):
    """Bad export arguments or input files; the message names the field and the problem."""


@dataclasses.dataclass(frozen=True)
class Selection:
    """The rows of one robot an export writes: seqs in [from_seq, to_seq], stamps in [since, until].

    Attributes:
        robot_id: the robot whose experience is exported.
        from_seq: first seq (inclusive, >= 1).
        to_seq: last seq (inclusive); None = the newest stored.
        since: earliest robot-clock stamp (unix seconds, inclusive); None = no bound.
        until: latest stamp (inclusive); None = no bound.
    """

    robot_id: str
    from_seq: int = 1
    to_seq: int | None = None
    since: float | None = None
    until: float | None = None

    def validate(self) -> Selection:
        """Returns self; raises ExportError naming the first bad field."""
        if not self.robot_id:
            raise ExportError("robot: empty")
        if self.from_seq < 1:
            raise ExportError(f"from_seq: must be >= 1, got {self.from_seq}")
        if self.to_seq is not None and self.to_seq < self.from_seq:
            raise ExportError(f"to_seq: {self.to_seq} is before from_seq {self.from_seq}")
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ExportError(f"{name}: must be a finite unix time, got {value}")
        if self.since is not None and self.until is not None and self.until < self.since:
            raise ExportError(f"until: {self.until} is before since {self.since}")
        return self


def select(store: ExperienceStore, selection: Selection) -> Iterator[tuple[ExperienceBatch, np.ndarray]]:
    """(batch, kept row indices) of the selection, by seq; batches with no kept row are skipped."""
    for batch in store.read_robot(selection.robot_id, selection.from_seq, selection.to_seq):
        keep = np.ones(len(batch), bool)
        if selection.since is not None:
            keep &= batch.stamp >= selection.since
        if selection.until is not None:
            keep &= batch.stamp <= selection.until
        if keep.any():
            yield batch, np.flatnonzero(keep)


@dataclasses.dataclass(frozen=True)
class JointLayout:
    """Joint names of the observation ``concat(q_c, qd_c, q_ref, qd_ref, q_p, qd_p)``.

    Attributes:
        controlled: names of the controlled joints (n; the action's order).
        passive: names of the observed passive joints (m).
    """

    controlled: tuple[str, ...]
    passive: tuple[str, ...] = ()

    @property
    def obs_dim(self) -> int:
        return 4 * len(self.controlled) + 2 * len(self.passive)

    def split(self, obs: np.ndarray) -> dict[str, np.ndarray]:
        """Column blocks q_c, qd_c, q_ref, qd_ref, q_p, qd_p of an [N, obs_dim] observation."""
        n, m = len(self.controlled), len(self.passive)
        bounds = np.cumsum([0, n, n, n, n, m, m])
        names = ("q_c", "qd_c", "q_ref", "qd_ref", "q_p", "qd_p")
        return {name: obs[:, bounds[i] : bounds[i + 1]] for i, name in enumerate(names)}


def joint_layout(task_file: str | None, obs_dim: int, act_dim: int) -> JointLayout:
    """Names from the task file's joint lists when they fit the data, else ``joint_<i>``/``passive_<i>``."""
    if task_file:
        from nestor_sim.task import load_task  # the one task-file parser

        try:
            task = load_task(task_file)
        except OSError as err:
            raise ExportError(f"task_file: cannot read {task_file}: {err}") from None
        except ValueError:  # not a nestor_sim task (one that states obs_dim/act_dim): generic names
            task = None
        if task is not None:
            layout = JointLayout(tuple(task.controlled_joints), tuple(task.passive_joints))
            if len(layout.controlled) == act_dim and layout.obs_dim == obs_dim:
                return layout
    m, odd = divmod(obs_dim - 4 * act_dim, 2)
    if m < 0 or odd:
        raise ExportError(f"obs: width {obs_dim} does not fit 4 n + 2 m with n = act_dim = {act_dim}")
    return JointLayout(tuple(f"joint_{i}" for i in range(act_dim)), tuple(f"passive_{i}" for i in range(m)))


def read_events(
    path: str | os.PathLike | None, robot_id: str, since: float | None = None, until: float | None = None
) -> list[dict]:
    """The robot's sim events (``events.jsonl`` of the sim bridge) with a stamp in [since, until]."""
    if not path:
        return []
    events = []
    try:
        lines = pathlib.Path(path).read_text().splitlines()
    except OSError as err:
        raise ExportError(f"events: cannot read {path}: {err.strerror}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
            stamp = float(event["stamp"])
        except (ValueError, KeyError, TypeError):
            raise ExportError(f"events: {path}:{number}: not a JSON object with a numeric stamp") from None
        if event.get("robot_id", robot_id) != robot_id:
            continue
        if (since is None or stamp >= since) and (until is None or stamp <= until):
            events.append(event)
    return sorted(events, key=lambda e: e["stamp"])


@contextlib.contextmanager
def replacing(path: str) -> Iterator[str]:
    """Yields a temporary path beside ``path``, moved over it when the block ends (removed if it raises)."""
    tmp = f"{path}.part"
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def summary(path: str, fmt: str, selection: Selection, task: str, first: int, last: int, transitions: int) -> dict:
    """What every format's ``write`` returns: the file, its format and the range it holds."""
    return {
        "path": path,
        "format": fmt,
        "robot_id": selection.robot_id,
        "task": task,
        "first_seq": first,
        "last_seq": last,
        "transitions": transitions,
    }
