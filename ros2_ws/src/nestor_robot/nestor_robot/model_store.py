"""The robot's model directory: verified models, their sidecars and the rolled-back versions.

Layout (unchanged since the first weight sync): `<model_dir>/<task>-v<version>.onnx`, a `.json`
sidecar beside it that marks the file complete (and holds the signed manifest, so the policy node
can re-verify it), and `bad_versions.json`, the versions rolled back on this robot. Files are
private (0o600) and durable. Plain functions, no gRPC and no rclpy: used by nestor_robot.weight_sync.
"""

from __future__ import annotations

import json
import logging
import os
import re

from nestor_core.atomic_file import write_atomic, write_atomic_many

log = logging.getLogger(__name__)

BAD_VERSIONS = "bad_versions.json"


def model_path(model_dir: str, task: str, version: int) -> str:
    return os.path.join(model_dir, f"{task}-v{version}.onnx")


def write_private(path: str, data: bytes) -> None:
    """Durable (fsync, rename, fsync the directory) and private, as the models have always been."""
    write_atomic(path, data, durable=True, mode=0o600)


def store_model(path: str, onnx: bytes, sidecar: bytes) -> None:
    """Write a model file and its sidecar durably and privately, the sidecar becoming visible last.

    One batched write (`write_atomic_many`): three fsyncs, where two `write_private` calls take
    four. After a crash a sidecar without its model is ignored (`local_models`) and anything read
    back is verified again before use.
    """
    write_atomic_many([(path, onnx), (path[: -len(".onnx")] + ".json", sidecar)], durable=True, mode=0o600)


def read_bad(model_dir: str) -> set[int]:
    """The versions rolled back here (empty when the file is missing or unreadable)."""
    try:
        with open(os.path.join(model_dir, BAD_VERSIONS)) as f:
            return {int(v) for v in json.load(f)}
    except FileNotFoundError:
        return set()
    except (OSError, ValueError, TypeError) as err:
        log.error("weight_sync: unreadable bad_versions.json (%s); starting without it", err)
        return set()


def write_bad(model_dir: str, versions: set[int]) -> None:
    write_private(os.path.join(model_dir, BAD_VERSIONS), json.dumps(sorted(versions)).encode())


def local_models(model_dir: str, task: str) -> list[dict]:
    """Complete local models of `task` (sidecar and model file present), newest first."""
    pattern = re.compile(rf"{re.escape(task)}-v(\d+)\.json")
    found = []
    for name in os.listdir(model_dir):
        match = pattern.fullmatch(name)
        if not match:
            continue
        try:
            with open(os.path.join(model_dir, name), "rb") as f:
                sidecar = json.load(f)
            info = {
                "version": int(match.group(1)),
                "path": model_path(model_dir, task, int(match.group(1))),
                "sha256": str(sidecar["sha256"]),
                "task": task,
                "parent": int(sidecar.get("parent", 0)),
            }
        except (OSError, ValueError, KeyError, TypeError) as err:
            log.error("weight_sync: ignoring unreadable sidecar %s: %s", name, err)
            continue
        if os.path.exists(info["path"]):
            found.append(info)
    return sorted(found, key=lambda i: i["version"], reverse=True)
