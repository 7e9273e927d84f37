"""The experience store: one SQLite file (WAL, synchronous=FULL) or one PostgreSQL database.

It is shared with the model registry (its connection and transactions; each flow owns its tables,
see store_schema).

Per robot, stored seqs are exactly 1..last_seq minus the ranges the robot declared dropped.
`append` enforces that inside one transaction, so an ack sent after `append` returns refers to
rows that survive a crash. Chunks are kept as `ExperienceChunk` bytes plus indexed columns for
queries: the bytes as received when the whole chunk is new, re-encoded only when it is trimmed to
its newly stored tail (`nestor_core.experience` is the one codec either way).

The store serialises its own access with a lock, so one instance can be shared by every gRPC
thread. Other processes (the consolidation child) open their own `ExperienceStore(path)`; WAL
lets them read while the server writes.

Backends (`cloud_brain.experience.store_db`): `path` is a SQLite file, or a `postgresql://` DSN. Both run the
same statements under the same rules: the unique key (robot_id, first_seq), the sequence check
inside one write transaction (SQLite's write lock; on PostgreSQL an advisory lock that serialises
the writers of every replica the same way), and the ack only after COMMIT returned. The schema is
versioned (`cloud_brain.experience.store_schema`) and migrated on open.
"""

from __future__ import annotations

import contextlib
import dataclasses
import pathlib
import sqlite3
import threading
import time
from collections.abc import Iterator

from nestor_core import nestor_pb2
from nestor_core.experience import ExperienceBatch, from_chunk, to_chunk
from nestor_core.transaction import immediate_transaction

from cloud_brain.experience import store_db
from cloud_brain.experience.rounds import RoundLog
from cloud_brain.experience.store_schema import migrate

_READ_PAGE = 256


NOT_ATTEMPTED = "not_attempted"  # append_many: a batch after its stream's failed one


class SequenceGapError(Exception):
    """A chunk starts after the next expected seq (plus the drops it declared): OUT_OF_RANGE."""

    reason = "sequence_gap"

    def __init__(self, robot_id: str, expected: int, got: int, dropped_before: int):
        self.robot_id = robot_id
        self.expected = expected
        self.got = got
        declared = f" (last_seq + 1 + dropped_before={dropped_before})" if dropped_before else ""
        super().__init__(f"first_seq: robot {robot_id!r} expected seq {expected}{declared}, got {got}")


@dataclasses.dataclass(frozen=True)
class AppendResult:
    """What one chunk did to the store.

    Attributes:
        robot_id: the chunk's robot.
        stored: transitions newly stored.
        duplicates: transitions of the chunk that were already stored (or declared dropped).
        dropped: transitions the chunk declared dropped and that were recorded now.
        acked_through: the robot's last_seq after the commit; every seq <= it is settled.
        row_id: store row of the new chunk, 0 when nothing was stored.
    """

    robot_id: str
    stored: int
    duplicates: int
    dropped: int
    acked_through: int
    row_id: int = 0


@dataclasses.dataclass(frozen=True)
class RobotRecord:
    """One row of the robots table (see RobotStatus in the proto)."""

    robot_id: str
    task: str
    last_seq: int
    transitions: int
    dropped: int
    duplicates: int
    model_version: int
    recent_cost: float
    first_contact_unix: float
    last_contact_unix: float


class ExperienceStore(RoundLog):
    """Durable experience and the robots' sequence state, in one SQLite file or PostgreSQL database.

    Args:
        path: SQLite file (created with its parent directory when missing), or a
            `postgresql://` DSN.
        timeout: seconds a connection waits for another process's write lock (and, on
            PostgreSQL, for the server when connecting).

    Raises:
        store_db.StoreUnavailable: the PostgreSQL server cannot be reached.
        store_db.SchemaError: the database's schema version is newer than this code's.
    """

    def __init__(self, path: str | pathlib.Path, timeout: float = 30.0):
        self.path = str(path)
        self.backend = "postgres" if store_db.is_postgres(self.path) else "sqlite"
        if self.backend == "sqlite" and self.path != ":memory:":
            pathlib.Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a commit is explicit.
        self._conn = store_db.connect(self.path, timeout=timeout)
        self.lock = threading.RLock()
        try:
            with self.lock:
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=FULL")
                self._conn.execute("PRAGMA foreign_keys=ON")
                self.schema_version = migrate(self)
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"ExperienceStore({self.backend}: {store_db.redact(self.path)})"

    def close(self) -> None:
        """Close the connection; safe to call twice."""
        with self.lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection | store_db.PostgresConnection]:
        """BEGIN IMMEDIATE ... COMMIT (durable on return) or ROLLBACK on any exception."""
        with self.lock, immediate_transaction(self._conn) as conn:
            yield conn

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        """Run a read query and return all rows."""
        with self.lock:
            return self._conn.execute(sql, params).fetchall()

    # --- writes -------------------------------------------------------------------------------

    def append(self, batch: ExperienceBatch, now: float | None = None, encoded: bytes | None = None) -> AppendResult:
        """Store the part of a validated batch that is new, enforcing the sequence invariant.

        Duplicate (wholly <= last_seq): stores nothing. Overlap: stores only the new tail.
        Contiguous (first_seq == last_seq + 1 + dropped_before): stores all and records the
        declared dropped range. Anything else raises SequenceGapError and stores nothing.

        encoded: the chunk's bytes as received (the batch decoded from them); stored as they are
        when the whole batch is new. None, or a trimmed tail: the stored part is encoded here.
        """
        now = time.time() if now is None else now
        with self.transaction() as conn:
            return self._append_in(conn, batch, now, encoded)

    def append_many(self, items: list[tuple], now: float | None = None) -> list:
        """Group commit: every batch in one transaction, each in its own savepoint; one COMMIT.

        ``items`` are (stream key, batch, encoded bytes or None) triples, in order (encoded as in
        `append`). A batch that fails (SequenceGapError, a value the store cannot hold) is rolled
        back to its savepoint alone and its exception is its outcome; the later batches of the
        same stream key are then not attempted (outcome ``NOT_ATTEMPTED``), since that stream stops
        at its first failure. The outcomes (AppendResult, exception or NOT_ATTEMPTED, in order)
        hold only once the COMMIT returned: if the transaction itself fails (the store is
        unavailable, the disk is full, COMMIT fails) the exception propagates and nothing of any
        batch is stored.
        """
        now = time.time() if now is None else now
        outcomes: list = []
        failed: set = set()
        with self.transaction() as conn:
            for i, (key, batch, encoded) in enumerate(items):
                if key in failed:
                    outcomes.append(NOT_ATTEMPTED)
                    continue
                conn.execute(f"SAVEPOINT chunk{i}")
                try:
                    outcomes.append(self._append_in(conn, batch, now, encoded))
                except (SequenceGapError, OverflowError, sqlite3.IntegrityError, sqlite3.InterfaceError) as err:
                    conn.execute(f"ROLLBACK TO SAVEPOINT chunk{i}")
                    outcomes.append(err)
                    failed.add(key)
                conn.execute(f"RELEASE SAVEPOINT chunk{i}")
        return outcomes

    def _append_in(self, conn, batch: ExperienceBatch, now: float, encoded: bytes | None) -> AppendResult:
        """append's work inside an open write transaction (see append)."""
        n = len(batch)
        row = conn.execute("SELECT last_seq FROM robots WHERE robot_id = ?", (batch.robot_id,)).fetchone()
        last = row[0] if row else 0
        if row is None:
            conn.execute(
                "INSERT INTO robots (robot_id, task, first_contact_unix, last_contact_unix) VALUES (?, ?, ?, ?)",
                (batch.robot_id, batch.task, now, now),
            )
        if batch.last_seq <= last:
            conn.execute(
                "UPDATE robots SET duplicates = duplicates + ?, last_contact_unix = ? WHERE robot_id = ?",
                (n, now, batch.robot_id),
            )
            return AppendResult(batch.robot_id, 0, n, 0, last)
        dropped = 0
        if batch.first_seq <= last:
            tail = batch.slice(last + 1 - batch.first_seq, n)
        elif batch.first_seq == last + 1 + batch.dropped_before:
            tail = batch
            dropped = batch.dropped_before
            if dropped:
                conn.execute(
                    "INSERT INTO dropped (robot_id, first_seq, count, received_unix) VALUES (?, ?, ?, ?)",
                    (batch.robot_id, batch.first_seq - dropped, dropped, now),
                )
        else:
            raise SequenceGapError(
                batch.robot_id, last + 1 + batch.dropped_before, batch.first_seq, batch.dropped_before
            )
        blob = encoded if tail is batch and encoded is not None else to_chunk(tail).SerializeToString()
        mean_cost = float(tail.cost.mean())
        (row_id,) = conn.execute(
            "INSERT INTO chunks (robot_id, task, first_seq, count, model_version, mean_cost, received_unix, chunk)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (tail.robot_id, tail.task, tail.first_seq, len(tail), int(tail.model_versions[0]), mean_cost, now, blob),
        ).fetchall()[0]
        conn.execute(
            "UPDATE robots SET task = ?, last_seq = ?, transitions = transitions + ?, dropped = dropped + ?,"
            " duplicates = duplicates + ?, model_version = ?, recent_cost = ?, last_contact_unix = ?"
            " WHERE robot_id = ?",
            (
                tail.task,
                tail.last_seq,
                len(tail),
                dropped,
                n - len(tail),
                int(tail.model_versions[-1]),
                mean_cost,
                now,
                batch.robot_id,
            ),
        )
        return AppendResult(batch.robot_id, len(tail), n - len(tail), dropped, tail.last_seq, int(row_id))

    # --- reads --------------------------------------------------------------------------------

    def max_row_id(self, task: str | None = None) -> int:
        """Largest chunk row id (of `task` when given); 0 when empty. Row ids never repeat."""
        if task is None:
            row = self.query("SELECT MAX(id) FROM chunks")
        else:
            row = self.query("SELECT MAX(id) FROM chunks WHERE task = ?", (task,))
        return int(row[0][0] or 0)

    def count_transitions(self, task: str | None = None, after_row: int = 0, up_to_row: int | None = None) -> int:
        """Transitions stored (of `task` when given) in rows (after_row, up_to_row]."""
        sql, params = "SELECT COALESCE(SUM(count), 0) FROM chunks WHERE id > ?", [after_row]
        if task is not None:
            sql += " AND task = ?"
            params.append(task)
        if up_to_row is not None:
            sql += " AND id <= ?"
            params.append(up_to_row)
        return int(self.query(sql, tuple(params))[0][0])

    def read_rows(
        self, task: str, after_row: int = 0, up_to_row: int | None = None, limit_rows: int | None = None
    ) -> Iterator[tuple[int, ExperienceBatch]]:
        """(row id, batch) of `task` in row order over (after_row, up_to_row], at most limit_rows.

        Reads in pages so the lock is never held while the caller works on a batch.
        """
        remaining = limit_rows if limit_rows is not None else -1
        cursor_row = after_row
        upper = up_to_row if up_to_row is not None else 2**62
        while remaining != 0:
            page = _READ_PAGE if remaining < 0 else min(_READ_PAGE, remaining)
            rows = self.query(
                "SELECT id, chunk FROM chunks WHERE task = ? AND id > ? AND id <= ? ORDER BY id LIMIT ?",
                (task, cursor_row, upper, page),
            )
            if not rows:
                return
            for row_id, blob in rows:
                yield row_id, from_chunk(nestor_pb2.ExperienceChunk.FromString(blob))
            cursor_row = rows[-1][0]
            if remaining > 0:
                remaining -= len(rows)

    def read_batches(
        self, task: str, after_row: int = 0, up_to_row: int | None = None, limit_rows: int | None = None
    ) -> Iterator[ExperienceBatch]:
        """Batches of `task` stored in rows (after_row, up_to_row], oldest first."""
        for _, batch in self.read_rows(task, after_row, up_to_row, limit_rows):
            yield batch

    def robot(self, robot_id: str) -> RobotRecord | None:
        """One robot's record, or None when it never sent a chunk."""
        rows = self.query(f"SELECT {_ROBOT_COLUMNS} FROM robots WHERE robot_id = ?", (robot_id,))
        return RobotRecord(*rows[0]) if rows else None

    def robots(self) -> list[RobotRecord]:
        """Every robot, by id."""
        return [RobotRecord(*row) for row in self.query(f"SELECT {_ROBOT_COLUMNS} FROM robots ORDER BY robot_id")]

    def stored_seqs(self, robot_id: str) -> list[tuple[int, int]]:
        """(first_seq, count) of every stored chunk of a robot, by seq."""
        return self.query("SELECT first_seq, count FROM chunks WHERE robot_id = ? ORDER BY first_seq", (robot_id,))

    def dropped_ranges(self, robot_id: str) -> list[tuple[int, int]]:
        """(first_seq, count) of every range the robot declared dropped, by seq."""
        return self.query("SELECT first_seq, count FROM dropped WHERE robot_id = ? ORDER BY first_seq", (robot_id,))

    def read_robot(self, robot_id: str, first_seq: int = 1, last_seq: int | None = None) -> Iterator[ExperienceBatch]:
        """A robot's stored batches by seq, trimmed to [first_seq, last_seq] (exports read this)."""
        upper = last_seq if last_seq is not None else 2**62
        cursor = first_seq
        while cursor <= upper:
            rows = self.query(
                "SELECT chunk FROM chunks WHERE robot_id = ? AND first_seq + count - 1 >= ? AND first_seq <= ?"
                " ORDER BY first_seq LIMIT ?",
                (robot_id, cursor, upper, _READ_PAGE),
            )
            if not rows:
                return
            for (blob,) in rows:
                batch = from_chunk(nestor_pb2.ExperienceChunk.FromString(blob))
                start = max(cursor, batch.first_seq) - batch.first_seq
                stop = min(upper, batch.last_seq) - batch.first_seq + 1
                yield batch.slice(start, stop) if (start, stop) != (0, len(batch)) else batch
                cursor = batch.last_seq + 1


_ROBOT_COLUMNS = (
    "robot_id, task, last_seq, transitions, dropped, duplicates, model_version, recent_cost,"
    " first_contact_unix, last_contact_unix"
)
