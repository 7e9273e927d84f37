"""Where the policy's recorded experience goes: the spool, with the recorder ring beside it.

``ExperienceSink.open`` opens the SQLite spool and commits the ring a crashed predecessor left
(``experience_ring.recover``). ``recorder`` makes the tick's ``ExperienceRecorder`` at the first
model, on a memory-mapped ring in ``ring_dir`` (tmpfs) so a kill -9 loses nothing recorded.
``flush`` (the flusher thread) drains the recorder into the spool, one fsync'd commit; a batch the
spool refused is kept and retried first on the next flush. ``close`` removes the ring once
everything reached the spool, and closes the spool. No ROS here.
"""

from __future__ import annotations

import dataclasses
import logging
import os

from nestor_robot.experience_ring import RingFile, recover, ring_path
from nestor_robot.recorder import ExperienceRecorder


class ExperienceSink:
    """The policy's experience: the durable spool and the recorder ring in front of it.

    Args:
    spool_path: the SQLite spool shared with the uplink.
    robot_id: the spool's owner.
    capacity: most unacked transitions the spool keeps.
    full_policy: drop_oldest or reject_newest when it is full.
    ring_dir: directory of the recorder ring; empty = the ring lives in process memory.
    log: the node's logger.
    """

    def __init__(self, spool_path: str, robot_id: str, capacity: int, full_policy: str, ring_dir: str, log=None):
        from nestor_robot.spool import Spool  # imported here: the tick path never touches it

        self.log = log or logging.getLogger(__name__)
        self.robot_id = robot_id
        os.makedirs(os.path.dirname(os.path.abspath(spool_path)), exist_ok=True)
        self.spool = Spool(spool_path, robot_id, capacity, full_policy)
        self.ring_path = ""
        self.ring_recovery: dict = {}
        if ring_dir:
            self.ring_path = ring_path(ring_dir, spool_path, robot_id)
            self.ring_recovery = recover(self.ring_path, self.spool)
            if self.ring_recovery["recovered"] or self.ring_recovery["lost"]:
                self.log.warning(
                    f"recorder ring of the previous policy process: {self.ring_recovery['recovered']} transitions "
                    f"committed to the spool, {self.ring_recovery['lost']} had been overwritten"
                )
        self.stats: dict = self.spool.stats()
        self.errors = 0
        self._unsent = None  # a drained batch the spool refused to take; retried on the next flush
        self._unsent_mark = None

    def recorder(self, task: str, obs_dim: int, act_dim: int, capacity: int, l1_size: int) -> ExperienceRecorder:
        """The recorder of the first model (once): on the ring when there is a ring path."""
        ring = None
        if self.ring_path:
            # A tmpfs file of a few hundred KB, every page touched now.
            ring = RingFile.create(
                self.ring_path, self.spool.spool_id, self.robot_id, task, obs_dim, act_dim, capacity, l1_size
            )
        return ExperienceRecorder(self.robot_id, task, obs_dim, act_dim, capacity, ring)

    def flush(self, recorder: ExperienceRecorder | None) -> None:
        """Drain the recorder into the spool (flusher thread, or once at deactivate)."""
        if recorder is None:
            return
        ring = recorder.ring
        try:
            if self._unsent is not None:
                self._unsent = dataclasses.replace(self._unsent, first_seq=self.spool.next_seq())
                self.spool.append(self._unsent, ring_mark=self._unsent_mark)
                self._unsent = None
            batch, through = recorder.drain_marked(self.spool.next_seq())
            if batch is not None:
                self._unsent, self._unsent_mark = batch, (ring.epoch, through) if ring is not None else None
                self.spool.append(batch, ring_mark=self._unsent_mark)
                self._unsent = None
            self.stats = self.spool.stats()
        except Exception as err:  # sqlite errors and ValueError: keep the batch, report, retry
            self.errors += 1
            self.log.error(f"spool append failed ({err}); retrying", throttle_duration_sec=5.0)

    def close(self, recorder: ExperienceRecorder | None) -> None:
        """Remove the ring when everything is in the spool (a stopped node leaves none), close the spool."""
        ring = recorder.ring if recorder is not None else None
        if ring is not None and self._unsent is None and recorder.stats()["pending"] == 0:
            try:
                os.unlink(ring.path)
            except OSError:
                pass
        self.spool.close()
