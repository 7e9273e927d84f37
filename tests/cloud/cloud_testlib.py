"""Test helpers: chunk builders and stand-ins for the lead's model modules.

Importable by spawn children and server subprocesses (conftest puts this directory on sys.path).

`initial_model` plays cloud_brain.learning.policy_export.initial_model; `run_round` and friends play
cloud_brain.learning.consolidation.run_round (they return the parent's bytes plus a marker).
"""

import hashlib
import os

import numpy as np
from nestor_core.experience import ExperienceBatch, to_chunk

OBS_DIM, ACT_DIM = 3, 2


def make_batch(
    robot="r1", first_seq=1, n=5, task="arm", obs_dim=OBS_DIM, act_dim=ACT_DIM, dropped_before=0, version=1
) -> ExperienceBatch:
    """A valid batch whose obs[:, 0] holds the seq numbers (so tests can check which rows were stored)."""
    seqs = np.arange(first_seq, first_seq + n)
    obs = np.zeros((n, obs_dim), np.float32)
    obs[:, 0] = seqs
    return ExperienceBatch(
        robot_id=robot,
        task=task,
        first_seq=first_seq,
        obs=obs,
        action=np.full((n, act_dim), 0.5, np.float32),
        cost=(seqs % 7).astype(np.float32),
        fast_read=np.zeros((n, act_dim), np.float32),
        slow_read=np.zeros((n, act_dim), np.float32),
        surprise=np.ones(n, np.float32),
        stamp=seqs * 0.01,
        model_versions=np.full(n, version, np.int64),
        l1_state=np.zeros((act_dim, 4), np.float32),
        dropped_before=dropped_before,
    )


def make_chunk(**kwargs):
    return to_chunk(make_batch(**kwargs))


def initial_model(task_file: str, seed: int = 0) -> tuple[bytes, dict]:
    """Fake ONNX bytes that differ per task file and seed."""
    digest = hashlib.sha256(f"{task_file}:{seed}".encode()).hexdigest()[:16]
    return f"fake-onnx:{digest}".encode(), {"inputs": {"obs": [1, 3]}, "outputs": {"action": [1, 2]}}


def run_round(request: dict) -> dict:
    """Accepts a child of the parent; reports the child's niceness and torch threads."""
    import torch
    from cloud_brain.experience.store import ExperienceStore

    store = ExperienceStore(request["db_path"])
    n = sum(len(b) for b in store.read_batches(request["task"], request["experience_from"], request["experience_to"]))
    store.close()
    return {
        "onnx": request["parent_onnx"] + b"+round",
        "accepted": True,
        "reason": "fake: always better",
        "metrics": {"transitions": n, "nice": os.nice(0), "torch_threads": torch.get_num_threads(), "pid": os.getpid()},
    }


def config_round(request: dict) -> dict:
    """Accepts a child; its metrics echo the request's round config (cloud.yaml `consolidation:`)."""
    return {
        "onnx": request["parent_onnx"] + b"+round",
        "accepted": True,
        "reason": "fake",
        "metrics": {"config": request.get("config")},
    }


def reject_round(request: dict) -> dict:
    """Rejects its child."""
    return {"onnx": request["parent_onnx"] + b"+worse", "accepted": False, "reason": "fake: worse", "metrics": {}}


def crash_round(request: dict) -> dict:
    """Raises inside the round."""
    raise RuntimeError("fake consolidation crashed")


def slow_round(request: dict) -> dict:
    """Writes its pid to $NESTOR_TEST_ROUND_PID, sleeps $NESTOR_TEST_ROUND_SECONDS, accepts a child."""
    import time

    marker = os.environ.get("NESTOR_TEST_ROUND_PID")
    if marker:
        with open(marker, "w") as f:
            f.write(str(os.getpid()))
    time.sleep(float(os.environ.get("NESTOR_TEST_ROUND_SECONDS", "0")))
    return {"onnx": request["parent_onnx"] + b"+slow", "accepted": True, "reason": "fake: slow", "metrics": {}}


def replica_round(request: dict) -> dict:
    """run_round after NESTOR_TEST_ROUND_SLEEP seconds (default 3): a round long enough to kill its replica."""
    import time

    time.sleep(float(os.environ.get("NESTOR_TEST_ROUND_SLEEP", "3")))
    return run_round(request)


def gated_round(request: dict) -> dict:
    """Metrics shaped like l2_consolidation's (losses, meta, gate); accepts every other round."""
    seed = int(request["seed"])
    accepted = seed % 2 == 0
    tried = [
        {"alpha": 1.0, "costs": {"nominal": 0.5 + seed, "payload": 0.7 + seed}, "regressed": ["payload"]},
        {"alpha": 0.5, "costs": {"nominal": 0.3 + seed, "payload": 0.4 + seed}, "regressed": []},
    ]
    return {
        "onnx": request["parent_onnx"] + (b"+better" if accepted else b"+worse"),
        "accepted": accepted,
        "reason": "fake gate",
        "metrics": {
            "training": {"loss_first": 2.0 * seed, "loss_last": 1.0 * seed, "steps": 10},
            "meta": {"l0": {"eta": 0.01 * seed, "decay": 0.9}, "l1": {"step": 0.1}},
            "gate": {
                "parent": {"nominal": 0.4 + seed, "payload": 0.5 + seed},
                "tried": tried if accepted else tried[:1],
                "accepted_alpha": 0.5 if accepted else None,
            },
            "round_seconds": 0.25,
            "note": "text is not a scalar",
        },
    }


def base_config(tmp_path, task_files: list[str], **fields):
    """The CloudConfig of the cloud and security tests: loopback, no schedule, the test providers."""
    from cloud_brain.config import CloudConfig, ScheduleConfig

    return CloudConfig(
        **{
            "address": "127.0.0.1:0",
            "db_path": str(tmp_path / "cloud.db"),
            "model_dir": "",
            "task_files": task_files,
            "schedule": ScheduleConfig(enabled=False),
            "max_workers": 256,
            "grace_seconds": 1.0,
            "initial_model": "cloud_testlib:initial_model",
            "consolidate": "cloud_testlib:run_round",
            **fields,
        }
    ).validate()
