"""Subscriber process of the weight-push figure: K robots as threads, one line per event.

    python -m bench.push_worker sync --address A --robots r0,r1 --model-dir D [--public-key P]
    python -m bench.push_worker raw --address A --robots r0,r1

`sync` runs one robot's model path: nestor_robot.weight_sync.WeightSync (signature, sha256,
load_model, durable write, announce) and, as the policy node's loader thread does with the
announcement it receives, nestor_robot.model_loader.ModelLoader (offer: the stored file's signed
sidecar, sha256, the policy's own session; then take = the swap). A line {"stage": "stored"} is
printed when on_model is called and {"stage": "swapped"} when the policy took the model.
`raw` iterates a bare server stream of the same ModelUpdate bytes and prints on arrival
({"stage": "swapped"}). Lines: {"robot", "version", "stage", "t"} (t = time.time()).
Stops when stdin closes or after --max-seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import sys
import threading
import time

_print_lock = threading.Lock()


def emit(robot: str, version: int, stage: str = "swapped") -> None:
    line = json.dumps({"robot": robot, "version": int(version), "stage": stage, "t": time.time()})
    with _print_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def run_sync(address: str, robot: str, model_dir: str, public_key: str, stop: threading.Event) -> None:
    from nestor_core.announcements import ModelAnnouncement
    from nestor_core.manifest import load_public_key
    from nestor_robot.model_loader import ModelLoader
    from nestor_robot.weight_sync import WeightSync, WeightSyncConfig

    announcements: queue.Queue = queue.Queue()  # the DDS topic between the two robot processes

    def on_model(info: dict) -> None:
        emit(robot, info["version"], "stored")
        announcements.put(ModelAnnouncement.from_info(info).encode())

    sync = WeightSync(
        address,
        robot,
        "kuka_track",
        os.path.join(model_dir, robot),
        on_model=on_model,
        config=WeightSyncConfig(public_key_path=public_key),
    )
    loader = ModelLoader("kuka_track", load_public_key(public_key) if public_key else None)
    running = [None]

    def policy_loop() -> None:  # the policy node's loader thread, then its swap between two ticks
        while not stop.is_set():
            try:
                raw = announcements.get(timeout=0.2)
            except queue.Empty:
                continue
            loader.offer(raw, running[0])
            model = loader.take()
            if model is not None:
                running[0] = model
                loader.adopted(model.version)
                emit(robot, model.version, "swapped")

    threading.Thread(target=policy_loop, name=f"{robot}-policy", daemon=True).start()
    sync.run(stop)


def run_raw(address: str, robot: str, stop: threading.Event) -> None:
    import grpc
    from nestor_core import nestor_pb2

    channel = grpc.insecure_channel(address, options=[("grpc.max_receive_message_length", 64 << 20)])
    subscribe = channel.unary_stream(
        "/bench.RawModels/Subscribe", request_serializer=None, response_deserializer=nestor_pb2.ModelUpdate.FromString
    )
    call = subscribe(robot.encode(), timeout=900.0)
    threading.Thread(target=lambda: (stop.wait(), call.cancel()), daemon=True).start()
    try:
        for update in call:
            emit(robot, update.version)
    except grpc.RpcError:
        pass
    finally:
        channel.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=["sync", "raw"])
    parser.add_argument("--address", required=True)
    parser.add_argument("--robots", required=True)
    parser.add_argument("--model-dir", default="")
    parser.add_argument("--public-key", default="", help="PEM ed25519 key of the model signer (sync)")
    parser.add_argument("--max-seconds", type=float, default=600.0)
    args = parser.parse_args()
    stop = threading.Event()
    threads = []
    for robot in args.robots.split(","):
        target = (
            (lambda r=robot: run_sync(args.address, r, args.model_dir, args.public_key, stop))
            if args.mode == "sync"
            else (lambda r=robot: run_raw(args.address, r, stop))
        )
        thread = threading.Thread(target=target, name=robot, daemon=True)
        thread.start()
        threads.append(thread)
    # stdin closing is the stop signal; the bound keeps a forgotten worker from living on.
    watcher = threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True)
    watcher.start()
    stop.wait(args.max_seconds)
    stop.set()
    for thread in threads:
        thread.join(timeout=3.0)


if __name__ == "__main__":
    main()
