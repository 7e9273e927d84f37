"""A bare timing loop that measures how often the machine itself stalls (a same-run baseline).

It ticks at the control rate with absolute deadlines, at the control nodes' SCHED_FIFO priority,
and does nothing else: no ROS, no DDS, no disk or network I/O on the loop. A tick that starts more
than 1.5 periods after the one before is a stall of the machine (a vCPU descheduled by the
hypervisor, a non-preemptible kernel path), not of nestor's code, and the control loop cannot tick
through it either. The demo runs one next to the fleet, so `summary.json` can say which of a
robot's missed ticks coincide with a stall the bare loop saw too. It also reports the CPU time the
hypervisor took from this machine's vCPUs over the run (`steal` in /proc/stat): measured here,
40 s of two robots missed 0 ticks at 0.04 % steal and 37-39 per robot at 5 % steal.

    python -m nestor_demo.stall_probe --rate 100 --priority 20 --out runs/latest/stall_probe.json

Stops on SIGINT/SIGTERM; the JSON is rewritten atomically every second and at exit.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time

from nestor_core.atomic_file import write_json_atomic

MAX_EVENTS = 1000
PROBE_FILE = "stall_probe.json"  # in the demo's run dir


def read_steal_s(path: str = "/proc/stat") -> float | None:
    """CPU time stolen by the hypervisor from all vCPUs since boot, seconds (None if unknown)."""
    try:
        with open(path) as f:
            fields = f.readline().split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK") if fields[0] == "cpu" and len(fields) > 8 else None
    except (OSError, ValueError, IndexError):
        return None


class StallProbe:
    """Counts ticks that start more than 1.5 periods after the previous one."""

    def __init__(self, rate_hz: float, steal_reader=read_steal_s):
        if not rate_hz > 0:
            raise ValueError(f"rate_hz: must be > 0, got {rate_hz}")
        self.period = 1.0 / rate_hz
        self.ticks = 0
        self.missed = 0
        self.max_gap_s = 0.0
        self.events: list[dict] = []  # {"unix": end of the gap, "gap_ms": gap}
        self._steal = steal_reader
        self._steal0 = steal_reader()
        self._t0 = time.monotonic()

    def observe(self, gap_s: float, unix: float) -> None:
        """One tick started `gap_s` after the previous one, at wall time `unix`."""
        self.ticks += 1
        self.max_gap_s = max(self.max_gap_s, gap_s)
        if gap_s > 1.5 * self.period:
            self.missed += 1
            if len(self.events) < MAX_EVENTS:
                self.events.append({"unix": unix, "gap_ms": round(gap_s * 1e3, 2)})

    def stats(self) -> dict:
        steal_now = self._steal()
        steal = None if steal_now is None or self._steal0 is None else steal_now - self._steal0
        elapsed = time.monotonic() - self._t0
        cpus = os.cpu_count() or 1
        return {
            "rate_hz": 1.0 / self.period,
            "ticks": self.ticks,
            "missed_ticks": self.missed,
            "max_gap_ms": round(self.max_gap_s * 1e3, 2),
            "events": list(self.events),
            "seconds": round(elapsed, 2),
            # CPU time the hypervisor ran something else on this machine's vCPUs, and its share.
            "steal_s": None if steal is None else round(steal, 2),
            "steal_fraction": None if steal is None or elapsed <= 0 else round(steal / (elapsed * cpus), 5),
            "wall_time": time.time(),
        }

    def run(self, stop: threading.Event, on_second=None) -> None:
        """Tick until `stop` is set; call `on_second(stats)` about once a second."""
        deadline = last = time.monotonic()
        next_report = last + 1.0
        while not stop.is_set():
            deadline += self.period
            delay = deadline - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                deadline = time.monotonic()  # late ticks are not made up, as in the sim's clock
            now = time.monotonic()
            self.observe(now - last, time.time())
            last = now
            if on_second is not None and now >= next_report:
                next_report = now + 1.0
                on_second(self.stats())


def coinciding(robot_misses: list[dict], stalls: list[dict], slack_s: float = 0.005) -> int:
    """How many of a robot's missed ticks overlap a stall of the probe.

    Each entry has `unix` (when the late tick started) and `gap_ms`; a gap covers
    [unix - gap, unix]. Two gaps overlap (within `slack_s`) when the machine stalled across both.
    """
    spans = [(s["unix"] - s["gap_ms"] / 1e3 - slack_s, s["unix"] + slack_s) for s in stalls]
    count = 0
    for miss in robot_misses:
        start, end = miss["unix"] - miss["gap_ms"] / 1e3, miss["unix"]
        if any(start <= s_end and s_start <= end for s_start, s_end in spans):
            count += 1
    return count


def _write(path: str, stats: dict) -> None:
    write_json_atomic(path, stats, indent=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stall_probe", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=100.0, help="tick rate, Hz (the control rate)")
    parser.add_argument("--priority", type=int, default=0, help="SCHED_FIFO priority (0 = default scheduling)")
    parser.add_argument("--out", required=True, help="JSON file, rewritten every second and at exit")
    args = parser.parse_args(argv)
    try:
        probe = StallProbe(args.rate)
    except ValueError as err:
        parser.error(str(err))
    from nestor_core.realtime import set_sched_priority

    try:
        print(f"stall_probe: {set_sched_priority(args.priority)}", flush=True)
    except ValueError as err:
        parser.error(str(err))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        probe.run(stop, on_second=lambda stats: _write(args.out, stats))
    finally:
        _write(args.out, probe.stats())
    return 0


if __name__ == "__main__":
    sys.exit(main())
