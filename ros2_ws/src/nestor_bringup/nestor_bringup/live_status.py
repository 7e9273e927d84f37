"""What `nestor robot` and `nestor fleet` print while they run: each robot's control loop and link.

It reads the files the robot's nodes write into `<run_dir>/robots/<id>/` (`policy_stats.json`
from the policy node, `uplink_stats.json` from the uplink node), so the CLI needs no ROS graph of
its own. One line per robot every `period_s`, and at once when a robot's link changes state: the
cloud becoming unreachable is said plainly, with the address, the error and what is kept meanwhile.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def robot_line(robot_id: str, policy: dict, link: dict, now: float | None = None) -> str:
    """One robot's status line from its policy and uplink stats (either may be empty: not written yet)."""
    now = time.time() if now is None else now
    version = policy.get("model_version")
    parts = [
        f"{robot_id}: model {'v' + str(version) if version is not None else '- (waiting for one)'}",
        f"{policy.get('ticks', 0)} ticks ({policy.get('missed_ticks', 0)} missed)",
    ]
    if policy.get("bad_input_streak"):
        effort = "zero effort" if policy.get("holding_zero_effort") else "last good command held"
        parts.append(f"BAD INPUT for {policy['bad_input_streak']} ticks, {effort}: {policy.get('last_bad_tick', '')}")
    address = link.get("cloud_address", "?")
    spool = link.get("spool_depth", policy.get("spool_depth", 0))
    if not link:
        parts.append("link: starting")
    elif link.get("connected"):
        parts.append(f"link: streaming to {address}, acked seq {link.get('acked_through', 0)}, spool {spool}")
    elif link.get("last_error"):
        since = link.get("disconnected_since")
        how_long = f" for {now - since:.0f} s" if since else ""
        parts.append(
            f"CLOUD UNREACHABLE at {address}{how_long} ({link['last_error'][:120]}); "
            f"experience kept in the spool ({spool} transitions), retrying"
        )
    else:
        parts.append(f"link: connecting to {address}")
    return ", ".join(parts)


def link_state(link: dict) -> str:
    if not link:
        return "starting"
    return "up" if link.get("connected") else ("down" if link.get("last_error") else "connecting")


class LiveStatus:
    """Prints the robots' lines every `period_s`, and a robot's line at once when its link changes.

    Args:
        robots: robot id -> its directory (`<run_dir>/robots/<id>`).
        period_s: seconds between two full reports.
        stream: where the lines go.
    """

    def __init__(self, robots: dict[str, str], period_s: float = 5.0, stream=None):
        self.robots = {robot_id: Path(d) for robot_id, d in robots.items()}
        self.period_s = period_s
        self.stream = stream or sys.stdout
        self._next = time.monotonic() + period_s
        self._links: dict[str, str] = {}

    def update(self) -> None:
        """Call often (every few hundred ms); prints only when due or when a link changed."""
        due = time.monotonic() >= self._next
        if due:
            self._next = time.monotonic() + self.period_s
        for robot_id, directory in self.robots.items():
            policy = _read(directory / "policy_stats.json")
            link = _read(directory / "uplink_stats.json")
            state = link_state(link)
            changed = self._links.get(robot_id, "starting") != state and state in ("up", "down")
            self._links[robot_id] = state
            if due or changed:
                print(robot_line(robot_id, policy, link), file=self.stream, flush=True)
