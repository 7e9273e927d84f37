"""Atomic file writes: a reader sees the old file or the new one, never half of one.

The one way the robot, the bringup and the cloud replace a file that another process reads (status
JSON, ready files, models and their sidecars, certificates): write a temporary file in the same
directory, then `os.replace` it over the target. `durable=True` also fsyncs the file before the
rename and the directory after it, so the new file survives a power loss (the models the robot
keeps).
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Sequence
from typing import Any


def write_atomic(path: str | os.PathLike, data: bytes | str, *, durable: bool = False, mode: int = 0o666) -> None:
    """Replace `path` with `data` atomically.

    Args:
        path: the target; its directory must exist.
        data: the whole new content (str is written as UTF-8).
        durable: fsync the file before the rename and its directory after it.
        mode: permission bits of the new file, before the umask (0o600 for a private key).
    """
    write_atomic_many([(path, data)], durable=durable, mode=mode)


def write_atomic_many(
    files: Sequence[tuple[str | os.PathLike, bytes | str]], *, durable: bool = False, mode: int = 0o666
) -> None:
    """Replace each `(path, data)` atomically, the targets becoming visible in the order given.

    Every temporary file is written (and with `durable`, fsynced) before the first rename, and each
    directory is fsynced once after the last: two files cost three fsyncs, not four. A failure
    before the renames leaves every target as it was.
    """
    targets = [(os.fspath(path), data.encode() if isinstance(data, str) else data) for path, data in files]
    tmps: list[tuple[str, str]] = []
    try:
        for path, payload in targets:
            directory = os.path.dirname(os.path.abspath(path))
            # Unique per writer, so two processes or threads writing the same target never share a temp file.
            tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            tmps.append((tmp, path))
            with os.fdopen(fd, "wb") as f:
                f.write(payload)
                if durable:
                    f.flush()
                    os.fsync(f.fileno())
        for tmp, path in tmps:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in tmps:
            if os.path.exists(tmp):
                os.unlink(tmp)
        raise
    if durable:
        for directory in dict.fromkeys(os.path.dirname(os.path.abspath(path)) for path, _ in targets):
            dir_fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)


def write_json_atomic(path: str | os.PathLike, value: Any, *, durable: bool = False, **dumps: Any) -> None:
    """`write_atomic` of `json.dumps(value, **dumps)`."""
    write_atomic(path, json.dumps(value, **dumps), durable=durable)
