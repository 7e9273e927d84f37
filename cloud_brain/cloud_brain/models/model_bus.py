"""In-process fan-out of newly activated model versions to Subscribe streams.

The bus remembers, per task, the active version and a generation number that grows on every
activation (a rollback re-activates an older version, so versions are not monotonic). A
subscriber waits on a condition variable until its task's generation moves past the one it
has seen, then yields the current active version. Slow subscribers skip intermediate versions
and always get the latest, which is what a robot wants.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any


class ModelBus:
    """Latest active version per task, with blocking subscriptions."""

    def __init__(self):
        self._cond = threading.Condition()
        self._latest: dict[str, tuple[int, Any]] = {}
        self._generation = 0
        self._closed = False

    def publish(self, task: str, model: Any) -> None:
        """Announce `model` as the task's active version and wake subscribers."""
        with self._cond:
            self._generation += 1
            self._latest[task] = (self._generation, model)
            self._cond.notify_all()

    def touch(self, task: str) -> None:
        """Make the task's subscribers look at its version again (a canary set changed)."""
        with self._cond:
            entry = self._latest.get(task)
            if entry is not None:
                self._generation += 1
                self._latest[task] = (self._generation, entry[1])
                self._cond.notify_all()

    def current(self, task: str) -> Any | None:
        """The task's latest published version, or None."""
        with self._cond:
            entry = self._latest.get(task)
            return entry[1] if entry else None

    def close(self) -> None:
        """End every subscription (server stop); later subscriptions end at once."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def wake(self) -> None:
        """Make waiting subscribers re-check their `is_active` callbacks."""
        with self._cond:
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def subscribe(
        self,
        task: str,
        current_version: int = 0,
        is_active: Callable[[], bool] = lambda: True,
        version_of: Callable[[Any], int] = lambda model: model.version,
        poll_seconds: float = 1.0,
    ) -> Iterator[Any]:
        """Yield the task's active version now if it differs from current_version, then each new one.

        Ends when the bus closes or `is_active()` turns false (checked on every wake-up and at
        least every poll_seconds).
        """
        seen = 0
        first = True
        while True:
            with self._cond:
                while True:
                    if self._closed or not is_active():
                        return
                    entry = self._latest.get(task)
                    if entry is not None and entry[0] > seen:
                        break
                    self._cond.wait(poll_seconds)
                seen, model = entry
            if first and version_of(model) == current_version:
                first = False
                continue
            first = False
            yield model
