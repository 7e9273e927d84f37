"""End-of-run exports of the demo: each robot's experience as MCAP and Parquet in its run dir.

Runs ``nestor-cloud export`` as a child process on the stopped cloud's database, so the demo
process loads neither the cloud's stack nor its file-format libraries. The paths and the
exporters' summaries go to ``<run_dir>/exports.json``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

EXPORT_FORMATS = {"mcap": "experience.mcap", "parquet": "experience.parquet"}


def export_robots(run_dir: Path, robot_dirs: dict[str, str], env: dict, timeout_s: float = 300.0) -> dict:
    """Exports every robot's stored experience; returns {robot_id: {format: summary or error}}.

    Args:
        run_dir: the demo's run dir (holds ``cloud/cloud.yaml`` and ``cloud/nestor.db``).
        robot_dirs: robot id -> its run dir (the files go there, next to its ``events.jsonl``).
        env: environment of the child processes.
        timeout_s: limit of one export.
    """
    cloud = Path(run_dir) / "cloud"
    results: dict[str, dict] = {}
    for robot_id, robot_dir in robot_dirs.items():
        results[robot_id] = {}
        for fmt, name in EXPORT_FORMATS.items():
            argv = [
                sys.executable,
                "-m",
                "cloud_brain.cli",
                "export",
                "--format",
                fmt,
                "--robot",
                robot_id,
                "--out",
                str(Path(robot_dir) / name),
                "--config",
                str(cloud / "cloud.yaml"),
                "--db",
                str(cloud / "nestor.db"),
                "--json",
            ]
            events = Path(robot_dir) / "events.jsonl"
            if events.is_file():
                argv += ["--events", str(events)]
            try:
                proc = subprocess.run(
                    argv, env=env, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL
                )
            except subprocess.TimeoutExpired:
                results[robot_id][fmt] = {"error": f"timed out after {timeout_s:g} s"}
                continue
            if proc.returncode == 0:
                results[robot_id][fmt] = json.loads(proc.stdout)
            else:
                results[robot_id][fmt] = {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    (Path(run_dir) / "exports.json").write_text(json.dumps(results, indent=1, sort_keys=True))
    return results
