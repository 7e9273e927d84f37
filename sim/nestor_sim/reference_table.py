"""The episode's reference as a table of rows, one per control tick, computed a block at a time.

A row is ``[q_ref..., qd_ref...]`` of the controlled joints at ``offset + tick * dt``, computed with
the very operations of ``TaskSpec.reference_at`` (the same values bit for bit), so that a tick
looks a row up instead of evaluating sines.
"""

from __future__ import annotations

import numpy as np

from nestor_sim.task_spec import TaskSpec

REF_BLOCK = 1024  # ticks of reference computed at a time


class ReferenceTable:
    """Rows of one episode's reference (see the module docstring).

    Args:
        task: The task whose reference is tabulated.
    """

    def __init__(self, task: TaskSpec):
        self.task = task
        self.offset_s = 0.0
        self._rows: list[list[float]] = []  # ticks _base.. of the episode
        self._base = 0

    def reset(self, offset_s: float) -> None:
        """Starts a new episode whose reference is the task's, ``offset_s`` later."""
        self.offset_s = offset_s
        self._rows = []  # the offset changed: the table is rebuilt on demand

    def row(self, tick: int) -> list[float]:
        """[q_ref..., qd_ref...] at ``tick``; a tick past the block computes the next block."""
        k = tick - self._base
        if not 0 <= k < len(self._rows):
            self._base, k = tick, 0
            c, a, w, phase0 = self.task._reference_arrays
            ticks = np.arange(tick, tick + REF_BLOCK, dtype=np.float64)
            phase = phase0[None, :] + w[None, :] * (self.offset_s + ticks * self.task.dt)[:, None]
            self._rows = np.concatenate([c + a * np.sin(phase), a * w * np.cos(phase)], axis=1).tolist()
        return self._rows[k]
