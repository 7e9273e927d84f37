"""Figure 3, ingest: durable transitions/s and MB/s through the real cloud brain vs a raw gRPC sink.

The server runs in its own process (bench.servers), the client here: one bidi Ingest stream of
pre-serialised ExperienceChunk bytes (100 transitions each, kuka dims obs 28 / act 7), at most
WINDOW chunks unacked, as the robot's uplink does. The same bytes go to the raw sink, which
stores nothing and acks each chunk at once. The cloud brain's RSS is sampled during its run.
"""

from __future__ import annotations

import json
import pathlib
import signal
import subprocess
import sys
import threading
import time

import numpy as np
from nestor_core.lifeline import stop_process

from bench.common import REPO, RssSampler, figure, make_model, pct, section_main

WINDOW = 8
CHUNK = 100
OBS_DIM, ACT_DIM = 28, 7


def build_chunks(n_chunks: int, robot_id: str = "bench0") -> list[bytes]:
    from nestor_core.experience import ExperienceBatch, to_chunk

    rng = np.random.default_rng(0)
    out = []
    for i in range(n_chunks):
        first = 1 + i * CHUNK
        batch = ExperienceBatch(
            robot_id=robot_id,
            task="kuka_track",
            first_seq=first,
            obs=rng.normal(size=(CHUNK, OBS_DIM)).astype(np.float32),
            action=rng.normal(size=(CHUNK, ACT_DIM)).astype(np.float32),
            cost=rng.random(CHUNK).astype(np.float32),
            fast_read=rng.normal(size=(CHUNK, ACT_DIM)).astype(np.float32),
            slow_read=rng.normal(size=(CHUNK, ACT_DIM)).astype(np.float32),
            surprise=rng.random(CHUNK).astype(np.float32),
            stamp=np.arange(first, first + CHUNK, dtype=np.float64) * 0.004,
            model_versions=np.ones(CHUNK, np.int64),
            l1_state=np.zeros((ACT_DIM, 17), np.float32),
        )
        out.append(to_chunk(batch).SerializeToString())
    return out


def start_server(
    kind: str, workdir: pathlib.Path, tag: str, extra: list[str] | None = None, timeout_s: float = 60.0
) -> tuple[subprocess.Popen, str, pathlib.Path]:
    ready = workdir / f"{tag}.ready.json"
    ready.unlink(missing_ok=True)
    log = open(workdir / f"{tag}.log", "wb")
    argv = [sys.executable, "-m", "bench.servers", kind, "--workdir", str(workdir), "--ready-file", str(ready)]
    proc = subprocess.Popen(
        [*argv, *(extra or [])], cwd=REPO, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )
    log.close()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ready.exists():
            return proc, json.loads(ready.read_text())["address"], ready
        if proc.poll() is not None:
            raise RuntimeError(f"{kind} server exited with {proc.returncode}; see {workdir / (tag + '.log')}")
        time.sleep(0.05)
    proc.kill()
    raise TimeoutError(f"{kind} server not ready after {timeout_s} s")


def stop_server(proc: subprocess.Popen, timeout_s: float = 15.0) -> None:
    stop_process(proc, signal.SIGTERM, timeout_s, kill_timeout_s=None)


def stream(address: str, chunks: list[bytes], deadline_s: float = 300.0) -> dict:
    """Send every chunk on one Ingest stream with a window of WINDOW; time each ack."""
    import grpc

    channel = grpc.insecure_channel(address, options=[("grpc.max_send_message_length", 64 << 20)])
    grpc.channel_ready_future(channel).result(timeout=10.0)
    call_fn = channel.stream_stream("/nestor.v1.Experience/Ingest", request_serializer=None, response_deserializer=None)
    window = threading.Semaphore(WINDOW)
    sent_at = [0.0] * len(chunks)
    stop = threading.Event()

    def requests():
        for i, data in enumerate(chunks):
            while not window.acquire(timeout=0.5):
                if stop.is_set():
                    return
            sent_at[i] = time.perf_counter()
            yield data

    latencies = []
    t0 = time.perf_counter()
    acks = 0
    try:
        for _ in call_fn(requests(), timeout=deadline_s):
            latencies.append(time.perf_counter() - sent_at[acks])
            acks += 1
            window.release()
            if acks == len(chunks):
                break
    finally:
        stop.set()
        channel.close()
    elapsed = time.perf_counter() - t0
    nbytes = sum(len(c) for c in chunks)
    return {
        "chunks": acks,
        "transitions": acks * CHUNK,
        "seconds": elapsed,
        "transitions_per_s": acks * CHUNK / elapsed,
        "mb_per_s": nbytes / elapsed / 1e6,
        "ack_ms": pct(np.asarray(latencies) * 1e3),
        "bytes": nbytes,
        "chunk_bytes": len(chunks[0]),
    }


def run(quick: bool, workdir: pathlib.Path) -> dict:
    make_model(workdir)
    n_chunks = 300 if quick else 2000
    chunks = build_chunks(n_chunks)
    detail: dict = {"window": WINDOW, "chunk_transitions": CHUNK, "n_chunks": n_chunks}

    raw_proc, raw_addr, _ = start_server("raw", workdir, "ingest_raw")
    try:
        stream(raw_addr, chunks[: min(50, n_chunks)])  # warm-up of the channel and server threads
        detail["raw"] = raw = stream(raw_addr, chunks)
    finally:
        stop_server(raw_proc)

    cloud_proc, cloud_addr, _ = _start_cloud(workdir)
    sampler = RssSampler({"cloud_brain": cloud_proc.pid}, period_s=0.5).start()
    try:
        detail["durable"] = durable = stream(cloud_addr, chunks)
    finally:
        detail["memory"] = sampler.stop()
        stop_server(cloud_proc)
    db = workdir / "ingest_cloud" / "cloud" / "nestor.db"
    detail["db_bytes"] = sum(p.stat().st_size for p in db.parent.glob("nestor.db*")) if db.exists() else None

    ratio = durable["transitions_per_s"] / raw["transitions_per_s"]
    rss = detail["memory"].get("cloud_brain", {})
    return {
        "figures": {
            "ingest_transitions_per_s": figure(
                durable["transitions_per_s"],
                raw["transitions_per_s"],
                "transitions/s",
                target="ratio >= 0.5",
                met=ratio >= 0.5,
                description="durable (CloudServer + SQLite WAL synchronous=FULL, acked) vs raw gRPC sink",
            ),
            "ingest_mb_per_s": figure(
                durable["mb_per_s"],
                raw["mb_per_s"],
                "MB/s",
                target="ratio >= 0.5",
                met=durable["mb_per_s"] / raw["mb_per_s"] >= 0.5,
            ),
            "ingest_ack_p99_ms": figure(
                durable["ack_ms"]["p99"],
                raw["ack_ms"]["p99"],
                "ms",
                p50=durable["ack_ms"]["p50"],
                limit_p50=raw["ack_ms"]["p50"],
                description=f"chunk send -> ack, window {WINDOW}",
            ),
            "cloud_brain_rss_mb": figure(
                rss.get("max_mb"),
                None,
                "MB",
                slope_mb_per_min=rss.get("slope_mb_per_min"),
                note="max RSS during the durable ingest run; no limit",
            ),
        },
        "detail": detail,
    }


def _start_cloud(workdir: pathlib.Path):
    cloud_dir = workdir / "ingest_cloud"
    cloud_dir.mkdir(parents=True, exist_ok=True)
    for name in ("model.onnx", "io_signature.json"):
        (cloud_dir / name).write_bytes((workdir / name).read_bytes())
    return start_server("cloud", cloud_dir, "server")


if __name__ == "__main__":
    section_main(run, __doc__)
