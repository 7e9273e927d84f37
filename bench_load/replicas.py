"""`make bench-load`, scale-out part: one replica on SQLite vs two replicas on PostgreSQL, and failover.

    python -m bench_load.replicas [--quick] [--clients 100] [--duration 60] [--out runs/bench-load/replicas.json]

Same run, same clients (bench_load.run's paced mutual-TLS Ingest streams, no ROS), three phases:

  1. `sqlite_1`: one `nestor-cloud serve` on its SQLite file, every client on it;
  2. `postgres_2`: two replicas on one PostgreSQL database (a throw-away local server,
     cloud_brain.experience.pg_local), the clients spread over both (client k lists the replicas starting
     at k % 2, as a robot's `cloud_address` would);
  3. `failover`: phase 2 again, and replica 0 is killed with SIGKILL halfway; each client fails
     over to the other replica and resends what was unacked. Reported: for every client, the time
     from the kill to its first ack after it (p50/p99/max), and the same exactly-once checks.

Every phase reports throughput, ack latency p50/p99, errors, lost transitions (acked vs stored,
seqs contiguous from 1) and the RSS of each replica. Phases 1 and 2 are the same offered load,
so their ratio is what the second replica and PostgreSQL change on this machine (2 cores: the
replicas, the database server and the clients share them).
"""

from __future__ import annotations

import json
import os
import pathlib
import queue
import signal
import sys
import tempfile
import time

from nestor_core.lifeline import stop_process
from nestor_core.tls import identity_files

from bench_load.client import Client, run_and_report
from bench_load.run import (
    _percentile,
    _rss_mb,
    _start_cloud,
    client_processes,
    load_arguments,
    lost_and_broken,
    make_certs,
    run_config,
    stop_workers,
)


class FailoverClient(Client):
    """A bench client with several replica addresses: on a stream error it moves to the next one."""

    def __init__(self, robot_id, addresses, creds, chunk, period, window, end):
        super().__init__(robot_id, addresses[0], creds, chunk, period, window, end)
        self.addresses = addresses
        self.ack_times: list[float] = []

    def on_ack(self, through: int, now: float) -> None:
        with self.cond:
            self.ack_times.append(now)
        super().on_ack(through, now)

    def run(self):
        import grpc

        index = 0
        while time.monotonic() < self.end:
            channel = grpc.secure_channel(self.addresses[index], self.creds)
            try:
                self.stream(channel)
                return
            except grpc.RpcError as err:
                self.errors.append(f"{err.code().name}: {err.details()}")
                index = (index + 1) % len(self.addresses)  # the next replica, at once
            finally:
                channel.close()


def _worker(robot_ids, addresses, certs_dir, chunk, period, window, start_at, duration, out):

    certs = pathlib.Path(certs_dir)
    clients = []
    for robot_id in robot_ids:
        k = int(robot_id.removeprefix("robot"))
        order = addresses[k % len(addresses) :] + addresses[: k % len(addresses)]
        creds = identity_files(certs, robot_id).channel_credentials()
        clients.append(FailoverClient(robot_id, order, creds, chunk, period, window, start_at + duration))
    run_and_report(clients, start_at, duration, out, ack_times=lambda c: c.ack_times, first=lambda c: c.addresses[0])


def _stored(target: str) -> dict[str, tuple[int, int, bool]]:
    """robot -> (last_seq, transitions, seqs contiguous from 1 without drops), from either backend."""
    from cloud_brain.experience.store import ExperienceStore

    store = ExperienceStore(target)
    try:
        out = {}
        for record in store.robots():
            expected = 1
            for first, count in store.stored_seqs(record.robot_id):
                if first != expected:
                    break
                expected = first + count
            out[record.robot_id] = (
                record.last_seq,
                record.transitions,
                expected - 1 == record.last_seq == record.transitions,
            )
        return out
    finally:
        store.close()


def _phase(
    name, work, certs, target, store_cfg, replicas, clients, duration, procs, chunk, period, window, kill_at=None
) -> dict:
    """One phase: start the replicas, stream, (maybe kill replica 0), stop, check the store."""
    clouds = []
    try:
        for i in range(replicas):
            clouds.append(_start_cloud(work, certs, clients, extra=store_cfg, name=f"{name}-r{i}"))
        addresses = [address for _, address in clouds]
        _, workers, results, start_at = client_processes(
            _worker, clients, procs, addresses, certs, chunk, period, window, duration=duration
        )
        rss = {i: [] for i in range(replicas)}
        reports: list[dict] = []
        killed_at = None
        try:
            for w in workers:
                w.start()
            time.sleep(max(0.0, start_at - time.monotonic()))
            while len(reports) < clients and time.monotonic() < start_at + duration + 150:
                now = time.monotonic()
                for i, (proc, _) in enumerate(clouds):
                    if proc.poll() is None:
                        rss[i].append(_rss_mb(proc.pid))
                if kill_at is not None and killed_at is None and now - start_at >= kill_at:
                    os.kill(clouds[0][0].pid, signal.SIGKILL)
                    killed_at = time.monotonic()
                try:
                    reports.extend(results.get(timeout=1.0))
                except queue.Empty:
                    pass
        finally:
            stop_workers(workers)
    finally:
        for proc, _ in clouds:
            stop_process(proc, signal.SIGTERM, timeout_s=30, kill_timeout_s=10)
    stored = _stored(target)
    latencies = [x for r in reports for x in r["latencies"]]
    errors = [e for r in reports for e in r["errors"]]
    lost, broken = lost_and_broken(reports, stored)
    acked = sum(r["acked"] for r in reports)
    out = {
        "replicas": replicas,
        "store": "postgres" if target.startswith("postgresql://") else "sqlite",
        "throughput_transitions_per_s": round(acked / duration, 1),
        "transitions_acked": acked,
        "stored_transitions": sum(t for _, t, _ in stored.values()),
        "ack_latency_ms": {
            "p50": round(1e3 * _percentile(latencies, 50), 2),
            "p99": round(1e3 * _percentile(latencies, 99), 2),
        },
        "errors": sum(1 for r in reports if r["alive"]) + (clients - len(reports)),
        "stream_errors": len(errors),
        "error_samples": errors[:5],
        "lost_transitions": lost,
        "robots_not_contiguous": broken,
        "replica_rss_mb": [
            {"max": round(max(v), 1) if v else None, "end": round(v[-1], 1) if v else None} for v in rss.values()
        ],
    }
    if kill_at is not None:
        if killed_at is None:
            out["failover_s"] = None
        else:
            gaps = []
            for r in reports:
                after = [t for t in r["ack_times"] if t > killed_at]
                gaps.append(after[0] - killed_at if after else float("inf"))
            on_killed = [g for g, r in zip(gaps, reports, strict=True) if r["first"] == clouds[0][1]]
            out["failover_s"] = {
                "p50": round(_percentile(gaps, 50), 3),
                "p99": round(_percentile(gaps, 99), 3),
                "max": round(max(gaps), 3),
                "p99_robots_on_killed_replica": round(_percentile(on_killed, 99), 3),
                "robots_on_killed_replica": len(on_killed),
                "never_acked_again": sum(1 for g in gaps if g == float("inf")),
            }
            # Only the robots streaming to the killed replica had anything to fail over; a robot
            # that just moved resends its unacked chunks, which the store acks as duplicates.
            out["stream_errors_expected"] = "one per robot on the killed replica"
    return out


def run(
    clients: int, duration: float, procs: int, chunk: int, period: float, window: int, out_path: pathlib.Path
) -> dict:
    from cloud_brain.experience.pg_local import PostgresServer

    with tempfile.TemporaryDirectory(prefix="bench-replicas-") as tmp:
        work = pathlib.Path(tmp)
        certs = make_certs(work, clients)
        pg = PostgresServer().start()  # its own temp dir: the postgres user cannot enter `work`
        try:
            args = (clients, duration, procs, chunk, period, window)
            phases = {
                "sqlite_1": _phase(
                    "sqlite", work, certs, str(work / "sqlite.db"), {"db_path": str(work / "sqlite.db")}, 1, *args
                ),
            }
            dsn = pg.create_database("bench_pg2")
            phases["postgres_2"] = _phase(
                "pg2", work, certs, dsn, {"store": {"backend": "postgres", "dsn": dsn}}, 2, *args
            )
            dsn = pg.create_database("bench_failover")
            phases["failover"] = _phase(
                "failover",
                work,
                certs,
                dsn,
                {"store": {"backend": "postgres", "dsn": dsn}},
                2,
                *args,
                kill_at=duration / 2,
            )
        finally:
            pg.cleanup()
    base = phases["sqlite_1"]["throughput_transitions_per_s"]
    result = {
        "config": run_config(clients, duration, procs, chunk, period, window, cores=os.cpu_count()),
        "phases": phases,
        "postgres_2_vs_sqlite_1_throughput": round(phases["postgres_2"]["throughput_transitions_per_s"] / base, 3)
        if base
        else None,
        "failover_p99_s": (phases["failover"].get("failover_s") or {}).get("p99"),
        "failover_target_p99_s": 2.0,
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=1))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = load_arguments(
        __doc__, "20 clients, 20 s per phase", "seconds of streaming per phase (default 60; quick 20)", "replicas.json"
    )
    args = parser.parse_args(argv)
    clients = args.clients or (20 if args.quick else 100)
    duration = args.duration or (20.0 if args.quick else 60.0)
    procs = args.procs or (2 if args.quick else 4)
    result = run(clients, duration, procs, args.chunk, args.period, args.window, pathlib.Path(args.out))
    print(json.dumps(result, indent=1))
    ok = all(
        p["errors"] == 0 and p["lost_transitions"] == 0 and not p["robots_not_contiguous"]
        for p in result["phases"].values()
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
