"""`make bench-load`: many simulated robots stream experience into one real cloud process over mutual TLS.

    python -m bench_load.run [--quick] [--clients 100] [--duration 120] [--out runs/bench-load/results.json]

One `nestor-cloud serve` process (TLS on, dev PKI from `nestor-cloud certs` in a temp dir, the
kuka_track task) and `--procs` worker processes, each running its share of the clients as threads.
A client is one robot: its own mutual-TLS channel and one Ingest stream, sending a `--chunk`
transition chunk every `--period` seconds with at most `--window` unacked, like the robot's uplink
(no ROS, no spool: the cloud is what is measured). A failed stream is counted as an error and
reopened, resending everything unacked, so a lost transition is a real loss.

Reported in results.json: throughput, ack latency p50/p99, the cloud's RSS over time (VmRSS of
/proc/<pid>/status every second) with a least-squares slope, errors (must be 0) and lost
transitions (must be 0: every client's acked seqs compared with what the store holds).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import pathlib
import queue
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time

from nestor_core.lifeline import stop_process
from nestor_core.tls import identity_files

from bench_load.client import ACT_DIM, OBS_DIM, Client, run_and_report

REPO = pathlib.Path(__file__).resolve().parents[1]
BIN = pathlib.Path(sys.executable).parent
TASK_FILE = REPO / "config" / "tasks" / "kuka_track.yaml"


def initial_model(task_file: str, seed: int = 0) -> tuple[bytes, dict]:
    """Stand-in initial model (the benchmark measures ingest; no torch in the cloud process)."""
    return b"bench-load-model", {"inputs": {"obs": [1, OBS_DIM]}, "outputs": {"action": [1, ACT_DIM]}}


def _worker(robot_ids, address, certs_dir, chunk, period, window, start_at, duration, out):

    certs = pathlib.Path(certs_dir)
    clients = []
    for robot_id in robot_ids:
        creds = identity_files(certs, robot_id).channel_credentials()
        clients.append(Client(robot_id, address, creds, chunk, period, window, start_at + duration))
    run_and_report(clients, start_at, duration, out)


def client_processes(worker, clients: int, procs: int, address, certs, *stream_args, duration: float):
    """`procs` spawned processes, each running `worker` over every procs-th of robot0..robotN-1.

    Returns (robot_ids, processes (not started), results queue, start_at): the workers import and
    build their clients in the first 3 s, then all stream from `start_at` for `duration` s.
    """
    robot_ids = [f"robot{i}" for i in range(clients)]
    ctx = mp.get_context("spawn")
    results: mp.Queue = ctx.Queue()
    start_at = time.monotonic() + 3.0
    workers = [
        ctx.Process(
            target=worker,
            args=(robot_ids[i::procs], address, str(certs), *stream_args, start_at, duration, results),
            daemon=True,
        )
        for i in range(procs)
    ]
    return robot_ids, workers, results, start_at


def stop_workers(workers) -> None:
    """Join each client process (10 s), then kill what is left."""
    for w in workers:
        w.join(10)
        if w.is_alive():
            w.kill()


# ------------------------------------------------------------------------------------- cloud


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return math.nan


def _slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (t, y), per minute."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mt = sum(t for t, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((t - mt) ** 2 for t, _ in points)
    return 60.0 * sum((t - mt) * (y - my) for t, y in points) / var if var else 0.0


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100.0 * len(ordered)))]


def _start_cloud(
    work: pathlib.Path, certs: pathlib.Path, clients: int, extra: dict | None = None, name: str = "cloud"
) -> tuple[subprocess.Popen, str]:
    """A `nestor-cloud serve` process (config and log <work>/<name>.*); extra: more config fields."""
    import yaml

    config = {
        "address": "127.0.0.1:0",
        "db_path": str(work / "cloud.db"),
        "model_dir": "",
        "task_files": [str(TASK_FILE)],
        "max_workers": max(256, 2 * clients + 64),
        "grace_seconds": 2.0,
        "initial_model": "bench_load.run:initial_model",
        "schedule": {"enabled": False},
        "tls": {
            "cert": str(certs / "server.pem"),
            "key": str(certs / "server.key"),
            "client_ca": str(certs / "ca.pem"),
        },
        **(extra or {}),
    }
    (work / f"{name}.yaml").write_text(yaml.safe_dump(config))
    ready = work / f"{name}.ready.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    log = open(work / f"{name}.log", "wb")  # noqa: SIM115 - owned by the child
    proc = subprocess.Popen(
        [
            str(BIN / "nestor-cloud"),
            "serve",
            "--config",
            str(work / f"{name}.yaml"),
            "--ready-file",
            str(ready),
            "--log-level",
            "WARNING",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        cwd=REPO,
        start_new_session=True,
    )
    log.close()
    deadline = time.monotonic() + 60
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"cloud did not start: {(work / f'{name}.log').read_text()[-2000:]}")
        time.sleep(0.1)
    return proc, json.loads(ready.read_text())["address"]


def _stored(db_path: str) -> dict[str, tuple[int, int, bool]]:
    """robot -> (last_seq, transitions, seqs contiguous from 1 without drops)."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
    try:
        out = {}
        for robot_id, last_seq, transitions in conn.execute("SELECT robot_id, last_seq, transitions FROM robots"):
            expected = 1
            for first, count in conn.execute(
                "SELECT first_seq, count FROM chunks WHERE robot_id = ? ORDER BY first_seq", (robot_id,)
            ):
                if first != expected:
                    break
                expected = first + count
            out[robot_id] = (last_seq, transitions, expected - 1 == last_seq == transitions)
        return out
    finally:
        conn.close()


# ------------------------------------------------------------------------------------- main


def make_certs(work: pathlib.Path, clients: int) -> pathlib.Path:
    """`nestor-cloud certs` for robot0..robot{clients-1} in <work>/certs; returns that directory."""
    certs = work / "certs"
    subprocess.run(
        [str(BIN / "nestor-cloud"), "certs", "--out", str(certs), "--robots", str(clients)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return certs


def lost_and_broken(reports: list[dict], stored: dict) -> tuple[int, list[str]]:
    """(acked transitions the store does not hold, robots whose stored seqs are not contiguous)."""
    lost, broken = 0, []
    for r in reports:
        _, transitions, contiguous = stored.get(r["robot_id"], (0, 0, r["acked"] == 0))
        lost += max(0, r["acked"] - transitions)
        if not contiguous:
            broken.append(r["robot_id"])
    return lost, broken


def run(clients: int, duration: float, procs: int, chunk: int, period: float, window: int, out: pathlib.Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        work = pathlib.Path(tmp)
        certs = make_certs(work, clients)
        cloud, address = _start_cloud(work, certs, clients)
        robot_ids, workers, results, start_at = client_processes(
            _worker, clients, procs, address, certs, chunk, period, window, duration=duration
        )
        rss: list[tuple[float, float]] = []
        reports: list[dict] = []
        try:
            for w in workers:
                w.start()
            rss_start = _rss_mb(cloud.pid)
            time.sleep(max(0.0, start_at - time.monotonic()))
            while len(reports) < clients and time.monotonic() < start_at + duration + 150:
                rss.append((time.monotonic() - start_at, _rss_mb(cloud.pid)))
                try:
                    reports.extend(results.get(timeout=1.0))
                except queue.Empty:
                    pass
            elapsed = max(t for t, _ in rss) if rss else duration
        finally:
            stop_workers(workers)
            stop_process(cloud, signal.SIGTERM, timeout_s=30, kill_timeout_s=10)
        stored = _stored(str(work / "cloud.db"))
        cloud_log_tail = (work / "cloud.log").read_text(errors="replace")[-2000:]

    latencies = [x for r in reports for x in r["latencies"]]
    errors = [e for r in reports for e in r["errors"]]
    missing = [rid for rid in robot_ids if rid not in {r["robot_id"] for r in reports}]
    lost, broken = lost_and_broken(reports, stored)
    acked = sum(r["acked"] for r in reports)
    steady = [p for p in rss if p[0] >= duration * 0.25 and p[0] <= duration]
    result = {
        "config": run_config(clients, duration, procs, chunk, period, window, task="kuka_track"),
        "elapsed_s": round(elapsed, 1),
        "transitions_acked": acked,
        "chunks_acked": len(latencies),
        "throughput_transitions_per_s": round(acked / duration, 1),
        "throughput_chunks_per_s": round(len(latencies) / duration, 1),
        "ack_latency_ms": {
            "p50": round(1e3 * _percentile(latencies, 50), 2),
            "p99": round(1e3 * _percentile(latencies, 99), 2),
            "max": round(1e3 * max(latencies), 2) if latencies else None,
        },
        "cloud_rss_mb": {
            "start": round(rss_start, 1),
            "end": round(rss[-1][1], 1) if rss else None,
            "max": round(max(y for _, y in rss), 1) if rss else None,
            "slope_mb_per_min": round(_slope(rss), 3),
            "steady_slope_mb_per_min": round(_slope(steady), 3),
            "samples": [[round(t, 1), round(y, 1)] for t, y in rss],
        },
        "errors": len(errors) + len(missing) + sum(1 for r in reports if r["alive"]),
        "error_samples": (errors + [f"no report from {m}" for m in missing])[:20],
        "lost_transitions": lost,
        "stored_transitions": sum(t for _, t, _ in stored.values()),
        "robots_not_contiguous": broken,
        "cloud_log_tail": cloud_log_tail if errors or lost or broken else "",
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    return result


def run_config(clients: int, duration: float, procs: int, chunk: int, period: float, window: int, **extra) -> dict:
    """The "config" of a load benchmark's result: what was offered (extra: more keys)."""
    return {
        "clients": clients,
        "duration_s": duration,
        "procs": procs,
        "chunk_transitions": chunk,
        "period_s": period,
        "window": window,
        "tls": True,
        **extra,
        "offered_transitions_per_s": clients * chunk / period,
    }


def load_arguments(doc: str, quick_help: str, duration_help: str, out: str) -> argparse.ArgumentParser:
    """The options both load benchmarks take (this one and bench_load.replicas)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--clients", type=int, help="simulated robots (default 100; quick 20)")
    parser.add_argument("--duration", type=float, help=duration_help)
    parser.add_argument("--procs", type=int, help="client processes (default 4; quick 2)")
    parser.add_argument("--chunk", type=int, default=20, help="transitions per chunk")
    parser.add_argument("--period", type=float, default=0.2, help="seconds between a client's chunks")
    parser.add_argument("--window", type=int, default=8, help="unacked chunks per client")
    parser.add_argument("--out", default=str(REPO / "runs" / "bench-load" / out))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = load_arguments(
        __doc__,
        "20 clients for 45 s (the test runs this)",
        "seconds of streaming (default 120; quick 45)",
        "results.json",
    )
    args = parser.parse_args(argv)
    clients = args.clients or (20 if args.quick else 100)
    duration = args.duration or (45.0 if args.quick else 120.0)
    procs = args.procs or (2 if args.quick else 4)
    result = run(clients, duration, procs, args.chunk, args.period, args.window, pathlib.Path(args.out))
    summary = {k: v for k, v in result.items() if k not in ("cloud_rss_mb", "cloud_log_tail")}
    summary["cloud_rss_mb"] = {k: v for k, v in result["cloud_rss_mb"].items() if k != "samples"}
    print(json.dumps(summary, indent=1))
    ok = result["errors"] == 0 and result["lost_transitions"] == 0 and not result["robots_not_contiguous"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
