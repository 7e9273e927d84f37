"""The recorder's ring as a memory-mapped file: what the control tick recorded outlives the process.

The tick writes each transition into this file's pages (plain memory stores, no system call, no
fsync) and then bumps `written` in the header. The pages belong to the kernel's page cache, so a
kill -9, an OOM kill or a crash of the policy process leaves every recorded row readable. The
flusher commits rows to the spool as before, and in the same SQLite transaction records how far
into the ring it got (`Spool.append(..., ring_mark=(epoch, through))`). A restarted policy node
calls `recover(path, spool)`: rows [through, written) of the ring with the spool's epoch are the
ones the dead process recorded and never committed; they are appended once, with the next seqs.

What it does not cover: the ring lives in /dev/shm (tmpfs) by default, so a power loss or a reboot
loses it with the rest of RAM: up to `flush_period_s` of transitions (the rows since the last spool
commit, ~100 at 100 Hz and 1 s), never recorded and so never counted. On a disk-backed path a power
loss may also leave torn pages; recovery then refuses a ring whose header does not check out, but
it cannot tell a stale row from a fresh one, so keep the ring on tmpfs.

Layout (little endian): a 4096-byte header (magic, version, epoch, capacity, dims, l1 size,
written, robot id, task), then the column arrays, each `capacity` rows.
"""

from __future__ import annotations

import mmap
import os
import secrets

import numpy as np
from nestor_core.experience import ExperienceBatch

MAGIC = b"NESTRING"
VERSION = 1
HEADER_BYTES = 4096
_NAME_BYTES = 128
# u64 header words after the magic
_VERSION, _EPOCH, _CAPACITY, _OBS, _ACT, _L1, _WRITTEN, _SPOOL = range(1, 9)
_WORDS = 9
_NAMES_AT = _WORDS * 8


def _columns(capacity: int, obs_dim: int, act_dim: int, l1_size: int) -> list[tuple[str, np.dtype, tuple]]:
    return [
        ("obs", np.dtype("<f4"), (capacity, obs_dim)),
        ("action", np.dtype("<f4"), (capacity, act_dim)),
        ("fast_read", np.dtype("<f4"), (capacity, act_dim)),
        ("slow_read", np.dtype("<f4"), (capacity, act_dim)),
        ("cost", np.dtype("<f4"), (capacity,)),
        ("surprise", np.dtype("<f4"), (capacity,)),
        ("stamp", np.dtype("<f8"), (capacity,)),
        ("model_versions", np.dtype("<i8"), (capacity,)),
        ("l1", np.dtype("<f4"), (l1_size,)),
    ]


def _size(columns) -> int:
    return HEADER_BYTES + sum(int(np.prod(shape)) * dtype.itemsize for _, dtype, shape in columns)


class RingFile:
    """The mapped file: a u64 header view and one numpy view per column (see the module docstring)."""

    def __init__(self, path: str, fd: int, size: int):
        self.path = path
        self._map = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        os.close(fd)
        self.header = np.frombuffer(self._map, np.dtype("<u8"), count=_WORDS)
        self.capacity = int(self.header[_CAPACITY])
        self.obs_dim, self.act_dim, self.l1_size = (int(self.header[i]) for i in (_OBS, _ACT, _L1))
        self.epoch = int(self.header[_EPOCH])
        self.spool_id = int(self.header[_SPOOL])
        names = bytes(self._map[_NAMES_AT : _NAMES_AT + 2 * _NAME_BYTES])
        self.robot_id = names[:_NAME_BYTES].rstrip(b"\0").decode()
        self.task = names[_NAME_BYTES:].rstrip(b"\0").decode()
        self.columns: dict[str, np.ndarray] = {}
        offset = HEADER_BYTES
        for name, dtype, shape in _columns(self.capacity, self.obs_dim, self.act_dim, self.l1_size):
            count = int(np.prod(shape))
            self.columns[name] = np.frombuffer(self._map, dtype, count=count, offset=offset).reshape(shape)
            offset += count * dtype.itemsize

    @classmethod
    def create(
        cls, path: str, spool_id: int, robot_id: str, task: str, obs_dim: int, act_dim: int, capacity: int, l1_size: int
    ) -> RingFile:
        """A new, zeroed ring with a fresh epoch for the spool `spool_id` (replacing any file at `path`)."""
        columns = _columns(capacity, obs_dim, act_dim, l1_size)
        size = _size(columns)
        header = np.zeros(_WORDS, np.dtype("<u8"))
        header[_VERSION], header[_EPOCH], header[_CAPACITY] = VERSION, secrets.randbits(62) + 1, capacity
        header[_SPOOL] = spool_id
        header[_OBS], header[_ACT], header[_L1] = obs_dim, act_dim, l1_size
        names = robot_id.encode()[:_NAME_BYTES].ljust(_NAME_BYTES, b"\0") + task.encode()[:_NAME_BYTES].ljust(
            _NAME_BYTES, b"\0"
        )
        tmp = f"{path}.new{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(MAGIC + header.tobytes()[8:] + names)
            f.truncate(size)  # sparse zeros: the pages are touched below, not on the tick
        os.replace(tmp, path)
        ring = cls(path, os.open(path, os.O_RDWR), size)
        for array in ring.columns.values():
            array.fill(0)  # fault every page in now, so the tick never takes a page fault
        return ring

    @classmethod
    def open(cls, path: str) -> RingFile | None:
        """An existing ring, or None when there is none or its header does not check out."""
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return None
        try:
            size = os.fstat(fd).st_size
            head = os.pread(fd, HEADER_BYTES, 0)
            words = np.frombuffer(head[: _WORDS * 8], np.dtype("<u8"))
            ok = head[:8] == MAGIC and int(words[_VERSION]) == VERSION and int(words[_CAPACITY]) > 0
            if ok:
                expected = _size(_columns(*(int(words[i]) for i in (_CAPACITY, _OBS, _ACT, _L1))))
                ok = size == expected
        except (OSError, ValueError):
            ok = False
        if not ok:
            os.close(fd)
            return None
        return cls(path, fd, size)

    @property
    def written(self) -> int:
        return int(self.header[_WRITTEN])

    def set_written(self, value: int) -> None:
        """Publish rows [.., value): called after the row itself is in place (program order)."""
        self.header[_WRITTEN] = value

    def batch(self, start: int, stop: int, first_seq: int) -> ExperienceBatch:
        """Rows [start, stop) of the ring (absolute row numbers, at most `capacity` apart) as a batch."""
        rows = np.arange(start, stop) % self.capacity
        c = self.columns
        return ExperienceBatch(
            robot_id=self.robot_id,
            task=self.task,
            first_seq=int(first_seq),
            obs=c["obs"][rows],
            action=c["action"][rows],
            cost=c["cost"][rows],
            fast_read=c["fast_read"][rows],
            slow_read=c["slow_read"][rows],
            surprise=c["surprise"][rows],
            stamp=c["stamp"][rows],
            model_versions=c["model_versions"][rows],
            l1_state=c["l1"].copy(),
        )

    def close(self) -> None:
        """Unmap (numpy views must be gone first; a still-referenced view keeps the mapping alive)."""
        self.header = None
        self.columns = {}
        try:
            self._map.close()
        except BufferError:
            pass  # a batch still views the map; it is freed with the last view


def ring_path(ring_dir: str, spool_path: str, robot_id: str) -> str:
    """One ring per spool: /dev/shm/nestor-<robot>-<hash of the spool's path>.ring by default."""
    import hashlib

    digest = hashlib.sha256(os.path.abspath(spool_path).encode()).hexdigest()[:12]
    return os.path.join(ring_dir, f"nestor-{robot_id}-{digest}.ring")


def recover(path: str, spool) -> dict:
    """Commit what a dead policy process recorded in its ring and never committed; then remove the ring.

    Returns:
        {"recovered": rows appended to the spool, "lost": rows overwritten before the crash (the
        ring was more than `capacity` rows behind), "ring": why nothing was done, if so}.
    """
    ring = RingFile.open(path)
    if ring is None:
        if os.path.exists(path):
            os.unlink(path)
            return {"recovered": 0, "lost": 0, "ring": "invalid header: removed"}
        return {"recovered": 0, "lost": 0, "ring": "none"}
    try:
        if ring.robot_id != spool.robot_id or ring.spool_id != spool.spool_id:
            return {"recovered": 0, "lost": 0, "ring": "belongs to another spool: removed"}
        mark = spool.ring_mark()
        # A ring the spool never heard of died before its first flush: none of its rows is committed.
        through = mark[1] if mark is not None and mark[0] == ring.epoch else 0
        written = ring.written
        start = max(through, written - ring.capacity)
        lost = start - through
        if written > start:
            batch = ring.batch(start, written, spool.next_seq())
            if lost:
                batch.tags["recorder_overflow"] = str(lost)
            spool.append(batch, ring_mark=(ring.epoch, written))
            del batch
        return {"recovered": max(0, written - start), "lost": lost, "ring": "recovered"}
    finally:
        ring.close()
        os.unlink(path)
