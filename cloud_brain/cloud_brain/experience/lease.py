"""Leases in the store: at most one replica does a given job (a task's consolidation round) at a time.

A lease is a row (name, holder, expires_unix) of the `leases` table, taken and renewed inside
the store's write transaction, so two replicas on one database (PostgreSQL, or one SQLite file
shared by processes) never both hold it. The holder renews it every `ttl / 3` seconds from a
background thread while the job runs; when the holder dies (kill -9, lost machine) the renewals
stop and another replica takes the lease once `ttl` has passed.

Clocks: expiry uses each replica's wall clock, so replicas' clocks must agree to well under `ttl`
(NTP does it; the default ttl is 30 s).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator

log = logging.getLogger(__name__)

# Which replica runs a task's consolidation round right now (migration 2 of store_schema).
SCHEMA = """
CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_unix REAL NOT NULL
);
"""


def holder_id() -> str:
    """A name for this process that no other replica shares: host, pid and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def holder_alive(holder: str) -> bool:
    """False only when `holder` is a process of this host that no longer exists (it was killed)."""
    host, _, rest = holder.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return True  # another machine's replica: only its lease's expiry tells
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def try_acquire(store, name: str, holder: str, ttl: float, now: float | None = None) -> bool:
    """Take or renew lease `name` for `holder` when it is free, expired or already ours."""
    now = time.time() if now is None else now
    with store.transaction() as conn:
        row = conn.execute("SELECT holder, expires_unix FROM leases WHERE name = ?", (name,)).fetchone()
        if row is not None and row[0] != holder and row[1] > now and holder_alive(row[0]):
            return False
        conn.execute(
            "INSERT INTO leases (name, holder, expires_unix) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE SET"
            " holder = excluded.holder, expires_unix = excluded.expires_unix",
            (name, holder, now + ttl),
        )
    return True


def release(store, name: str, holder: str) -> None:
    """Give lease `name` back (only when `holder` still holds it)."""
    with store.transaction() as conn:
        conn.execute("DELETE FROM leases WHERE name = ? AND holder = ?", (name, holder))


def holder_of(store, name: str, now: float | None = None) -> str | None:
    """Who holds lease `name` now; None when free or expired."""
    now = time.time() if now is None else now
    rows = store.query("SELECT holder, expires_unix FROM leases WHERE name = ?", (name,))
    return rows[0][0] if rows and rows[0][1] > now and holder_alive(rows[0][0]) else None


class Held:
    """A lease held by this process, renewed by a thread until `release()`.

    `lost` is set when a renewal finds the lease taken by someone else (our renewals stopped
    for longer than ttl, e.g. a stalled process); the job should then stop and not record.
    """

    def __init__(self, store, name: str, holder: str, ttl: float):
        self.store, self.name, self.holder, self.ttl = store, name, holder, ttl
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name=f"lease-{name}", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                if not try_acquire(self.store, self.name, self.holder, self.ttl):
                    log.error("lease %s: taken by another replica while held", self.name)
                    self.lost.set()
                    return
            except Exception as err:  # noqa: BLE001 - a store hiccup: try again at the next period
                log.warning("lease %s: renewal failed: %s", self.name, err)

    def release(self) -> None:
        self._stop.set()
        self._thread.join(self.ttl)
        if not self.lost.is_set():
            try:
                release(self.store, self.name, self.holder)
            except Exception as err:  # noqa: BLE001 - it expires by itself
                log.warning("lease %s: release failed (it expires in %.0f s): %s", self.name, self.ttl, err)


@contextlib.contextmanager
def holding(store, name: str, holder: str, ttl: float) -> Iterator[Held | None]:
    """Hold lease `name` for the block (renewed meanwhile); yields None when another replica has it."""
    if not try_acquire(store, name, holder, ttl):
        yield None
        return
    held = Held(store, name, holder, ttl)
    try:
        yield held
    finally:
        held.release()


@contextlib.contextmanager
def waiting_for(store, name: str, holder: str, ttl: float, timeout: float = 120.0) -> Iterator[Held]:
    """Hold lease `name` for the block, waiting up to `timeout` seconds for it to be free."""
    deadline = time.monotonic() + timeout
    while not try_acquire(store, name, holder, ttl):
        if time.monotonic() > deadline:
            raise TimeoutError(f"lease {name}: still held by {holder_of(store, name)} after {timeout:.0f} s")
        time.sleep(0.2)
    held = Held(store, name, holder, ttl)
    try:
        yield held
    finally:
        held.release()
