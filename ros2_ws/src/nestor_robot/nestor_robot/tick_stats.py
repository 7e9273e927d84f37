"""The policy's tick statistics: missed ticks, the largest gap, compute-time percentiles.

Written on the tick thread only (two calls per tick, no allocation); read by the stats thread.
A tick that starts more than 1.5 periods after the previous one counts as missed; the first 100
are logged with the sim's own stamp gap, to tell a late sim from a late delivery or process.
Plain numpy, no ROS: tested without DDS.
"""

from __future__ import annotations

import time

import numpy as np

MISSED_LOG_LEN = 100


class TickStats:
    """The control loop's tick statistics: missed ticks and compute-time percentiles.

    Args:
    control_rate_hz: the nominal tick rate.
    samples: compute-time samples kept (a ring) for the percentiles.
    """

    def __init__(self, control_rate_hz: float, samples: int):
        self.period_s = 1.0 / control_rate_hz
        self.missed_ticks = 0
        self.missed_log: list[dict] = []  # the first MISSED_LOG_LEN missed ticks, to find their cause
        self.max_gap_s = 0.0
        self._tick_us = np.zeros(samples, np.float64)
        self._n = 0
        self._last_start: float | None = None
        self._last_stamp = 0.0

    def pause(self) -> None:
        """The ticks stop for a while (the node is deactivated): the next one is no missed tick."""
        self._last_start = None

    def started(self, start: float, stamp: float, tick: int) -> None:
        """A tick starts at `start` (perf_counter s) on a message stamped `stamp` (ROS time s)."""
        if self._last_start is not None:
            gap = start - self._last_start
            if gap > 1.5 * self.period_s:
                self.missed_ticks += 1
                if len(self.missed_log) < MISSED_LOG_LEN:
                    self.missed_log.append(
                        {
                            "tick": tick,
                            "gap_ms": round(gap * 1e3, 2),
                            "unix": time.time(),
                            # the sim's own tick interval: large = the sim was late, normal = delivery or this process
                            "stamp_gap_ms": round((stamp - self._last_stamp) * 1e3, 2),
                        }
                    )
            if gap > self.max_gap_s:
                self.max_gap_s = gap
        self._last_start = start
        self._last_stamp = stamp

    def computed(self, seconds: float) -> None:
        """One tick's compute time."""
        self._tick_us[self._n % self._tick_us.shape[0]] = seconds * 1e6
        self._n += 1

    def percentiles(self) -> dict:
        """{"n", "p50", "p90", "p99", "max"} of the kept compute times (µs); None values before any."""
        n = min(self._n, self._tick_us.shape[0])
        if n == 0:
            return {"n": 0, "p50": None, "p90": None, "p99": None, "max": None}
        samples = self._tick_us[:n].copy()
        p50, p90, p99 = np.percentile(samples, [50, 90, 99])
        return {"n": int(n), "p50": float(p50), "p90": float(p90), "p99": float(p99), "max": float(samples.max())}
