"""TensorBoard scalars of the consolidation rounds (``torch.utils.tensorboard``).

Runs in the consolidation worker process, which already holds torch; the gRPC server never
imports it. The scheduler sends one record per finished round (``round_record``), after the
registry gave the candidate its version. One run directory per task, ``<tensorboard_dir>/<task>``,
step = the task's round number. Tags:

- ``round/accepted`` (1 or 0), ``round/failed``, ``round/parent_version``, ``round/version``,
  ``round/experience_rows``;
- ``gate/<scenario>/v<N>``: the gate's mean cost of version N (the parent, then the accepted
  candidate) on each gate scenario;
- ``gate_tried/<scenario>/alpha_<a>``: the cost at every blend step the gate tried;
- every other numeric leaf of the round's metrics under its path: ``training/...`` (losses),
  ``meta/...`` (meta-parameters), ``l3/...``, ``round_seconds``, ...

The round's metrics dict belongs to ``l2_consolidation.run_round`` and changes with it: missing
keys are skipped, unknown ones are written generically, and a failure here never fails a round.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping
from typing import Any

_writers: dict[str, Any] = {}


def round_record(
    task: str,
    round_number: int,
    parent_version: int,
    version: int,
    accepted: bool,
    experience_from: int,
    experience_to: int,
    metrics: Mapping | None,
    reason: str = "",
    error: str = "",
) -> dict:
    """The plain dict the scheduler sends to the worker for one finished (or failed) round."""
    return {
        "task": task,
        "round": int(round_number),
        "parent_version": int(parent_version),
        "version": int(version),
        "accepted": bool(accepted),
        "experience_rows": int(experience_to) - int(experience_from),
        "metrics": dict(metrics or {}),
        "reason": reason,
        "error": error,
    }


def _leaves(tree: Any, prefix: str) -> Iterator[tuple[str, float]]:
    """(tag, value) of every finite number in nested dicts and lists (bools as 0/1)."""
    if isinstance(tree, Mapping):
        for key, value in tree.items():
            yield from _leaves(value, f"{prefix}/{key}" if prefix else str(key))
    elif isinstance(tree, (list, tuple)):
        for i, value in enumerate(tree):
            yield from _leaves(value, f"{prefix}/{i}")
    elif isinstance(tree, bool):
        yield prefix, float(tree)
    elif isinstance(tree, (int, float)) and math.isfinite(tree):
        yield prefix, float(tree)


def scalars(record: Mapping) -> dict[str, float]:
    """Tag -> value of one round record (see the module docstring)."""
    metrics = dict(record.get("metrics") or {})
    out = {
        "round/accepted": float(bool(record.get("accepted"))),
        "round/failed": float(bool(record.get("error"))),
        "round/parent_version": float(record.get("parent_version", 0)),
        "round/version": float(record.get("version", 0)),
        "round/experience_rows": float(record.get("experience_rows", 0)),
    }
    gate = metrics.pop("gate", None)
    if isinstance(gate, Mapping):
        parent = gate.get("parent")
        if isinstance(parent, Mapping):
            for scenario, cost in _leaves(parent, ""):
                out[f"gate/{scenario}/v{record.get('parent_version', 0)}"] = cost
        tried = gate.get("tried") if isinstance(gate.get("tried"), list) else []
        for attempt in tried:
            if not isinstance(attempt, Mapping) or not isinstance(attempt.get("costs"), Mapping):
                continue
            alpha = attempt.get("alpha")
            for scenario, cost in _leaves(attempt["costs"], ""):
                out[
                    f"gate_tried/{scenario}/alpha_{alpha:g}"
                    if isinstance(alpha, (int, float))
                    else f"gate_tried/{scenario}/step"
                ] = cost
            if record.get("accepted") and alpha == gate.get("accepted_alpha"):
                for scenario, cost in _leaves(attempt["costs"], ""):
                    out[f"gate/{scenario}/v{record.get('version', 0)}"] = cost
        for tag, value in _leaves({k: v for k, v in gate.items() if k not in ("parent", "tried")}, "gate"):
            out[tag] = value
    for tag, value in _leaves(metrics, ""):
        out.setdefault(tag, value)
    return out


def write_round(log_dir: str, record: Mapping) -> str:
    """Appends the round's scalars to ``<log_dir>/<task>``; returns that directory."""
    from torch.utils.tensorboard import SummaryWriter  # torch only here: the server imports this module

    run_dir = os.path.join(log_dir, str(record.get("task") or "unknown"))
    writer = _writers.get(run_dir)
    if writer is None:
        writer = _writers[run_dir] = SummaryWriter(log_dir=run_dir)
    step = int(record.get("round", 0))
    for tag, value in scalars(record).items():
        writer.add_scalar(tag, value, global_step=step)
    writer.add_text("round/reason", str(record.get("reason") or record.get("error") or ""), global_step=step)
    writer.flush()
    return run_dir


def close() -> None:
    """Flushes and closes every writer; safe to call twice."""
    while _writers:
        _writers.popitem()[1].close()
