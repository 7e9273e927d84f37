"""The experience batch: the domain type behind `nestor.v1.ExperienceChunk`.

Robot, uplink and cloud all speak `ExperienceBatch`; only this module knows the wire format.
"""

import dataclasses

import numpy as np

from nestor_core import nestor_pb2
from nestor_core.tensors import TensorError, from_tensor, to_tensor

# Per-transition arrays: name -> (dtype, trailing shape kind). "obs"/"act" are resolved per task.
_FIELDS = {
    "obs": ("float32", "obs"),
    "action": ("float32", "act"),
    "cost": ("float32", None),
    "fast_read": ("float32", "act"),
    "slow_read": ("float32", "act"),
    "surprise": ("float32", None),
    "stamp": ("float64", None),
    "model_versions": ("int64", None),
}


# Sequence numbers and versions are SQLite INTEGERs (signed 64 bit) on the cloud side.
MAX_SEQ = 2**63 - 1


class ChunkError(ValueError):
    """A chunk that cannot be accepted; `reason` is a short metric label."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclasses.dataclass
class ExperienceBatch:
    """Consecutive transitions of one robot: seq first_seq .. first_seq + len - 1.

    Attributes:
        robot_id: the robot that lived these transitions.
        task: task name, selects the model lineage.
        first_seq: sequence number of row 0 (per robot, from 1, contiguous).
        obs: [n, obs_dim] observation the policy acted on.
        action: [n, act_dim] effort sent (after clipping).
        cost: [n] task cost of the tick.
        fast_read: [n, act_dim] L0 fast-memory contribution to the action.
        slow_read: [n, act_dim] L1 per-robot memory contribution to the action.
        surprise: [n] norm of the L0 prediction error.
        stamp: [n] robot clock, seconds.
        model_versions: [n] model version that produced each action.
        l1_state: L1 memory snapshot at the end of the batch (may be empty).
        dropped_before: transitions dropped by the robot just before first_seq.
        tags: free-form labels.
    """

    robot_id: str
    task: str
    first_seq: int
    obs: np.ndarray
    action: np.ndarray
    cost: np.ndarray
    fast_read: np.ndarray
    slow_read: np.ndarray
    surprise: np.ndarray
    stamp: np.ndarray
    model_versions: np.ndarray
    l1_state: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.float32))
    dropped_before: int = 0
    tags: dict = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.cost.shape[0])

    @property
    def last_seq(self) -> int:
        return self.first_seq + len(self) - 1

    def slice(self, start: int, stop: int) -> "ExperienceBatch":
        """Rows [start, stop) as a new batch with its own first_seq."""
        rows = {name: getattr(self, name)[start:stop] for name in _FIELDS}
        return dataclasses.replace(
            self, first_seq=self.first_seq + start, dropped_before=0 if start else self.dropped_before, **rows
        )


def to_chunk(batch: ExperienceBatch) -> nestor_pb2.ExperienceChunk:
    """Serialise a batch to its wire message."""
    versions = batch.model_versions
    return nestor_pb2.ExperienceChunk(
        robot_id=batch.robot_id,
        task=batch.task,
        first_seq=batch.first_seq,
        count=len(batch),
        model_version=int(versions[0]) if len(versions) else 0,
        l1_state=to_tensor(np.asarray(batch.l1_state, np.float32)),
        dropped_before=batch.dropped_before,
        tags=batch.tags,
        **{name: to_tensor(np.asarray(getattr(batch, name), dtype)) for name, (dtype, _) in _FIELDS.items()},
    )


def from_chunk(
    chunk: nestor_pb2.ExperienceChunk, obs_dim: int | None = None, act_dim: int | None = None
) -> ExperienceBatch:
    """Parse and validate a chunk; raises ChunkError(reason, message) naming the field.

    Checks: robot id and task present, first_seq >= 1, count matches every field, dtypes and
    dimensions (against obs_dim/act_dim when given), and every value finite.
    """
    if not chunk.robot_id:
        raise ChunkError("missing_robot_id", "robot_id: empty")
    if not chunk.task:
        raise ChunkError("missing_task", "task: empty")
    if chunk.first_seq < 1:
        raise ChunkError("bad_sequence", f"first_seq: must be >= 1, got {chunk.first_seq}")
    n = chunk.count
    if n < 1:
        raise ChunkError("empty_chunk", "count: must be >= 1")
    if chunk.first_seq + n - 1 > MAX_SEQ:
        raise ChunkError(
            "bad_sequence", f"first_seq: first_seq={chunk.first_seq} + count={n} - 1 exceeds the largest seq {MAX_SEQ}"
        )
    if chunk.dropped_before > MAX_SEQ:
        raise ChunkError(
            "bad_sequence", f"dropped_before: first_seq={chunk.first_seq}: {chunk.dropped_before} exceeds {MAX_SEQ}"
        )
    if chunk.model_version > MAX_SEQ:
        raise ChunkError(
            "bad_sequence", f"model_version: first_seq={chunk.first_seq}: {chunk.model_version} exceeds {MAX_SEQ}"
        )
    arrays = {}
    dims = {"obs": obs_dim, "act": act_dim}
    for name, (dtype, kind) in _FIELDS.items():
        try:
            array = from_tensor(getattr(chunk, name), name)
        except TensorError as err:
            raise ChunkError("bad_tensor", str(err)) from None
        if array.dtype.name != dtype:
            raise ChunkError("bad_dtype", f"{name}: dtype {array.dtype.name}, expected {dtype}")
        want_ndim = 1 if kind is None else 2
        if array.ndim != want_ndim or array.shape[0] != n:
            raise ChunkError(
                "bad_shape", f"{name}: shape {array.shape}, expected ({n}{', d' if kind else ''}) for count={n}"
            )
        if kind is not None:
            expected = dims[kind] if dims[kind] is not None else arrays.get(f"_{kind}")
            if expected is not None and array.shape[1] != expected:
                raise ChunkError("bad_shape", f"{name}: width {array.shape[1]}, expected {expected}")
            arrays[f"_{kind}"] = array.shape[1]
        if not np.all(np.isfinite(array)):
            raise ChunkError("non_finite", f"{name}: contains NaN or inf")
        arrays[name] = array
    try:
        l1_state = from_tensor(chunk.l1_state, "l1_state") if chunk.HasField("l1_state") else np.zeros(0, np.float32)
    except TensorError as err:
        raise ChunkError("bad_tensor", str(err)) from None
    if not np.all(np.isfinite(l1_state)):
        raise ChunkError("non_finite", "l1_state: contains NaN or inf")
    return ExperienceBatch(
        robot_id=chunk.robot_id,
        task=chunk.task,
        first_seq=int(chunk.first_seq),
        l1_state=l1_state,
        dropped_before=int(chunk.dropped_before),
        tags=dict(chunk.tags),
        **{name: arrays[name] for name in _FIELDS},
    )
