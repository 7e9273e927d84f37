"""The experience recorder: a preallocated ring the control tick writes and a flusher drains.

`record` runs on the tick: it copies a handful of small arrays into preallocated rows, O(1), no
allocation, no I/O. `drain` runs on a background thread and turns the rows written since the last
drain into an `ExperienceBatch`. Both hold the lock only for index bookkeeping and the row copy.

When the flusher falls behind by more than `capacity` rows, the oldest unread rows are overwritten.
That loss is counted (`overflow`) and the next batch carries it in `tags["recorder_overflow"]`;
the spool's sequence numbers only cover what reached it.

With a `RingFile` (nestor_robot.experience_ring) the rows live in a memory-mapped file instead of
process memory, so they survive a kill -9 of the policy process; `drain_marked` also returns how
far into the ring the batch reaches, which the spool stores with it.
"""

import threading

import numpy as np
from nestor_core.experience import ExperienceBatch


class ExperienceRecorder:
    """Ring buffer of transitions for one robot and task.

    Args:
        robot_id: owner of the transitions.
        task: task name, copied into every batch.
        obs_dim, act_dim: widths of obs and action rows.
        capacity: rows kept between two drains; more is overflow.
    """

    def __init__(self, robot_id: str, task: str, obs_dim: int, act_dim: int, capacity: int, ring=None):
        if capacity < 1:
            raise ValueError(f"capacity: must be >= 1, got {capacity}")
        if obs_dim < 1 or act_dim < 1:
            raise ValueError(f"obs_dim/act_dim: must be >= 1, got {obs_dim}/{act_dim}")
        self.robot_id = robot_id
        self.task = task
        self.obs_dim = int(obs_dim)
        self.act_dim = int(act_dim)
        self.capacity = int(capacity)
        self._lock = threading.Lock()
        self.ring = ring
        if ring is not None:
            if (ring.capacity, ring.obs_dim, ring.act_dim) != (self.capacity, self.obs_dim, self.act_dim):
                raise ValueError(f"ring: {ring.path} holds {ring.capacity} rows of {ring.obs_dim}/{ring.act_dim}")
            c = ring.columns
            self._obs, self._action, self._fast_read, self._slow_read = (
                c["obs"],
                c["action"],
                c["fast_read"],
                c["slow_read"],
            )
            self._cost, self._surprise, self._stamp, self._version = (
                c["cost"],
                c["surprise"],
                c["stamp"],
                c["model_versions"],
            )
            self._l1 = c["l1"]
        else:
            self._obs = np.zeros((capacity, obs_dim), np.float32)
            self._action = np.zeros((capacity, act_dim), np.float32)
            self._fast_read = np.zeros((capacity, act_dim), np.float32)
            self._slow_read = np.zeros((capacity, act_dim), np.float32)
            self._cost = np.zeros(capacity, np.float32)
            self._surprise = np.zeros(capacity, np.float32)
            self._stamp = np.zeros(capacity, np.float64)
            self._version = np.zeros(capacity, np.int64)
            self._l1 = np.zeros(0, np.float32)
        self._written = ring.written if ring is not None else 0  # rows ever recorded
        self._read = self._written  # rows ever drained or overwritten
        self._overflow = 0  # rows overwritten before a drain, total
        self._overflow_unreported = 0  # ... not yet announced in a batch
        self.drained = 0

    def record(self, obs, tick_output, cost: float, stamp: float, model_version: int, l1_state=None) -> None:
        """Store one transition (called on the tick). `l1_state` updates the L1 snapshot if given."""
        with self._lock:
            i = self._written % self.capacity
            self._obs[i] = obs
            self._action[i] = tick_output.action
            self._fast_read[i] = tick_output.fast_read
            self._slow_read[i] = tick_output.l1_read
            self._cost[i] = cost
            self._surprise[i] = tick_output.surprise
            self._stamp[i] = stamp
            self._version[i] = model_version
            if l1_state is not None:
                if self._l1.shape != l1_state.shape:
                    self._l1 = np.zeros(l1_state.shape, np.float32)  # only on a swap to a new key size
                np.copyto(self._l1, l1_state)
            self._written += 1
            if self.ring is not None:
                self.ring.set_written(self._written)  # after the row: a row is published whole or not at all
            if self._written - self._read > self.capacity:
                self._read += 1
                self._overflow += 1
                self._overflow_unreported += 1

    def drain(self, first_seq: int) -> ExperienceBatch | None:
        """Everything recorded since the last drain, numbered from first_seq; None when empty."""
        return self.drain_marked(first_seq)[0]

    def drain_marked(self, first_seq: int) -> tuple[ExperienceBatch | None, int]:
        """(drain(first_seq), the row count ever recorded that the batch reaches up to)."""
        with self._lock:
            n = self._written - self._read
            if n == 0:
                return None, self._written
            rows = np.arange(self._read, self._written) % self.capacity
            batch = ExperienceBatch(
                robot_id=self.robot_id,
                task=self.task,
                first_seq=int(first_seq),
                obs=self._obs[rows],
                action=self._action[rows],
                cost=self._cost[rows],
                fast_read=self._fast_read[rows],
                slow_read=self._slow_read[rows],
                surprise=self._surprise[rows],
                stamp=self._stamp[rows],
                model_versions=self._version[rows],
                l1_state=self._l1.copy(),
            )
            if self._overflow_unreported:
                batch.tags["recorder_overflow"] = str(self._overflow_unreported)
                self._overflow_unreported = 0
            self._read = self._written
            self.drained += n
            return batch, self._written

    def stats(self) -> dict:
        """Counters: recorded, drained, pending, overflow (rows lost before a drain)."""
        with self._lock:
            return {
                "recorded": self._written,
                "drained": self.drained,
                "pending": self._written - self._read,
                "overflow": self._overflow,
                "capacity": self.capacity,
            }

    @property
    def overflow(self) -> int:
        return self._overflow
