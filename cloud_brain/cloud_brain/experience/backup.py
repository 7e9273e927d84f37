"""Online backup and verified restore of the cloud's SQLite file.

`backup` copies a live database (the server may be ingesting) through SQLite's online backup API
in one step, i.e. inside one read transaction: the copy is the database as of one commit, never
half of a chunk. `verify` checks a file the way a restore must: integrity_check, the sequence
invariant of every robot (stored chunks plus declared drops cover exactly 1..last_seq, once each),
the robots table's counters, and that every stored chunk parses. `restore` verifies the backup,
copies it next to the target, verifies the copy and moves it into place atomically.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import sqlite3

from nestor_core import nestor_pb2
from nestor_core.experience import from_chunk

from cloud_brain.experience.db_lock import DatabaseInUse, check_free


class BackupError(Exception):
    """A backup or restore that cannot be done, or a database that fails verification."""


@dataclasses.dataclass
class Verification:
    """What `verify` found.

    Attributes:
        path: the file checked.
        integrity: PRAGMA integrity_check result ("ok" when sound).
        counts: rows per table.
        transitions: transitions stored.
        robots: robots checked.
        problems: every violation found; empty = consistent.
    """

    path: str
    integrity: str
    counts: dict[str, int]
    transitions: int
    robots: int
    problems: list[str]

    @property
    def ok(self) -> bool:
        return self.integrity == "ok" and not self.problems


_TABLES = ("robots", "chunks", "dropped", "models", "rounds", "bad_models")


def backup(db_path: str, out_path: str) -> Verification:
    """Copy the live database `db_path` to `out_path` (must not exist) and verify the copy."""
    if not os.path.isfile(db_path):
        raise BackupError(f"db: no such file {db_path!r}")
    out = pathlib.Path(out_path)
    if out.exists():
        raise BackupError(f"out: {out_path} exists; refusing to overwrite it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    tmp.unlink(missing_ok=True)
    # A read-only connection of its own: the server's writers are never blocked (WAL).
    source = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
    try:
        target = sqlite3.connect(tmp)
        try:
            source.backup(target)  # pages=-1: one step, one consistent snapshot
            target.execute("PRAGMA journal_mode=DELETE")
        finally:
            target.close()
    finally:
        source.close()
    report = verify(str(tmp))
    if not report.ok:
        raise BackupError(f"backup of {db_path} failed verification: {_summary(report)}")
    os.replace(tmp, out)
    report.path = str(out)
    return report


def restore(backup_path: str, db_path: str, force: bool = False) -> Verification:
    """Verify `backup_path`, then install it as `db_path` (which must not be in use).

    Raises:
        BackupError: the backup is not a database or fails verification, a running server holds
            db_path (its `serve` lock, see db_lock), or db_path exists and force is False.
    """
    if not os.path.isfile(backup_path):
        raise BackupError(f"from: no such file {backup_path!r}")
    try:
        report = verify(backup_path)
    except sqlite3.DatabaseError as err:
        raise BackupError(f"from: {backup_path} is not a nestor database ({err})") from None
    if not report.ok:
        raise BackupError(f"from: {backup_path} failed verification: {_summary(report)}")
    target = pathlib.Path(db_path)
    try:
        check_free(db_path)  # --force included: never pull a database from under a running server
    except DatabaseInUse as err:
        raise BackupError(str(err)) from None
    if target.exists() and not force:
        raise BackupError(f"db: {db_path} exists; stop the server and pass --force to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".restoring")
    tmp.unlink(missing_ok=True)
    source = sqlite3.connect(f"file:{backup_path}?mode=ro", uri=True)
    try:
        dest = sqlite3.connect(tmp)
        try:
            source.backup(dest)
        finally:
            dest.close()
    finally:
        source.close()
    copied = verify(str(tmp))
    if not copied.ok or copied.counts != report.counts:
        raise BackupError(f"restore: the copy differs from the backup: {_summary(copied)}")
    # The old file's WAL and shared memory belong to the old database: never replay them onto this one.
    for suffix in ("-wal", "-shm"):
        pathlib.Path(str(target) + suffix).unlink(missing_ok=True)
    os.replace(tmp, target)
    copied.path = str(target)
    return copied


def verify(db_path: str) -> Verification:
    """Check a database file without changing it (see the module docstring)."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        integrity = "; ".join(row[0] for row in conn.execute("PRAGMA integrity_check").fetchall())
        existing = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        counts = {t: int(conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]) for t in _TABLES if t in existing}
        problems = [f"table {t}: missing" for t in ("robots", "chunks", "dropped", "models") if t not in existing]
        if problems:
            return Verification(db_path, integrity, counts, 0, 0, problems)
        transitions = int(conn.execute("SELECT COALESCE(SUM(count), 0) FROM chunks").fetchone()[0])
        robots = conn.execute("SELECT robot_id, last_seq, transitions, dropped FROM robots").fetchall()
        for robot_id, last_seq, stored, dropped in robots:
            problems += _check_robot(conn, robot_id, last_seq, stored, dropped)
        orphans = conn.execute("SELECT COUNT(*) FROM chunks WHERE robot_id NOT IN (SELECT robot_id FROM robots)")
        if (n := orphans.fetchone()[0]) > 0:
            problems.append(f"chunks: {n} rows of robots missing from the robots table")
        return Verification(db_path, integrity, counts, transitions, len(robots), problems)
    finally:
        conn.close()


def _check_robot(conn: sqlite3.Connection, robot_id: str, last_seq: int, stored: int, dropped: int) -> list[str]:
    ranges = [
        (f, c, "chunk") for f, c in conn.execute("SELECT first_seq, count FROM chunks WHERE robot_id = ?", (robot_id,))
    ]
    ranges += [
        (f, c, "dropped")
        for f, c in conn.execute("SELECT first_seq, count FROM dropped WHERE robot_id = ?", (robot_id,))
    ]
    ranges.sort()
    problems = []
    expected = 1
    for first, count, kind in ranges:
        if first != expected:
            problems.append(f"robot {robot_id!r}: {kind} at seq {first}, expected {expected}")
        expected = max(expected, first + count)
    if expected - 1 != last_seq:
        problems.append(f"robot {robot_id!r}: seqs cover 1..{expected - 1}, robots.last_seq is {last_seq}")
    in_chunks = sum(c for _, c, kind in ranges if kind == "chunk")
    in_drops = sum(c for _, c, kind in ranges if kind == "dropped")
    if in_chunks != stored or in_drops != dropped:
        problems.append(
            f"robot {robot_id!r}: {in_chunks} stored/{in_drops} dropped, robots row says {stored}/{dropped}"
        )
    for first, count, blob in conn.execute(
        "SELECT first_seq, count, chunk FROM chunks WHERE robot_id = ?", (robot_id,)
    ):
        try:
            batch = from_chunk(nestor_pb2.ExperienceChunk.FromString(blob))
        except Exception as err:  # any parse failure (ChunkError, DecodeError) is corruption
            problems.append(f"robot {robot_id!r}: chunk at seq {first} does not parse: {err}")
            continue
        if batch.first_seq != first or len(batch) != count:
            problems.append(f"robot {robot_id!r}: chunk at seq {first} holds seqs {batch.first_seq}+{len(batch)}")
    return problems


def _summary(report: Verification) -> str:
    parts = [] if report.integrity == "ok" else [f"integrity_check: {report.integrity}"]
    parts += report.problems[:5]
    if len(report.problems) > 5:
        parts.append(f"... {len(report.problems) - 5} more")
    return "; ".join(parts)
