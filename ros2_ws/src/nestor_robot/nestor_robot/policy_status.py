"""The policy's status: the stats file, the supervisor's view, and the DiagnosticStatus of policy/status."""

import json
import os
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from nestor_core.atomic_file import write_json_atomic

STATS_FILE = "policy_stats.json"


def write_stats(run_dir: str, stats: dict, log) -> None:
    """`<run_dir>/policy_stats.json`, atomically (nothing without a run dir; a failure is logged)."""
    if run_dir:
        try:
            write_json_atomic(os.path.join(run_dir, STATS_FILE), stats, indent=1, sort_keys=True)
        except OSError as err:
            log.error(f"writing {STATS_FILE} failed: {err}", throttle_duration_sec=10.0)


SUPERVISION_FILE = "supervision.json"  # written by nestor_bringup.supervisor into the robot's run dir


def read_supervision(run_dir: str) -> dict:
    """The supervisor's view of this robot's nodes (restarts, nodes down); {} without one."""
    if not run_dir:
        return {}
    try:
        with open(os.path.join(run_dir, SUPERVISION_FILE)) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return {k: data.get(k) for k in ("restarts", "down", "stopped")} if isinstance(data, dict) else {}


def status_level(stats: dict) -> tuple[bytes, str]:
    """(DiagnosticStatus level, message) of the policy/status topic, from one stats snapshot.

    ERROR while a bad-input streak outlasts input_hold_ticks (the actuators get zero effort),
    WARN when bad input arrived since the previous status or no model is loaded yet, else OK.
    """
    if stats["holding_zero_effort"]:
        return DiagnosticStatus.ERROR, (
            f"bad input for {stats['bad_input_streak']} ticks, zero effort: {stats['last_bad_tick']}"
        )
    if stats["bad_input_ticks_recent"] or stats["bad_input_streak"]:
        return DiagnosticStatus.WARN, (
            f"bad input on {stats['bad_input_ticks_recent']} ticks, last good command held: {stats['last_bad_tick']}"
        )
    if stats["model_version"] is None:
        return DiagnosticStatus.WARN, "waiting for a model"
    return DiagnosticStatus.OK, f"model {stats['model_version']}"


def policy_status(stats: dict, name: str, robot_id: str) -> DiagnosticStatus:
    """The DiagnosticStatus of policy/status (and /diagnostics) from one stats snapshot."""
    tick = stats["tick_us"]
    values = {
        "model_version": stats["model_version"],
        "ticks": stats["ticks"],
        "missed_ticks": stats["missed_ticks"],
        "swaps": stats["swaps"],
        "rollbacks": stats["rollbacks"],
        "rejected_models": stats["rejected_models"],
        "spool_depth": stats["spool_depth"],
        "recorder_overflow": stats["recorder_overflow"],
        "tick_p50_us": tick["p50"],
        "tick_p99_us": tick["p99"],
        "bad_inputs": stats["bad_inputs"],
        "bad_input_ticks": stats["bad_input_ticks"],
        "bad_input_ticks_recent": stats["bad_input_ticks_recent"],
        "bad_input_streak": stats["bad_input_streak"],
        "last_bad_input": stats["last_bad_input"],
        "last_bad_tick": stats["last_bad_tick"],
    }
    supervision = stats.get("supervision") or {}
    down = supervision.get("down") or []
    values["node_restarts"] = supervision.get("restarts", 0)  # by the supervisor, all nodes of this robot
    values["nodes_down"] = ",".join(down)
    level, message = status_level(stats)
    if down:
        level = max(level, DiagnosticStatus.WARN)
        message += f"; down, restarting: {', '.join(down)}"
    return DiagnosticStatus(
        level=level,
        name=name,
        hardware_id=robot_id,
        message=message,
        values=[
            KeyValue(key=k, value="" if v is None else (f"{v:.1f}" if isinstance(v, float) else str(v)))
            for k, v in values.items()
        ],
    )


def collect_stats(node) -> dict:
    """The stats snapshot of a PolicyNode (its stats thread): counters, logs, spool, tick times."""
    recorder = node.recorder.stats() if node.recorder is not None else {}
    guard, runtime, sink = node.guard, node.runtime, node.sink
    spool = dict(sink.stats) if sink is not None else {}
    bad_ticks = guard.bad_ticks if guard is not None else 0
    previous_bad, node.bad_ticks_at_last_stats = node.bad_ticks_at_last_stats, bad_ticks
    return {
        "robot_id": node.config.robot_id,
        "task": node.config.task,
        "model_version": node.model_version,
        "model_sha256": node.model_sha256,
        "ticks": node.ticks,
        "missed_ticks": node.tick_stats.missed_ticks,
        "missed_log": list(node.tick_stats.missed_log),
        "max_gap_ms": node.tick_stats.max_gap_s * 1e3,
        "bad_inputs": node.bad_inputs,
        "bad_input_ticks": bad_ticks,
        "bad_input_ticks_recent": bad_ticks - previous_bad,
        "bad_input_streak": guard.streak if guard is not None else 0,
        "bad_input_longest_streak": guard.longest_streak if guard is not None else 0,
        "holding_zero_effort": bool(guard is not None and guard.holding_zero),
        "last_bad_input": node.last_bad_input,
        "last_bad_tick": guard.last_reason if guard is not None else "",
        "no_target_ticks": node.no_target_ticks,
        "swaps": node.swaps,
        "swap_log": list(node.swap_log),
        "rejected_models": node.loader.rejected,
        "reject_log": list(node.loader.reject_log),
        "rollbacks": node.rollbacks,
        "rollback_log": list(node.rollback_log),
        "bad_versions": sorted(node.loader.bad_versions),
        "recorder": recorder,
        "ring": {"path": sink.ring_path, **sink.ring_recovery} if sink is not None else {"path": ""},
        "recorder_overflow": recorder.get("overflow", 0),
        "spool": spool,
        "spool_depth": spool.get("depth_transitions", 0),
        "spool_errors": sink.errors if sink is not None else 0,
        "tick_us": node.tick_stats.percentiles(),
        "l0_step_scale": node.runtime_config.l0_step_scale,
        "l0_fast_state_norm": float(np.linalg.norm(runtime.fast_state)) if runtime is not None else None,
        "control_rate_hz": node.config.control_rate_hz,
        "supervision": read_supervision(node.config.run_dir),
        "wall_time": time.time(),
    }
