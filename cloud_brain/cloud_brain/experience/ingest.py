"""Ingest rules: validate one wire chunk against its task and append it to the store.

The gRPC servicer only calls `ingest_chunk`; everything testable lives here and in the store.
Errors: `ChunkError` (INVALID_ARGUMENT: malformed, NaN, wrong dims, unknown task) and
`SequenceGapError` (OUT_OF_RANGE: the chunk starts after the next expected seq). Either way
nothing of the chunk is stored.
"""

from __future__ import annotations

from collections.abc import Mapping

from nestor_core import nestor_pb2
from nestor_core.experience import ChunkError, from_chunk

from cloud_brain.experience.store import AppendResult, ExperienceStore, SequenceGapError
from cloud_brain.tasks import TaskSpec

__all__ = ["AppendResult", "ChunkError", "SequenceGapError", "ingest_chunk", "validate_chunk"]


def validate_chunk(chunk: nestor_pb2.ExperienceChunk, tasks: Mapping[str, TaskSpec] | None):
    """Decode and validate a chunk; `tasks` None accepts any task with self-consistent dims."""
    spec = None
    if tasks is not None and chunk.robot_id and chunk.task:
        spec = tasks.get(chunk.task)
        if spec is None:
            raise ChunkError("unknown_task", f"task: {chunk.task!r} is not one of {sorted(tasks)}")
    if chunk.first_seq >= 1 and chunk.dropped_before > chunk.first_seq - 1:
        # Seqs start at 1: a robot can only have dropped transitions that precede first_seq.
        raise ChunkError(
            "bad_sequence",
            f"dropped_before: first_seq={chunk.first_seq}: {chunk.dropped_before} dropped transitions cannot "
            "precede it (seqs start at 1)",
        )
    return from_chunk(chunk, spec.obs_dim if spec else None, spec.act_dim if spec else None)


def ingest_chunk(
    store: ExperienceStore,
    chunk: nestor_pb2.ExperienceChunk,
    tasks: Mapping[str, TaskSpec] | None = None,
    now: float | None = None,
    data: bytes | None = None,
) -> AppendResult:
    """Validate and durably store a chunk (only its new part); returns what was stored.

    data: the bytes `chunk` was decoded from; the store keeps them as they are unless it trims the
    chunk (None: the chunk is serialised once here).

    Raises:
        ChunkError: the chunk is malformed, non-finite, has wrong dims or an unknown task.
        SequenceGapError: the chunk starts after last_seq + 1 + dropped_before.
    """
    batch = validate_chunk(chunk, tasks)
    return store.append(batch, now=now, encoded=chunk.SerializeToString() if data is None else data)
