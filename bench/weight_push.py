"""Figure 4, weight push: registry.promote of a new version -> all N robots swapped it in.

The CloudServer runs in this process and signs every manifest (ed25519, as a fleet with
`signing_key` does); each robot is one robot's model path in a worker process (bench.push_worker:
WeightSync with the public key, then the policy's ModelLoader offer + take; one process per robot
up to MAX_PROCS, threads beyond), and the moment the policy took the model counts (`all_ms`);
`stored_ms` is the moment WeightSync announced it (the figure before issue 16 measured only that).
Limit: the same bytes fanned out by a bare gRPC server stream to the same number of bare clients
(no registry, no verification, no disk), measured in the same run. `profile` times one robot's
path stage by stage in this process; `load` is the 1-min load average around each measurement.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import threading
import time
from concurrent import futures

from bench.common import REPO, error_figure, figure, make_model, pct, section_main
from bench.push_profile import profile_path
from bench.servers import cloud_server

MAX_PROCS = 8


class Arrivals:
    """Collects {"robot","version","t"} lines from the workers' stdout."""

    def __init__(self):
        self.cond = threading.Condition()
        self.by_version: dict[int, dict[str, float]] = {}  # swapped
        self.stored: dict[int, dict[str, float]] = {}

    def reader(self, pipe) -> None:
        for line in pipe:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            with self.cond:
                table = self.stored if event.get("stage") == "stored" else self.by_version
                table.setdefault(event["version"], {})[event["robot"]] = event["t"]
                self.cond.notify_all()

    def wait_all(self, version: int, n: int, timeout: float) -> dict[str, float]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.by_version.get(version, {})) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            return dict(self.by_version.get(version, {}))


def start_workers(
    mode: str,
    address: str,
    n: int,
    model_dir: pathlib.Path,
    log_dir: pathlib.Path,
    arrivals: Arrivals,
    public_key: str = "",
) -> list[subprocess.Popen]:
    robots = [f"r{i}" for i in range(n)]
    procs = min(n, MAX_PROCS)
    groups = [robots[i::procs] for i in range(procs)]
    workers = []
    for k, group in enumerate(groups):
        log = open(log_dir / f"push_{mode}_{n}_{k}.log", "wb")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.push_worker",
                mode,
                "--address",
                address,
                "--robots",
                ",".join(group),
                "--model-dir",
                str(model_dir),
                "--public-key",
                public_key,
            ],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        log.close()
        threading.Thread(target=arrivals.reader, args=(proc.stdout,), daemon=True).start()
        workers.append(proc)
    return workers


def stop_workers(workers: list[subprocess.Popen]) -> None:
    for proc in workers:
        try:
            proc.stdin.close()
        except OSError:
            pass
    for proc in workers:
        try:
            proc.wait(timeout=10.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class RawFanout:
    """Bare gRPC server stream: every subscriber gets each published byte string, nothing else."""

    def __init__(self):
        import grpc

        self.cond = threading.Condition()
        self.latest: tuple[int, bytes] | None = None
        self.closed = False

        def subscribe(request, context):
            seen = 0
            while True:
                with self.cond:
                    while not self.closed and (self.latest is None or self.latest[0] <= seen) and context.is_active():
                        self.cond.wait(0.5)
                    if self.closed or not context.is_active():
                        return
                    seen, data = self.latest
                yield data

        handler = grpc.method_handlers_generic_handler(
            "bench.RawModels",
            {
                "Subscribe": grpc.unary_stream_rpc_method_handler(
                    subscribe, request_deserializer=None, response_serializer=None
                )
            },
        )
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=128),
            options=[("grpc.max_send_message_length", 64 << 20), ("grpc.so_reuseport", 0)],
        )
        self.server.add_generic_rpc_handlers((handler,))
        self.address = f"127.0.0.1:{self.server.add_insecure_port('127.0.0.1:0')}"
        self.server.start()

    def publish(self, generation: int, data: bytes) -> None:
        with self.cond:
            self.latest = (generation, data)
            self.cond.notify_all()

    def stop(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()
        self.server.stop(1.0).wait()


def measure(
    mode: str,
    n: int,
    pushes: int,
    workdir: pathlib.Path,
    publish,
    address: str,
    first_version: int,
    public_key: str = "",
) -> dict:
    """Start n subscribers, wait for the initial version, then time `pushes` publishes."""
    arrivals = Arrivals()
    workers = start_workers(mode, address, n, workdir / f"models_{mode}_{n}", workdir, arrivals, public_key)
    latencies, stored, incomplete, load = [], [], 0, [os.getloadavg()[0]]
    try:
        got = arrivals.wait_all(first_version, n, timeout=60.0)
        if len(got) < n:
            raise RuntimeError(f"{mode} N={n}: only {len(got)} subscribers got the initial version in 60 s")
        for _ in range(pushes):
            t0, version = publish()
            got = arrivals.wait_all(version, n, timeout=10.0)
            if len(got) < n:
                incomplete += 1
                continue
            latencies.append((max(got.values()) - t0) * 1e3)
            with arrivals.cond:
                announced = arrivals.stored.get(version, {})
            if len(announced) == n:
                stored.append((max(announced.values()) - t0) * 1e3)
            time.sleep(0.2)
    finally:
        stop_workers(workers)
    load.append(os.getloadavg()[0])
    return {
        "n": n,
        "processes": min(n, MAX_PROCS),
        "all_ms": pct(latencies),
        "stored_ms": pct(stored),
        "incomplete_pushes": incomplete,
        "samples_ms": latencies,
        "load": load,
    }


def signing_keys(workdir: pathlib.Path) -> tuple[str, str]:
    """A fresh ed25519 model-signing key pair as PEM files in workdir: (private, public) paths."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private, public = workdir / "push_signing.pem", workdir / "push_signing.pub.pem"
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return str(private), str(public)


def run(quick: bool, workdir: pathlib.Path) -> dict:
    from nestor_core import nestor_pb2

    make_model(workdir)
    ns = (1, 8) if quick else (1, 8, 32)
    pushes = 4 if quick else 20
    detail: dict = {"pushes_per_n": pushes, "max_procs": MAX_PROCS}
    figures: dict = {}

    raw = RawFanout()
    onnx = (workdir / "model.onnx").read_bytes()
    generation = [1]
    raw.publish(1, nestor_pb2.ModelUpdate(version=1, task="kuka_track", onnx=onnx).SerializeToString())

    def raw_publish():
        generation[0] += 1
        data = nestor_pb2.ModelUpdate(version=generation[0], task="kuka_track", onnx=onnx).SerializeToString()
        t0 = time.time()
        raw.publish(generation[0], data)
        return t0, generation[0]

    private_key, public_key = signing_keys(workdir)
    server, onnx, io_signature = cloud_server(workdir, max_workers=256, signing_key=private_key)
    address = server.start()
    from cloud_brain.service.servicers import model_update

    pushed = model_update(server.registry.active("kuka_track")).SerializeToString()
    detail["profile"] = profile_path(pushed, public_key, workdir)

    def sync_publish():
        candidate = server.registry.register("kuka_track", onnx, io_signature, status="candidate")
        t0 = time.time()
        server.registry.promote(candidate.version)
        return t0, candidate.version

    try:
        for n in ns:
            entry = {}
            try:
                entry["raw"] = measure("raw", n, pushes, workdir, raw_publish, raw.address, generation[0])
                active = server.registry.active("kuka_track").version
                entry["sync"] = measure("sync", n, pushes, workdir, sync_publish, address, active, public_key)
                value, limit = entry["sync"]["all_ms"]["p99"], entry["raw"]["all_ms"]["p99"]
                met = (value is not None and value <= 100.0) if n == 32 else None
                figures[f"weight_push_p99_ms_n{n}"] = figure(
                    value,
                    limit,
                    "ms",
                    target="p99 <= 100 ms" if n == 32 else None,
                    met=met,
                    p50=entry["sync"]["all_ms"]["p50"],
                    limit_p50=entry["raw"]["all_ms"]["p50"],
                    stored_p99=entry["sync"]["stored_ms"]["p99"],
                    description=f"promote -> all {n} robots' policies swapped (signed, verified, stored, "
                    "re-checked) vs bare gRPC fan-out of the same bytes",
                )
            except Exception as err:  # one N failing must not hide the others
                figures[f"weight_push_p99_ms_n{n}"] = error_figure(f"{type(err).__name__}: {err}")
            detail[f"n{n}"] = entry
    finally:
        server.stop(1.0)
        raw.stop()
    if quick:
        figures["weight_push_p99_ms_n32"] = {
            "value": None,
            "limit": None,
            "ratio": None,
            "target": "p99 <= 100 ms",
            "met": None,
            "unit": "ms",
            "error": "not measured in --quick (N = 1, 8 only)",
        }
    detail["model_bytes"] = len(onnx)
    detail["onnx_sha_note"] = "every pushed version carries the same ONNX bytes (new version number)"
    return {"figures": figures, "detail": detail}


if __name__ == "__main__":
    section_main(run, __doc__)
