"""Subscriber process of the weight-push figure: K model subscribers as threads, one line per arrival.

    python -m bench.push_worker sync --address A --robots r0,r1 --model-dir D
    python -m bench.push_worker raw --address A --robots r0,r1

`sync` runs nestor_robot.weight_sync.WeightSync (verify with load_model, durable write, announce);
a line is printed when on_model is called. `raw` iterates a bare server stream of the same
ModelUpdate bytes and prints on arrival. Lines: {"robot", "version", "t"} (t = time.time()).
Stops when stdin closes or after --max-seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time

_print_lock = threading.Lock()


def emit(robot: str, version: int) -> None:
    line = json.dumps({"robot": robot, "version": int(version), "t": time.time()})
    with _print_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def run_sync(address: str, robot: str, model_dir: str, stop: threading.Event) -> None:
    from nestor_robot.weight_sync import WeightSync

    sync = WeightSync(
        address, robot, "kuka_track", os.path.join(model_dir, robot), on_model=lambda info: emit(robot, info["version"])
    )
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
    parser.add_argument("--max-seconds", type=float, default=600.0)
    args = parser.parse_args()
    stop = threading.Event()
    threads = []
    for robot in args.robots.split(","):
        target = (
            (lambda r=robot: run_sync(args.address, r, args.model_dir, stop))
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
