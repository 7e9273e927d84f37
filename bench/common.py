"""Shared helpers of the benchmark: figures, percentiles, RSS sampling, the model file, machine info.

Imports only the standard library and numpy: every section module runs in its own process and
decides itself whether it may import torch or rclpy (never both).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import subprocess
import sys
import threading
import time
import traceback

import numpy as np
from nestor_core.atomic_file import write_json_atomic

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG = REPO / "config"
TASK_FILE = CONFIG / "tasks" / "kuka_track.yaml"


def figure(
    value, limit, unit: str, target: str | None = None, met: bool | None = None, ratio: float | None = None, **extra
) -> dict:
    """One figure next to its limit; ratio = value / limit unless given (None when undefined)."""
    if ratio is None and value is not None and limit not in (None, 0):
        ratio = float(value) / float(limit)
    out = {"value": value, "limit": limit, "ratio": ratio, "target": target, "met": met, "unit": unit}
    out.update(extra)
    return out


def error_figure(message: str) -> dict:
    return {"value": None, "limit": None, "ratio": None, "target": None, "met": None, "unit": "", "error": message}


def pct(samples, qs=(50, 99)) -> dict:
    """{"p50": .., "p99": .., "n": ..} of a sample list (None values when empty)."""
    arr = np.asarray(samples, np.float64)
    if arr.size == 0:
        return {"n": 0, **{f"p{q}": None for q in qs}}
    values = np.percentile(arr, qs)
    return {
        "n": int(arr.size),
        **{f"p{q}": float(v) for q, v in zip(qs, values, strict=True)},
        "max": float(arr.max()),
        "mean": float(arr.mean()),
    }


def machine_info() -> dict:
    info = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "loadavg_start": list(os.getloadavg()),
    }
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
        info["cpu_model"] = model
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as f:
            info["mem_total_mb"] = int(f.readline().split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return info


def read_rss_mb(pid: int) -> float | None:
    """VmRSS of a process in MB from /proc (psutil is not a dependency); None when gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError):
        return None
    return None


class RssSampler:
    """Samples the RSS of named pids every `period_s` on a daemon thread until stop()."""

    def __init__(self, pids: dict[str, int], period_s: float = 1.0):
        self.pids = dict(pids)
        self.period_s = period_s
        self.samples: dict[str, list[tuple[float, float]]] = {name: [] for name in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss_sampler", daemon=True)
        self._t0 = time.monotonic()

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def _loop(self) -> None:
        while True:
            now = time.monotonic() - self._t0
            for name, pid in self.pids.items():
                rss = read_rss_mb(pid)
                if rss is not None:
                    self.samples[name].append((now, rss))
            if self._stop.wait(self.period_s):
                return

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join(timeout=5.0)
        return self.summary()

    def summary(self) -> dict:
        """Per process: start/end/max MB and a least-squares slope in MB/min."""
        out = {}
        for name, samples in self.samples.items():
            if not samples:
                out[name] = {"error": "no RSS samples (process gone before sampling?)"}
                continue
            t = np.array([s[0] for s in samples])
            rss = np.array([s[1] for s in samples])
            slope = float(np.polyfit(t, rss, 1)[0] * 60.0) if len(samples) >= 3 and np.ptp(t) > 0 else None
            out[name] = {
                "start_mb": float(rss[0]),
                "end_mb": float(rss[-1]),
                "max_mb": float(rss.max()),
                "slope_mb_per_min": slope,
                "samples": len(samples),
                "span_s": float(np.ptp(t)),
            }
        return out


def make_model(workdir: pathlib.Path, kind: str = "window") -> tuple[pathlib.Path, pathlib.Path]:
    """The kuka_track initial model as <workdir>/model.onnx + io_signature.json (torch in a child).

    kind "window" is the cloud's default version 1; "delta" (the original graph, in
    <workdir>/delta/) is what the consolidation-speed section trains.
    """
    out = workdir if kind == "window" else workdir / kind
    onnx_path = out / "model.onnx"
    sig_path = out / "io_signature.json"
    if not (onnx_path.exists() and sig_path.exists()):
        out.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.make_model",
                "--task-file",
                str(TASK_FILE),
                "--out-dir",
                str(out),
                "--kind",
                kind,
            ],
            check=True,
            cwd=REPO,
            timeout=600,
        )
    return onnx_path, sig_path


def private_ros_env(domain_id: int) -> dict:
    """Environment of every rclpy process the benchmark starts: loopback DDS, a private domain."""
    env = dict(os.environ)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["ROS_DOMAIN_ID"] = str(domain_id)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def section_main(run, description: str) -> None:
    """CLI of a section module: `python -m bench.<section> --workdir W --out part.json [--quick]`.

    The result is always written: an exception becomes {"error": ..., "traceback": ...}.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    workdir = pathlib.Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        result = run(args.quick, workdir)
    except BaseException as err:  # the report must say what failed, never drop the section
        result = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
    write_json_atomic(args.out, result, indent=1, default=_jsonable)


def _jsonable(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, pathlib.Path):
        return str(obj)
    return repr(obj)
