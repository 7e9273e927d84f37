"""The runs of the ROS loop bench: the robot's real nodes at one rate, and the bare rclpy ping-pong.

run_robot starts sim_bridge + policy_node (and optionally uplink + weight_sync) like the bringup
does and measures ticks, misses and round trips over a window; run_pingpong measures the limit
(bench.ros_pingpong) with the same probe. Used by bench.ros_loop.
"""

from __future__ import annotations

import json
import os
import pathlib
import sqlite3
import subprocess
import sys
import time

import numpy as np
import yaml
from nestor_demo.stall_probe import read_steal_s

from bench.common import CONFIG, REPO, TASK_FILE, RssSampler, pct
from bench.ros_probe import Probe


def task_copy(workdir: pathlib.Path, rate: float) -> pathlib.Path:
    tree = yaml.safe_load(TASK_FILE.read_text())
    tree["control_rate_hz"] = float(rate)
    path = workdir / "tasks" / f"kuka_track_{int(rate)}hz.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


def read_stats(path: pathlib.Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def wait_ticking(stats_path: pathlib.Path, group, timeout_s: float = 45.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        dead = group.dead()
        if dead:
            raise RuntimeError("; ".join(group.describe_death(p, 10) for p in dead))
        stats = read_stats(stats_path)
        if stats and stats.get("ticks", 0) > 0:
            return stats
        time.sleep(0.2)
    raise TimeoutError(f"policy did not tick within {timeout_s} s ({stats_path})")


def fresh_stats(stats_path: pathlib.Path, after_wall: float, timeout_s: float = 5.0) -> dict:
    """A stats snapshot written after `after_wall` (the file is rewritten every second)."""
    deadline = time.monotonic() + timeout_s
    stats = None
    while time.monotonic() < deadline:
        stats = read_stats(stats_path)
        if stats and stats.get("wall_time", 0) >= after_wall:
            return stats
        time.sleep(0.05)
    if stats is None:
        raise RuntimeError(f"no stats in {stats_path}")
    return stats


def steal_over(steal0: float | None, steal1: float | None, seconds: float) -> dict:
    """{"steal_s", "steal_fraction"} of a window: stolen CPU seconds, and their share of all vCPUs' time."""
    if steal0 is None or steal1 is None or seconds <= 0:
        return {"steal_s": None, "steal_fraction": None}
    steal = steal1 - steal0
    return {"steal_s": round(steal, 2), "steal_fraction": round(steal / (seconds * (os.cpu_count() or 1)), 5)}


def run_robot(
    workdir: pathlib.Path,
    env: dict,
    probe: Probe,
    ns: str,
    rate: float,
    seconds: float,
    model: pathlib.Path,
    full_stack: bool,
    cloud_address: str = "",
    sample_rss: bool = False,
    extra: set[str] | None = None,
    tag: str = "",
) -> dict:
    """Start the robot's nodes at `rate`, measure over `seconds`, stop them.

    extra: the network nodes besides sim_bridge + policy (default: uplink + weight_sync when
    full_stack, none otherwise).
    """
    from nestor_bringup.nodes import RobotSpec, robot_nodes
    from nestor_bringup.process_group import ProcessGroup

    if extra is None:
        extra = {"uplink", "weight_sync"} if full_stack else set()
    run_dir = workdir / f"robot_{int(rate)}hz{'_full' if full_stack else ''}{tag}"
    spec = RobotSpec(
        robot_id=ns.strip("/"),
        task="kuka_track",
        task_file=str(task_copy(workdir, rate)),
        cloud_address=cloud_address or "127.0.0.1:9",
        run_dir=str(run_dir),
        initial_model=str(model),
        shifts=[],
    )
    nodes = robot_nodes(spec, str(CONFIG))
    wanted = {"sim_bridge", "policy"} | extra
    nodes = [n for n in nodes if n.name in wanted]
    for node in nodes:
        if node.name == "policy":
            node.overrides["control_rate_hz"] = float(rate)
            if "uplink" not in extra:
                node.overrides.pop("spool_path", None)  # no uplink: the spool would only grow
    group = ProcessGroup(str(run_dir), env=env)
    group.start_robot(spec.robot_id, nodes)
    stats_path = pathlib.Path(spec.robot_dir) / "policy_stats.json"
    sampler = None
    result: dict = {"rate_hz": rate, "seconds": seconds, "nodes": [n.name for n in nodes]}
    try:
        wait_ticking(stats_path, group)
        time.sleep(1.0)  # past start-up transients
        if sample_rss:  # from the start of the window: the slope is steady-state growth, not start-up
            sampler = RssSampler({p.spec.name: p.popen.pid for p in group.processes}, period_s=1.0).start()
        t_start, steal0 = time.time(), read_steal_s()
        s0 = fresh_stats(stats_path, t_start)
        time.sleep(seconds)
        t_end, steal1 = time.time(), read_steal_s()
        s1 = fresh_stats(stats_path, t_end)
        dead = group.dead()
        if dead:
            raise RuntimeError("; ".join(group.describe_death(p, 10) for p in dead))
        span = s1["wall_time"] - s0["wall_time"]
        ticks = s1["ticks"] - s0["ticks"]
        missed = s1["missed_ticks"] - s0["missed_ticks"]
        lat = probe.latencies_ms(ns, s0["wall_time"], s1["wall_time"])
        result.update(
            {
                "achieved_hz": ticks / span if span > 0 else None,
                "ticks": ticks,
                "missed_ticks": missed,
                "missed_fraction": missed / ticks if ticks else None,
                "span_s": span,
                "max_gap_ms_total": s1.get("max_gap_ms"),
                "tick_us": s1.get("tick_us"),
                "rtt_ms": pct(lat, (50, 90, 99)),
                "probe_stamps_seen": probe.stamps_between(ns, s0["wall_time"], s1["wall_time"]),
                "probe_unmatched_commands": probe.unmatched.get(ns),
                "swaps": s1.get("swaps"),
                "swap_log": s1.get("swap_log"),
                "rejected_models": s1.get("rejected_models"),
                "spool": s1.get("spool"),
                "recorder_overflow": s1.get("recorder_overflow"),
                "model_version_end": s1.get("model_version"),
                # CPU time the hypervisor took from this VM's vCPUs over the window (/proc/stat steal).
                **steal_over(steal0, steal1, t_end - t_start),
            }
        )
    finally:
        if sampler is not None:
            result["memory"] = sampler.stop()
        result["exit_codes"] = group.stop(timeout_s=10.0)
    return result


def _pingpong_process(env: dict, logs, role: str, ns: str, *args: str) -> subprocess.Popen:
    """One side (`ping` or `echo`) of bench.ros_pingpong in namespace `ns`, its output into `logs`."""
    return subprocess.Popen(
        [sys.executable, "-m", "bench.ros_pingpong", role, "--ns", ns, *args],
        cwd=REPO,
        env=env,
        stdout=logs,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )


def run_pingpong(workdir: pathlib.Path, env: dict, probe: Probe, ns: str, rates, seconds: float) -> dict:
    windows_file = workdir / "pingpong_windows.json"
    times_file = workdir / "pingpong_echo_times.npy"
    schedule = ",".join(f"{r:g}:{seconds:g}" for r in rates)
    bound = str(len(rates) * (seconds + 3) + 30)
    logs = open(workdir / "pingpong.log", "wb")
    echo = _pingpong_process(env, logs, "echo", ns, "--times-file", str(times_file), "--max-seconds", bound)
    ping = _pingpong_process(
        env, logs, "ping", ns, "--schedule", schedule, "--windows-file", str(windows_file), "--max-seconds", bound
    )
    logs.close()
    try:
        ping.wait(timeout=float(bound) + 10)
    finally:
        for proc in (ping, echo):
            if proc.poll() is None:
                proc.send_signal(2)
        for proc in (ping, echo):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    windows = json.loads(windows_file.read_text())["windows"]
    times = np.load(times_file)
    out = {}
    for w in windows:
        rate, start, end = w["rate"], w["start"] + 1.0, w["end"]  # skip the first second like the robot runs
        sel = times[(times >= start) & (times <= end)]
        gaps = np.diff(sel)
        out[int(rate)] = {
            "rate_hz": rate,
            "span_s": end - start,
            "ticks": int(sel.size),
            "achieved_hz": sel.size / (end - start) if end > start else None,
            "missed_ticks": int(np.sum(gaps > 1.5 / rate)),
            "missed_fraction": float(np.sum(gaps > 1.5 / rate) / max(1, sel.size)),
            "max_gap_ms": float(gaps.max() * 1e3) if gaps.size else None,
            "rtt_ms": pct(probe.latencies_ms(ns, start, end), (50, 90, 99)),
            "probe_stamps_seen": probe.stamps_between(ns, start, end),
            "probe_unmatched_commands": probe.unmatched.get(ns),
        }
    return out


def cloud_stored(db: pathlib.Path) -> dict:
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5.0)
        try:
            rows = conn.execute("SELECT robot_id, transitions, last_seq FROM robots").fetchall()
        finally:
            conn.close()
        return {r[0]: {"transitions": r[1], "last_seq": r[2]} for r in rows}
    except sqlite3.Error as err:
        return {"error": str(err)}
