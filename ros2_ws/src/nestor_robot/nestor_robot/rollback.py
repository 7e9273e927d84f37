"""Automatic rollback: judge a freshly swapped-in model by the cost it produces.

Plain logic, no rclpy, O(1) per tick (the policy node calls `observe` on its control tick):
  * before a swap the monitor keeps the moving average of the last `window_ticks` costs;
  * a swap freezes that average as the baseline and starts a post-swap window;
  * when the post-swap window is full, its average is compared with the baseline: worse by more
    than `margin` (relative: post > pre + margin * |pre|) gives a `Verdict` to roll back.
A swap with fewer than `window_ticks` pre-swap costs is not judged (no baseline).
"""

from __future__ import annotations

import collections
import dataclasses


@dataclasses.dataclass(frozen=True)
class Verdict:
    """A swapped-in version did worse than the one before it.

    Attributes:
        version: the version to roll back (and never adopt again).
        previous: the version to return to.
        pre_cost: mean cost over the window before the swap.
        post_cost: mean cost over the window after it.
        window_ticks: ticks in each window.
    """

    version: int
    previous: int
    pre_cost: float
    post_cost: float
    window_ticks: int

    @property
    def reason(self) -> str:
        return (
            f"mean cost {self.post_cost:.4g} over {self.window_ticks} ticks after the swap vs "
            f"{self.pre_cost:.4g} before"
        )


class RollbackMonitor:
    """Moving-average cost before and after each swap.

    Args:
        window_ticks: ticks averaged on each side of a swap; 0 = off.
        margin: relative worsening that triggers a rollback; 0 = off.
    """

    def __init__(self, window_ticks: int, margin: float):
        if window_ticks < 0:
            raise ValueError(f"rollback_window_ticks: must be >= 0, got {window_ticks}")
        if margin < 0:
            raise ValueError(f"rollback_margin: must be >= 0, got {margin}")
        self.window = int(window_ticks)
        self.margin = float(margin)
        self._recent: collections.deque[float] = collections.deque(maxlen=max(1, self.window))
        self._recent_sum = 0.0
        self._judging: tuple[int, int, float] | None = None  # (version, previous, baseline)
        self._post_sum = 0.0
        self._post_n = 0

    @property
    def enabled(self) -> bool:
        return self.window > 0 and self.margin > 0

    @property
    def judging(self) -> int | None:
        """The version under judgement, if any."""
        return self._judging[0] if self._judging else None

    def on_swap(self, previous: int | None, version: int) -> None:
        """A swap happened (before the tick that first runs `version`)."""
        if not self.enabled:
            return
        if previous is not None and len(self._recent) == self.window:
            self._judging = (version, previous, self._recent_sum / self.window)
        else:
            self._judging = None
        self._post_sum, self._post_n = 0.0, 0
        self._recent.clear()
        self._recent_sum = 0.0

    def observe(self, cost: float) -> Verdict | None:
        """One tick's cost; returns a Verdict when the model under judgement must be rolled back."""
        if not self.enabled:
            return None
        if len(self._recent) == self.window:
            self._recent_sum -= self._recent[0]
        self._recent.append(cost)
        self._recent_sum += cost
        if self._judging is None:
            return None
        self._post_sum += cost
        self._post_n += 1
        if self._post_n < self.window:
            return None
        version, previous, baseline = self._judging
        self._judging = None
        post = self._post_sum / self._post_n
        if post > baseline + self.margin * abs(baseline):
            return Verdict(version, previous, baseline, post, self.window)
        return None
