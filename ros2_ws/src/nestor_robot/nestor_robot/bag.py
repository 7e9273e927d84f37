"""An MCAP bag of raw ROS 2 messages, written off the caller's thread.

The file is what rosbag2 writes (``ros2`` profile, ``cdr`` encoding, ``ros2msg`` schemas).

``put`` only appends the serialized bytes to a bounded in-memory queue (never blocks, never does
I/O); a writer thread drains it into the file. A full queue drops the message and counts it
(``dropped``). ``close`` drains what is queued, writes the summary and closes the file. If the
process dies first, the chunks written so far are readable by MCAP readers that scan without the
summary (or after ``mcap recover``).
"""

from __future__ import annotations

import collections
import threading
import time

from mcap.writer import CompressionType, Writer
from nestor_core.ros2_msgdefs import msgdef

LIBRARY = "nestor bag recorder"


class Bag:
    """One MCAP file being recorded.

    Args:
        path: the file (truncated when it exists).
        capacity: messages queued at most between two writer passes; more are dropped.
        chunk_size: MCAP chunk size in bytes (chunks are written, compressed, as they fill).
    """

    def __init__(self, path: str, capacity: int = 100_000, chunk_size: int = 1024 * 1024):
        if capacity < 1:
            raise ValueError(f"capacity: must be >= 1, got {capacity}")
        self.path = path
        self.capacity = capacity
        self._file = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._writer = Writer(self._file, chunk_size=chunk_size, compression=CompressionType.ZSTD)
        self._writer.start(profile="ros2", library=LIBRARY)
        self._schemas: dict[str, int] = {}
        self._channels: dict[str, int] = {}
        self._lock = threading.Lock()
        self._queue: collections.deque = collections.deque()
        self._wake = threading.Event()
        self._closed = False
        self._sequences: dict[int, int] = {}
        self.stats = {"queued": 0, "written": 0, "dropped": 0, "bytes": 0, "max_queue": 0}
        self._thread = threading.Thread(target=self._run, name="bag-writer", daemon=True)
        self._thread.start()

    def add_topic(self, topic: str, datatype: str) -> int:
        """Registers a channel (its schema once per type); returns the channel id for ``put``."""
        with self._lock:
            if topic in self._channels:
                return self._channels[topic]
            if datatype not in self._schemas:
                self._schemas[datatype] = self._writer.register_schema(datatype, "ros2msg", msgdef(datatype).encode())
            self._channels[topic] = self._writer.register_channel(topic, "cdr", self._schemas[datatype])
            return self._channels[topic]

    def put(self, channel_id: int, data: bytes, log_time_ns: int | None = None) -> bool:
        """Queues one serialized message; False (and counted) when the queue is full or closed."""
        if self._closed or len(self._queue) >= self.capacity:
            self.stats["dropped"] += 1
            return False
        self._queue.append((channel_id, time.time_ns() if log_time_ns is None else log_time_ns, data))
        self.stats["queued"] += 1
        if len(self._queue) > self.stats["max_queue"]:
            self.stats["max_queue"] = len(self._queue)
        self._wake.set()
        return True

    def _drain(self) -> None:
        sequences: dict[int, int] = {}
        while self._queue:
            channel_id, t, data = self._queue.popleft()
            seq = sequences.get(channel_id, self._sequences.get(channel_id, 0)) + 1
            sequences[channel_id] = seq
            with self._lock:
                self._writer.add_message(channel_id, log_time=t, data=data, publish_time=t, sequence=seq)
            self.stats["written"] += 1
            self.stats["bytes"] += len(data)
        self._sequences.update(sequences)

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(0.5)
            self._wake.clear()
            self._drain()

    def close(self) -> dict:
        """Writes what is queued and the summary, closes the file; returns the stats. Safe twice."""
        if not self._closed:
            self._closed = True
            self._wake.set()
            self._thread.join()
            self._drain()
            with self._lock:
                self._writer.finish()
            self._file.close()
        return dict(self.stats)
