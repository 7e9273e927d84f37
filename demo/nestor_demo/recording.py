"""Missed ticks with and without robot-side recording, measured in the same run.

``nestor demo --record robot0`` runs robot0 with the bag recorder and the other robots without,
on the same machine at the same time. This module reads each robot's ``policy_stats.json`` and
its bag's ``recording.mcap.json`` and writes ``<run_dir>/recording.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

from nestor_bringup.nodes import RECORDING_FILE


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def summarize(run_dir: Path, robot_dirs: dict[str, str], recorded: set[str]) -> dict:
    """Per robot: recording or not, ticks, missed ticks, bag counts; per group: missed per 1000 ticks."""
    robots = {}
    for robot_id, robot_dir in robot_dirs.items():
        stats = _read(Path(robot_dir) / "policy_stats.json")
        entry = {
            "recording": robot_id in recorded,
            "ticks": int(stats.get("ticks", 0)),
            "missed_ticks": int(stats.get("missed_ticks", 0)),
        }
        if robot_id in recorded:
            bag = Path(robot_dir) / RECORDING_FILE
            entry["bag"] = {
                **_read(Path(f"{bag}.json")),
                "path": str(bag),
                "size_bytes": bag.stat().st_size if bag.exists() else 0,
            }
        robots[robot_id] = entry
    groups = {}
    for name, on in (("recording", True), ("not_recording", False)):
        members = [r for r in robots.values() if r["recording"] is on]
        ticks = sum(r["ticks"] for r in members)
        missed = sum(r["missed_ticks"] for r in members)
        groups[name] = {
            "robots": len(members),
            "ticks": ticks,
            "missed_ticks": missed,
            "missed_per_1k_ticks": round(1000.0 * missed / ticks, 3) if ticks else None,
        }
    summary = {"robots": robots, **groups}
    (Path(run_dir) / "recording.json").write_text(json.dumps(summary, indent=1, sort_keys=True))
    return summary
