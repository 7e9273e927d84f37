"""Server processes the benchmark starts: the real cloud brain, and a raw ingest sink.

    python -m bench.servers cloud --workdir W --ready-file F [--push-period S]
    python -m bench.servers raw --ready-file F

Both bind 127.0.0.1:0, write {"address": ...} atomically to the ready file and serve until
SIGTERM/SIGINT or until --max-seconds pass (a bound, so a forgotten server stops by itself).
`cloud` with --push-period re-registers the model as a new active version every S seconds, so
weight sync has real work during the ROS target run.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import signal
import threading
import time
from concurrent import futures

from bench.common import TASK_FILE


def cloud_server(workdir: pathlib.Path, max_workers: int = 256, signing_key: str = ""):
    """A CloudServer on 127.0.0.1:0 with a real SQLite store in workdir; scheduler off.

    signing_key: PEM ed25519 private key that signs every manifest ("" = unsigned).
    """
    from cloud_brain.config import CloudConfig, ScheduleConfig
    from cloud_brain.service.server import CloudServer

    onnx = (workdir / "model.onnx").read_bytes()
    io_signature = json.loads((workdir / "io_signature.json").read_text())
    db = workdir / "cloud" / "nestor.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    config = CloudConfig(
        address="127.0.0.1:0",
        db_path=str(db),
        model_dir="",
        task_files=[str(TASK_FILE)],
        schedule=ScheduleConfig(enabled=False),
        max_workers=max_workers,
        grace_seconds=1.0,
        signing_key=signing_key,
    ).validate()
    server = CloudServer(config, initial_model_fn=lambda task_file, seed: (onnx, io_signature))
    return server, onnx, io_signature


def raw_server(max_workers: int = 64):
    """A gRPC server whose Experience.Ingest stores nothing and acks every chunk at once (bytes in, bytes out)."""
    import grpc
    from nestor_core import nestor_pb2

    ack = nestor_pb2.IngestAck(robot_id="bench", acked_through_seq=1, stored=100).SerializeToString()

    def ingest(request_iterator, context):
        for _ in request_iterator:
            yield ack

    handler = grpc.method_handlers_generic_handler(
        "nestor.v1.Experience",
        {"Ingest": grpc.stream_stream_rpc_method_handler(ingest, request_deserializer=None, response_serializer=None)},
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers),
        options=[("grpc.max_receive_message_length", 64 << 20), ("grpc.so_reuseport", 0)],
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"


def write_ready(path: str, data: dict) -> None:
    target = pathlib.Path(path)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("kind", choices=["cloud", "raw"])
    parser.add_argument("--workdir", default="")
    parser.add_argument("--ready-file", required=True)
    parser.add_argument("--push-period", type=float, default=0.0)
    parser.add_argument("--max-seconds", type=float, default=900.0)
    args = parser.parse_args()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    deadline = time.monotonic() + args.max_seconds
    pushes = []
    if args.kind == "raw":
        server, address = raw_server()
        write_ready(args.ready_file, {"address": address})
        while not stop.wait(0.2) and time.monotonic() < deadline:
            pass
        server.stop(1.0).wait()
        return
    server, onnx, io_signature = cloud_server(pathlib.Path(args.workdir))
    address = server.start()
    write_ready(args.ready_file, {"address": address})
    next_push = time.monotonic() + args.push_period
    try:
        while not stop.wait(0.1) and time.monotonic() < deadline:
            if args.push_period > 0 and time.monotonic() >= next_push:
                next_push += args.push_period
                model = server.registry.register("kuka_track", onnx, io_signature, status="active", reason="bench push")
                pushes.append({"version": model.version, "wall_time": time.time()})
    finally:
        server.stop(1.0)
        write_ready(args.ready_file, {"address": address, "pushes": pushes, "stopped": True})


if __name__ == "__main__":
    main()
