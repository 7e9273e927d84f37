"""One robot's model path, stage by stage, timed in one process (the weight-push section's profile).

The stages a pushed version goes through on a robot, in order: receive (decode the ModelUpdate),
the ed25519 signature over its manifest, sha256, onnx.checker, weight sync's gate session and
smoke run, the durable store, and the policy's re-check (signed sidecar, sha256, its optimized
session). Each is timed alone, median of `repeats`, with the old path's costs beside the new ones:
`store_two_writes` is the two write_private calls the store replaced, `gate_session_optimized`
the optimized session weight sync built before issue 16.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import statistics
import time


def _median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return round(statistics.median(times), 3)


def profile_path(update_bytes: bytes, public_key_path: str, workdir: pathlib.Path, repeats: int = 15) -> dict:
    """Median ms per stage of one robot's path for this serialized, signed ModelUpdate."""
    import onnx
    from nestor_core import nestor_pb2, policy_model
    from nestor_core.manifest import load_public_key, sidecar_fields, verify
    from nestor_robot.model_loader import ModelLoader
    from nestor_robot.model_store import store_model, write_private

    key = load_public_key(public_key_path)
    update = nestor_pb2.ModelUpdate.FromString(update_bytes)
    data, digest = bytes(update.onnx), hashlib.sha256(update.onnx).hexdigest()
    directory = workdir / "push_profile"
    directory.mkdir(exist_ok=True)
    path = str(directory / f"{update.task}-v{update.version}.onnx")
    sidecar = json.dumps(
        {"version": update.version, "sha256": digest, **sidecar_fields(update.manifest, update.signature)}
    ).encode()
    proto = onnx.load_from_string(data)
    loader = ModelLoader(update.task, key)
    stages = {
        "receive_decode": lambda: nestor_pb2.ModelUpdate.FromString(update_bytes),
        "signature_ed25519": lambda: verify(
            update.manifest, update.signature, key, sha256=digest, version=update.version, task=update.task
        ),
        "sha256": lambda: hashlib.sha256(data).hexdigest(),
        "onnx_checker": lambda: onnx.checker.check_model(proto),
        "gate_session": lambda: policy_model._session(data, False),
        "gate_session_optimized": lambda: policy_model._session(data),
        "gate_load_model": lambda: policy_model.load_model(data, digest, update.version, optimize=False),
        "store_batched_fsync": lambda: store_model(path, data, sidecar),
        "store_two_writes": lambda: (write_private(path, data), write_private(path[:-5] + ".json", sidecar)),
        "policy_verify": lambda: loader.verify(path, data, digest, update.version),
    }
    out: dict = {"model_bytes": len(data), "repeats": repeats, "median_ms": {}}
    for name, fn in stages.items():
        try:
            out["median_ms"][name] = _median_ms(fn, repeats)
        except Exception as err:  # an older tree (the before run) may lack a stage
            out["median_ms"][name] = None
            out.setdefault("errors", {})[name] = f"{type(err).__name__}: {err}"
    out["load"] = os.getloadavg()[0]
    return out
