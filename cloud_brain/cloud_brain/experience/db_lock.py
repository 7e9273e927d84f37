"""Who holds a database: `nestor-cloud serve` takes an advisory lock on `<db_path>.lock` for its lifetime.

`restore` (and a second `serve` on the same file) asks first and refuses a database a running server
holds. The lock is `flock`: the kernel releases it when the process ends, even on kill -9, so a crash
never leaves a stale lock behind. The file holds the holder's pid, for the message.
"""

from __future__ import annotations

import fcntl
import os


class DatabaseInUse(Exception):
    """Another process (a running server) holds the database."""


def lock_path(db_path: str) -> str:
    return f"{db_path}.lock"


class DatabaseLock:
    """An exclusive, non-blocking flock on `<db_path>.lock`; `release()` (or process exit) frees it."""

    def __init__(self, db_path: str):
        self.path = lock_path(db_path)
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(self._fd)
            os.close(self._fd)
            self._fd = None
            raise DatabaseInUse(
                f"db: {db_path} is held by a running cloud brain{f' (pid {holder})' if holder else ''}; stop it first"
            ) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, str(os.getpid()).encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def check_free(db_path: str) -> None:
    """Raise DatabaseInUse when a running server holds `db_path`."""
    if not os.path.exists(lock_path(db_path)):
        return
    DatabaseLock(db_path).release()


def _read_pid(fd: int) -> str:
    try:
        return os.pread(fd, 32, 0).decode().strip()
    except OSError:
        return ""
