"""Group commit of experience chunks: the chunks queued by every stream, one transaction, one fsync.

Each ingest stream hands its validated chunks to `GroupCommit.append`, which returns only after
the COMMIT that stored them returned (the ack comes after that, as before). There is no committer
thread: the first caller that finds no commit running becomes the leader, takes everything
queued (its own chunks and those of every other stream, in arrival order, up to `max_batch`) and
commits it with `ExperienceStore.append_many`; callers that arrive while a commit runs queue their
chunks and wait, and when that commit ends the owner of the oldest queued chunk becomes the next
leader. So an idle server commits a lone chunk at once, exactly as a per-chunk commit would (no
thread hop, no timer), and under load one fsync covers every chunk that arrived during the
previous one.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Sequence

from nestor_core.experience import ExperienceBatch

from cloud_brain.experience.store import ExperienceStore

__all__ = ["GroupCommit"]


class _Call:
    """One append() call: its chunks, and the event its thread waits on."""

    __slots__ = ("event", "left")

    def __init__(self, n: int):
        self.event = threading.Event()
        self.left = n


class _Item:
    __slots__ = ("call", "key", "batch", "outcome")

    def __init__(self, call: _Call, key: Hashable, batch: ExperienceBatch):
        self.call, self.key, self.batch, self.outcome = call, key, batch, None


class GroupCommit:
    """Leader/follower group commit over one ExperienceStore (thread-safe; share one per store).

    Args:
        store: The store whose `append_many` commits each group.
        max_batch: Most chunks in one transaction (bounds the time a commit holds the write lock).
    """

    def __init__(self, store: ExperienceStore, max_batch: int = 256):
        if max_batch < 1:
            raise ValueError(f"max_batch: must be >= 1, got {max_batch}")
        self.store = store
        self.max_batch = max_batch
        self._lock = threading.Lock()
        self._queue: list[_Item] = []
        self._busy = False
        self.commits = 0  # transactions committed (or failed) so far
        self.chunks = 0  # chunks they held

    def append(
        self, key: Hashable, batches: Sequence[tuple[ExperienceBatch, bytes | None]], now: float | None = None
    ) -> list:
        """Durably store `batches` (one stream's, in order); returns one outcome per batch.

        Each is (batch, the bytes it was decoded from or None), as `ExperienceStore.append` takes them.

        An outcome is the AppendResult, or the exception that batch raised (SequenceGapError, a
        value the store cannot hold), or `store.NOT_ATTEMPTED` for a batch after one of the
        same key that failed. Every outcome is final: the transaction that held it committed.

        Raises:
            Exception: the transaction holding these batches failed as a whole (the store is
                unavailable, the disk is full, COMMIT failed): nothing of them is stored.
        """
        if not batches:
            return []
        call = _Call(len(batches))
        items = [_Item(call, key, batch) for batch in batches]
        with self._lock:
            self._queue.extend(items)
        while True:
            with self._lock:
                if call.left == 0:
                    break
                if self._busy:
                    call.event.clear()
                    take = None
                else:
                    self._busy = True
                    take, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
            if take is None:
                call.event.wait()
                continue
            self._commit(take, now)
        outcomes = [item.outcome for item in items]
        for outcome in outcomes:
            if isinstance(outcome, _GroupFailed):
                raise outcome.error
        return outcomes

    def _commit(self, take: list[_Item], now: float | None) -> None:
        """Commit one group (the caller is the leader); always hands the lead on."""
        try:
            outcomes = self.store.append_many([(item.key, *item.batch) for item in take], now=now)
        except BaseException as err:  # the whole transaction failed: every chunk of it gets the error
            outcomes = [_GroupFailed(err)] * len(take)
        with self._lock:
            self._busy = False
            self.commits += 1
            self.chunks += len(take)
            wake = set()
            for item, outcome in zip(take, outcomes, strict=True):
                item.outcome = outcome
                item.call.left -= 1
                if item.call.left == 0:
                    wake.add(item.call)
            if self._queue:
                wake.add(self._queue[0].call)  # the next leader
        for call in wake:
            call.event.set()


class _GroupFailed:
    """Outcome of a chunk whose whole transaction failed (re-raised in its own caller's thread)."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException):
        self.error = error
