"""The shift schedule of one episode: which shifts are pending, which are in effect, and when each fires.

``TrackingEnv`` owns one ``ShiftSchedule`` over its ``Plant``. ``reset`` re-arms a schedule,
``apply_due`` fires every shift whose ``at_s`` has come and returns the events, and a shift the
engine refuses (e.g. a negative link mass) is undone and reported as refused, never as active.
"""

from __future__ import annotations

import math
from typing import Any

from nestor_sim.shifts import Plant, ShiftSpec, Undo, apply_shift


class ShiftSchedule:
    """Pending and active shifts of the current episode.

    Args:
        plant: The plant the shifts act on (its client reads back a payload's link mass).
    """

    def __init__(self, plant: Plant):
        self.plant = plant
        self._active: list[tuple[ShiftSpec, Undo]] = []
        self._active_dicts: list[dict[str, Any]] | None = None
        self.pending: list[ShiftSpec] = []

    def reset(self, schedule) -> None:
        """Forgets every shift (the plant is restored by the caller) and arms ``schedule``.

        Raises:
            ValueError: if a shift names a link the robot does not have.
        """
        self._active = []
        self._active_dicts = None
        self.pending = sorted(schedule, key=lambda s: s.at_s)
        for shift in self.pending:
            if shift.link is not None and shift.link not in self.plant.link_index:
                raise ValueError(f"shifts: unknown link {shift.link!r}")

    def apply_due(self, t: float, tick: int) -> list[dict[str, Any]]:
        """Applies every pending shift due at time ``t``; returns their events (t and tick added)."""
        events = []
        # A small tolerance so that at_s = k * dt fires on tick k despite float rounding.
        while self.pending and self.pending[0].at_s <= t + 1e-9:
            shift = self.pending.pop(0)
            before = self._held_value(shift)
            undo = apply_shift(self.plant, shift)
            refused = self._refused(shift, before)
            if refused:
                # The engine did not take the change (e.g. a negative link mass): not active, and the
                # event says so instead of claiming it was applied.
                undo()
                events.append({**shift.to_dict(), "t": t, "tick": tick, "refused": refused})
                continue
            self._active.append((shift, undo))
            self._active_dicts = None
            events.append({**shift.to_dict(), "t": t, "tick": tick})
        return events

    def active_dicts(self) -> list[dict[str, Any]]:
        """The shifts in effect, as dicts (rebuilt only when a shift is applied or undone)."""
        if self._active_dicts is None:
            self._active_dicts = [shift.to_dict() for shift, _ in self._active]
        return list(self._active_dicts)

    def _held_value(self, shift: ShiftSpec) -> float | None:
        """The engine-side value a shift changes, read back from PyBullet (payload: the link mass)."""
        if shift.type != "payload":
            return None
        return self.plant.client.getDynamicsInfo(self.plant.body, self.plant.payload_link(shift))[0]

    def _refused(self, shift: ShiftSpec, before: float | None) -> str:
        if before is None:
            return ""
        now, wanted = self._held_value(shift), before + shift.magnitude
        if math.isclose(now, wanted, rel_tol=1e-6, abs_tol=1e-9):
            return ""
        return f"PyBullet kept the link mass at {now:g} kg (asked for {wanted:g} kg)"
