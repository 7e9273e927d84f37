"""The one write transaction of our SQL stores (the robot's spool, the cloud's store and reservoir).

`BEGIN IMMEDIATE` takes the write lock at the start, so two writers never deadlock upgrading a read
lock. On any exception the transaction is rolled back, unless the database has already rolled it
back by itself (SQLite does after SQLITE_FULL or SQLITE_IOERR): a second ROLLBACK would raise "no
transaction is active" and hide the real error, so `in_transaction` is checked first.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Protocol, TypeVar


class Connection(Protocol):
    """What the helper needs: sqlite3.Connection (isolation_level=None) or the cloud's Postgres adapter."""

    @property
    def in_transaction(self) -> bool: ...

    def execute(self, sql: str, *args): ...


C = TypeVar("C", bound=Connection)


@contextlib.contextmanager
def immediate_transaction(conn: C) -> Iterator[C]:
    """BEGIN IMMEDIATE ... COMMIT (durable on return), or ROLLBACK on any exception; yields `conn`."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    try:
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
