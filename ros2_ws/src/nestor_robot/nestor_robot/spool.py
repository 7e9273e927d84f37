"""A durable, bounded on-disk spool of experience chunks (SQLite, WAL, synchronous=FULL).

The policy node appends (from a background thread, never from the control tick) and the uplink
node reads and acknowledges, each in its own process, on the same file. Every transition either
reaches the cloud or is reported to it as dropped: evicted, rejected and quarantined chunks leave a
gap that the next chunk sent announces in `dropped_before`.

Sequence numbers are per robot, start at 1 and are never reused, even after acks, deletes or a
restart: the next number is persisted with every append.
"""

import contextlib
import dataclasses
import logging
import sqlite3
import threading
import time

from nestor_core import nestor_pb2
from nestor_core.experience import ExperienceBatch, to_chunk
from nestor_core.transaction import immediate_transaction

from nestor_robot import spool_schema

log = logging.getLogger(__name__)

FULL_POLICIES = ("drop_oldest", "reject_newest")


@dataclasses.dataclass(frozen=True)
class AppendResult:
    """What one `Spool.append` did.

    Attributes:
        stored: the batch is in the spool.
        evicted: transitions of older unacked chunks deleted to make room (drop_oldest).
        rejected: transitions of this batch refused (reject_newest, or a batch larger than the spool).
    """

    stored: bool
    evicted: int = 0
    rejected: int = 0

    @property
    def dropped(self) -> int:
        return self.evicted + self.rejected


class Spool:
    """Bounded durable FIFO of experience chunks for one robot.

    Thread-safe within a process (one connection behind a lock); one writer process and one reader
    process may share the file. Every write is one short IMMEDIATE transaction.

    Args:
        path: SQLite file; created if missing.
        robot_id: owner of the sequence numbers; a file made for another robot is refused.
        capacity_transitions: most unacked transitions kept on disk.
        full_policy: "drop_oldest" evicts the oldest unacked chunks to make room; "reject_newest"
            refuses the new batch. Either way the sequence numbers are consumed and the cloud is
            told about the gap.
        busy_timeout_s: longest wait for the other process's write lock.
    """

    def __init__(
        self,
        path: str,
        robot_id: str,
        capacity_transitions: int = 200_000,
        full_policy: str = "drop_oldest",
        busy_timeout_s: float = 2.0,
    ):
        if not robot_id:
            raise ValueError("robot_id: must not be empty")
        if capacity_transitions < 1:
            raise ValueError(f"capacity_transitions: must be >= 1, got {capacity_transitions}")
        if full_policy not in FULL_POLICIES:
            raise ValueError(f"full_policy: {full_policy!r} is not one of {FULL_POLICIES}")
        self.path = str(path)
        self.robot_id = robot_id
        self.capacity = int(capacity_transitions)
        self.full_policy = full_policy
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)
        try:
            self._init_schema(busy_timeout_s)
        except BaseException:
            self._db.close()
            self._db = None
            raise

    def _init_schema(self, busy_timeout_s: float) -> None:
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        with self._lock, self._transaction():
            spool_schema.create(self._db, self.robot_id)
            owner = self._meta("robot_id")
            if owner != self.robot_id:
                raise ValueError(f"robot_id: spool {self.path} belongs to {owner!r}, not {self.robot_id!r}")
            schema = int(self._meta("schema"))
            if schema != spool_schema.VERSION:
                raise ValueError(f"spool {self.path}: schema {schema}, expected {spool_schema.VERSION}")
            self.spool_id = int(self._meta("spool_id"))

    # ---------------------------------------------------------------- writer side

    def next_seq(self) -> int:
        """1 + the last sequence number ever appended (or refused) by this robot."""
        with self._lock:
            return int(self._meta("next_seq"))

    def mark_ring(self, epoch: int, through: int) -> None:
        """Durably note that recorder ring `epoch` has rows [0, through) committed (a new ring: 0)."""
        with self._lock, self._transaction():
            self._put_ring(epoch, through)

    def ring_mark(self) -> tuple[int, int] | None:
        """(epoch, rows committed) of the recorder ring this spool last heard of; None if none."""
        with self._lock:
            rows = dict(self._db.execute("SELECT key, value FROM meta WHERE key IN ('ring_epoch', 'ring_through')"))
        if "ring_epoch" not in rows:
            return None
        return int(rows["ring_epoch"]), int(rows["ring_through"])

    def append(self, batch: ExperienceBatch, ring_mark: tuple[int, int] | None = None) -> AppendResult:
        """Store one batch durably, applying the full policy when the spool is full.

        `ring_mark` = (epoch, through) of the recorder ring the batch came from, stored in the
        same transaction: a crash never leaves a batch committed but its rows still pending.

        Raises:
            ValueError: wrong robot, empty batch, first_seq != next_seq(), or a nonzero
                batch.dropped_before (the spool alone accounts for drops).
        """
        if batch.robot_id != self.robot_id:
            raise ValueError(f"robot_id: batch of {batch.robot_id!r} appended to spool of {self.robot_id!r}")
        n = len(batch)
        if n < 1:
            raise ValueError("batch: empty")
        if batch.dropped_before:
            raise ValueError("dropped_before: set by the spool, must be 0 in an appended batch")
        data = to_chunk(batch).SerializeToString()
        with self._lock, self._transaction():
            expected = int(self._meta("next_seq"))
            if batch.first_seq != expected:
                raise ValueError(f"first_seq: {batch.first_seq}, expected next_seq() = {expected}")
            self._set("next_seq", expected + n)
            if ring_mark is not None:
                self._put_ring(*ring_mark)
            depth = self._depth()
            evicted = 0
            if depth + n > self.capacity and self.full_policy == "drop_oldest" and n <= self.capacity:
                evicted = self._evict(depth + n - self.capacity)
                depth -= evicted
            if depth + n > self.capacity:
                self._add_gap(batch.first_seq, batch.last_seq, n)
                self._bump("rejected", n)
                return AppendResult(stored=False, evicted=evicted, rejected=n)
            self._db.execute(
                "INSERT INTO chunks(first_seq, last_seq, count, data) VALUES (?, ?, ?, ?)",
                (batch.first_seq, batch.last_seq, n, data),
            )
            self._bump("appended", n)
            self._bump("appended_chunks", 1)
            return AppendResult(stored=True, evicted=evicted)

    # ---------------------------------------------------------------- reader side

    def pending(self, max_chunks: int, after_seq: int = 0) -> list[nestor_pb2.ExperienceChunk]:
        """Up to max_chunks unacked chunks in seq order, starting after max(acked_through, after_seq).

        Each chunk carries `dropped_before` for the gap just before it. Unparseable rows are moved to
        the quarantine table (and counted as dropped), never skipped silently.
        """
        if max_chunks < 1:
            return []
        while True:
            chunks, bad = self._pending_once(max_chunks, after_seq)
            if bad:
                log.error("spool %s: quarantined unparseable chunk(s) at seq %s", self.path, bad)
            # Only when every row read was corrupt is there something left to look at.
            if chunks or not bad:
                return chunks

    def _pending_once(self, max_chunks: int, after_seq: int) -> tuple[list, list]:
        with self._lock, self._transaction():
            start = max(int(self._meta("acked_through")), int(after_seq))
            rows = self._db.execute(
                "SELECT first_seq, last_seq, count, data FROM chunks WHERE last_seq > ? ORDER BY first_seq LIMIT ?",
                (start, max_chunks),
            ).fetchall()
            chunks = []
            bad = []
            for first_seq, last_seq, count, data in rows:
                chunk = _parse(data, first_seq, count)
                if chunk is None:
                    self._quarantine(first_seq, last_seq, count, "unparseable")
                    bad.append(first_seq)
                else:
                    chunks.append(chunk)
            # Read the gaps after quarantining: a corrupt row widens the gap in front of its successor.
            gaps = dict(self._db.execute("SELECT before_seq, dropped FROM gaps").fetchall())
            for chunk in chunks:
                chunk.dropped_before = gaps.get(chunk.first_seq, 0)
            return chunks, bad

    def ack(self, acked_through_seq: int) -> int:
        """Forget every chunk whose seqs are all <= acked_through_seq; returns the new acked_through.

        Acks are monotonic: an older ack is ignored. An ack beyond the last seq ever appended is
        clamped to it (and logged): the cloud cannot have seqs this robot never produced.
        """
        with self._lock, self._transaction():
            current = int(self._meta("acked_through"))
            last = int(self._meta("next_seq")) - 1
            target = int(acked_through_seq)
            if target > last:
                log.warning("spool %s: ack %d beyond last seq %d, clamped", self.path, target, last)
                target = last
            if target <= current:
                return current
            self._db.execute("DELETE FROM chunks WHERE last_seq <= ?", (target,))
            # A gap is announced by the chunk at before_seq; once that seq is acked it is done, and a
            # gap partly covered by the ack (its chunks arrived before being evicted) shrinks.
            self._db.execute("DELETE FROM gaps WHERE before_seq <= ?", (target + 1,))
            for before_seq, _dropped in self._db.execute(
                "SELECT before_seq, dropped FROM gaps WHERE before_seq - dropped <= ?", (target,)
            ).fetchall():
                remaining = before_seq - 1 - target
                if remaining > 0:
                    self._db.execute("UPDATE gaps SET dropped = ? WHERE before_seq = ?", (remaining, before_seq))
                else:
                    self._db.execute("DELETE FROM gaps WHERE before_seq = ?", (before_seq,))
            self._set("acked_through", target)
            return target

    def acked_through(self) -> int:
        """Highest seq the cloud has durably stored, as last acknowledged."""
        with self._lock:
            return int(self._meta("acked_through"))

    def quarantine(self, first_seq: int, reason: str) -> int:
        """Move the chunk starting at first_seq out of the queue (the cloud refused it for good).

        Its transitions are counted as quarantined and announced as a gap. Returns how many
        transitions were quarantined (0 when no such chunk is pending).
        """
        with self._lock, self._transaction():
            row = self._db.execute(
                "SELECT first_seq, last_seq, count FROM chunks WHERE first_seq = ?", (int(first_seq),)
            ).fetchone()
            if row is None:
                return 0
            self._quarantine(*row, reason)
            return int(row[2])

    def stats(self) -> dict:
        """Counters: depth_transitions, depth_chunks, appended, acked_through, dropped and details.

        dropped = evicted + rejected + quarantined, all in transitions since the spool was created.
        """
        with self._lock:
            meta = {name: int(self._meta(name)) for name in spool_schema.COUNTERS}
            depth_transitions, depth_chunks = self._db.execute(
                "SELECT COALESCE(SUM(count), 0), COUNT(*) FROM chunks"
            ).fetchone()
            quarantined_chunks = self._db.execute("SELECT COUNT(*) FROM quarantine").fetchone()[0]
        return {
            "depth_transitions": int(depth_transitions),
            "depth_chunks": int(depth_chunks),
            "appended": meta["appended"],
            "appended_chunks": meta["appended_chunks"],
            "acked_through": meta["acked_through"],
            "next_seq": meta["next_seq"],
            "dropped": meta["evicted"] + meta["rejected"] + meta["quarantined"],
            "evicted": meta["evicted"],
            "rejected": meta["rejected"],
            "quarantined": meta["quarantined"],
            "quarantined_chunks": int(quarantined_chunks),
            "capacity": self.capacity,
        }

    def close(self) -> None:
        """Close the connection; safe to call twice."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> "Spool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---------------------------------------------------------------- internals (lock held)

    def _transaction(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        if self._db is None:
            raise ValueError(f"spool {self.path}: closed")
        return immediate_transaction(self._db)

    def _meta(self, key: str) -> str:
        if self._db is None:
            raise ValueError(f"spool {self.path}: closed")
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0]

    def _set(self, key: str, value: int) -> None:
        self._db.execute("UPDATE meta SET value = ? WHERE key = ?", (str(int(value)), key))

    def _put_ring(self, epoch: int, through: int) -> None:
        for key, value in (("ring_epoch", epoch), ("ring_through", through)):
            self._db.execute(
                "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, str(int(value))),
            )

    def _bump(self, key: str, by: int) -> None:
        self._db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + ? WHERE key = ?", (int(by), key))

    def _depth(self) -> int:
        return int(self._db.execute("SELECT COALESCE(SUM(count), 0) FROM chunks").fetchone()[0])

    def _add_gap(self, first_seq: int, last_seq: int, count: int) -> None:
        """Record that seqs first_seq..last_seq will never be sent, merging the gap in front of them."""
        before = self._db.execute("SELECT dropped FROM gaps WHERE before_seq = ?", (first_seq,)).fetchone()
        dropped = count + (before[0] if before else 0)
        if before:
            self._db.execute("DELETE FROM gaps WHERE before_seq = ?", (first_seq,))
        self._db.execute(
            "INSERT INTO gaps(before_seq, dropped) VALUES (?, ?) "
            "ON CONFLICT(before_seq) DO UPDATE SET dropped = dropped + excluded.dropped",
            (last_seq + 1, dropped),
        )

    def _evict(self, need: int) -> int:
        """Delete the oldest chunks until `need` transitions are free; returns transitions evicted."""
        evicted = 0
        for first_seq, last_seq, count in self._db.execute(
            "SELECT first_seq, last_seq, count FROM chunks ORDER BY first_seq"
        ).fetchall():
            if evicted >= need:
                break
            self._db.execute("DELETE FROM chunks WHERE first_seq = ?", (first_seq,))
            self._add_gap(first_seq, last_seq, count)
            evicted += count
        self._bump("evicted", evicted)
        return evicted

    def _quarantine(self, first_seq: int, last_seq: int, count: int, reason: str) -> None:
        self._db.execute(
            "INSERT INTO quarantine(first_seq, count, reason, at_unix, data) "
            "SELECT first_seq, count, ?, ?, data FROM chunks WHERE first_seq = ?",
            (reason, time.time(), first_seq),
        )
        self._db.execute("DELETE FROM chunks WHERE first_seq = ?", (first_seq,))
        self._add_gap(first_seq, last_seq, count)
        self._bump("quarantined", count)


def _parse(data: bytes, first_seq: int, count: int) -> nestor_pb2.ExperienceChunk | None:
    """The stored chunk, or None when the row is corrupt or disagrees with its key columns."""
    chunk = nestor_pb2.ExperienceChunk()
    try:
        chunk.ParseFromString(bytes(data))
    except Exception:  # protobuf raises DecodeError, but a corrupt row may surface otherwise
        return None
    if chunk.first_seq != first_seq or chunk.count != count:
        return None
    return chunk
