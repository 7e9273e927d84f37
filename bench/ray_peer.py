"""Peers on Ray (the RLlib pattern), same run as the nestor figures they stand beside.

- Ingest peer: the same serialised ExperienceChunk bytes as bench.ingest (100 transitions each,
  window of 8 unacked) sent to one Ray actor that parses and validates each chunk (from_chunk) and
  keeps it in memory: no durability, no network stack beyond Ray's own.
- Weight-push peer: the same ONNX bytes put once with ray.put; N actors (1, 8, 32) each get the
  object and build an onnxruntime session (plus one smoke inference) from it; the time from the
  put to the last actor's reply, p99 over the pushes. No signature, no disk.

A private local cluster on 127.0.0.1 (ray.init(num_cpus=2, include_dashboard=False), usage stats
off). This process imports neither torch nor rclpy.
"""

from __future__ import annotations

import os
import pathlib
import time

import numpy as np

from bench.common import figure, make_model, pct, section_main

WINDOW = 8


def _init_ray():
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    ray.init(
        num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False, configure_logging=False
    )
    return ray


def ingest_peer(ray, chunks: list[bytes]) -> dict:
    @ray.remote(num_cpus=0)
    class Sink:
        def __init__(self):
            self.batches = []

        def add(self, data: bytes) -> int:
            from nestor_core import nestor_pb2
            from nestor_core.experience import from_chunk

            batch = from_chunk(nestor_pb2.ExperienceChunk.FromString(data))
            self.batches.append(batch)
            return batch.last_seq

        def count(self) -> int:
            return sum(len(b) for b in self.batches)

    sink = Sink.remote()
    ray.get(sink.add.remote(chunks[0]))  # warm-up: actor started, imports done
    sent_at, latencies, inflight = {}, [], []
    t0 = time.perf_counter()
    for data in chunks[1:]:
        if len(inflight) >= WINDOW:
            done, inflight = ray.wait(inflight, num_returns=1)
            latencies.append(time.perf_counter() - sent_at.pop(done[0]))
        ref = sink.add.remote(data)
        sent_at[ref] = time.perf_counter()
        inflight.append(ref)
    while inflight:
        done, inflight = ray.wait(inflight, num_returns=1)
        latencies.append(time.perf_counter() - sent_at.pop(done[0]))
    elapsed = time.perf_counter() - t0
    transitions = ray.get(sink.count.remote()) - 100
    ray.kill(sink)
    return {
        "transitions": transitions,
        "seconds": elapsed,
        "transitions_per_s": transitions / elapsed,
        "ack_ms": pct(np.asarray(latencies) * 1e3),
    }


def push_peer(ray, onnx: bytes, n: int, pushes: int) -> dict:
    @ray.remote(num_cpus=0)
    class Robot:
        def load(self, data: bytes) -> int:  # a top-level ObjectRef argument arrives resolved
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
            types = {
                "tensor(float)": np.float32,
                "tensor(double)": np.float64,
                "tensor(int64)": np.int64,
                "tensor(int32)": np.int32,
                "tensor(bool)": np.bool_,
            }
            feed = {
                i.name: np.zeros([d if isinstance(d, int) else 1 for d in i.shape], types.get(i.type, np.float32))
                for i in session.get_inputs()
            }
            session.run(None, feed)  # the smoke inference
            self.session = session
            return len(data)

    robots = [Robot.remote() for _ in range(n)]
    ray.get([r.load.remote(ray.put(onnx)) for r in robots])  # warm-up: actors up, ORT imported
    samples = []
    for _ in range(pushes):
        t0 = time.perf_counter()
        ref = ray.put(onnx)
        ray.get([r.load.remote(ref) for r in robots])
        samples.append((time.perf_counter() - t0) * 1e3)
        time.sleep(0.1)
    for r in robots:
        ray.kill(r)
    return {"n": n, "all_ms": pct(samples), "samples_ms": samples}


def run(quick: bool, workdir: pathlib.Path) -> dict:
    from bench.ingest import build_chunks

    onnx_path, _ = make_model(workdir)
    onnx = onnx_path.read_bytes()
    n_chunks = 300 if quick else 2000
    chunks = build_chunks(n_chunks + 1)
    ns = (1, 8) if quick else (1, 8, 32)
    pushes = 4 if quick else 20
    ray = _init_ray()
    detail: dict = {"window": WINDOW, "n_chunks": n_chunks, "model_bytes": len(onnx), "pushes_per_n": pushes}
    figures: dict = {}
    try:
        detail["ingest"] = ing = ingest_peer(ray, chunks)
        figures["ray_ingest_transitions_per_s"] = figure(
            ing["transitions_per_s"],
            None,
            "transitions/s",
            ack_p50_ms=ing["ack_ms"]["p50"],
            ack_p99_ms=ing["ack_ms"]["p99"],
            description=f"the same chunks into one Ray actor in memory (from_chunk, window {WINDOW}); no durability",
        )
        for n in ns:
            detail[f"push_n{n}"] = row = push_peer(ray, onnx, n, pushes)
            figures[f"ray_push_p99_ms_n{n}"] = figure(
                row["all_ms"]["p99"],
                None,
                "ms",
                p50=row["all_ms"]["p50"],
                description=f"ray.put of the ONNX bytes -> all {n} actors built an ORT session and ran it once",
            )
    finally:
        ray.shutdown()
    return {"figures": figures, "detail": detail}


if __name__ == "__main__":
    section_main(run, __doc__)
