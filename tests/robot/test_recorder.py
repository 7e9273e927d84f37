"""ExperienceRecorder: the ring the control tick writes and the flusher drains."""

import threading

import numpy as np
import pytest
from nestor_core.experience import from_chunk, to_chunk
from nestor_core.policy_runtime import TickOutput
from nestor_robot.recorder import ExperienceRecorder

OBS, ACT = 6, 2


def _tick(i: int) -> tuple[np.ndarray, TickOutput]:
    obs = np.full(OBS, i, np.float32)
    out = TickOutput(
        action=np.full(ACT, i, np.float32),
        fast_read=np.full(ACT, 0.5 * i, np.float32),
        l1_read=np.full(ACT, 0.25 * i, np.float32),
        surprise=float(i),
    )
    return obs, out


def _record(rec: ExperienceRecorder, start: int, count: int, l1=None) -> None:
    for i in range(start, start + count):
        obs, out = _tick(i)
        rec.record(obs, out, cost=float(i), stamp=100.0 + i, model_version=7, l1_state=l1)


def test_drain_returns_rows_in_order_with_seq():
    rec = ExperienceRecorder("r1", "kuka_track", OBS, ACT, capacity=16)
    assert rec.drain(1) is None
    l1 = np.arange(ACT * 3, dtype=np.float32).reshape(ACT, 3)
    _record(rec, 0, 5, l1)
    batch = rec.drain(1)
    assert (batch.robot_id, batch.task, batch.first_seq, len(batch), batch.last_seq) == ("r1", "kuka_track", 1, 5, 5)
    np.testing.assert_array_equal(batch.obs[:, 0], np.arange(5))
    np.testing.assert_array_equal(batch.slow_read[:, 1], 0.25 * np.arange(5))
    np.testing.assert_array_equal(batch.stamp, 100.0 + np.arange(5))
    assert batch.model_versions.dtype == np.int64 and set(batch.model_versions) == {7}
    np.testing.assert_array_equal(batch.l1_state, l1)
    assert batch.dropped_before == 0 and "recorder_overflow" not in batch.tags
    assert rec.drain(6) is None
    # The batch owns its arrays: later records do not change it.
    _record(rec, 5, 3)
    assert batch.obs[0, 0] == 0
    assert rec.drain(6).first_seq == 6
    # The batch is a valid wire chunk.
    again = from_chunk(to_chunk(batch), OBS, ACT)
    np.testing.assert_array_equal(again.action, batch.action)


def test_wraparound_keeps_order():
    rec = ExperienceRecorder("r1", "t", OBS, ACT, capacity=4)
    _record(rec, 0, 3)
    assert len(rec.drain(1)) == 3
    _record(rec, 3, 4)  # wraps around the end of the ring
    batch = rec.drain(4)
    np.testing.assert_array_equal(batch.cost, [3, 4, 5, 6])


def test_overflow_is_counted_and_announced():
    rec = ExperienceRecorder("r1", "t", OBS, ACT, capacity=4)
    _record(rec, 0, 10)
    stats = rec.stats()
    assert stats["overflow"] == 6 and stats["pending"] == 4 and stats["recorded"] == 10
    batch = rec.drain(1)
    np.testing.assert_array_equal(batch.cost, [6, 7, 8, 9])  # the newest survive
    assert batch.tags["recorder_overflow"] == "6"
    _record(rec, 10, 1)
    assert "recorder_overflow" not in rec.drain(5).tags
    assert rec.overflow == 6


def test_concurrent_record_and_drain_lose_nothing():
    rec = ExperienceRecorder("r1", "t", OBS, ACT, capacity=100_000)
    total = 20_000
    batches = []
    done = threading.Event()

    def flusher():
        seq = 1
        while not done.is_set() or rec.stats()["pending"]:
            batch = rec.drain(seq)
            if batch is not None:
                batches.append(batch)
                seq += len(batch)

    thread = threading.Thread(target=flusher)
    thread.start()
    _record(rec, 0, total)
    done.set()
    thread.join(timeout=10)
    costs = np.concatenate([b.cost for b in batches])
    np.testing.assert_array_equal(costs, np.arange(total))
    assert [b.first_seq for b in batches] == list(np.cumsum([1] + [len(b) for b in batches[:-1]]))
    assert rec.overflow == 0


def test_record_does_not_allocate_per_tick():
    rec = ExperienceRecorder("r1", "t", OBS, ACT, capacity=8)
    obs, out = _tick(1)
    l1 = np.zeros((ACT, 3), np.float32)
    rec.record(obs, out, 0.0, 0.0, 1, l1)
    buffers = [rec._obs, rec._action, rec._l1]
    _record(rec, 0, 20, l1)
    assert all(a is b for a, b in zip(buffers, [rec._obs, rec._action, rec._l1], strict=True))


@pytest.mark.parametrize("kwargs", [{"capacity": 0}, {"obs_dim": 0}])
def test_bad_arguments(kwargs):
    args = {"robot_id": "r", "task": "t", "obs_dim": OBS, "act_dim": ACT, "capacity": 4, **kwargs}
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        ExperienceRecorder(**args)


# ---------------------------------------------------------------------- the memory-mapped ring


@pytest.fixture
def spool(tmp_path):
    from nestor_robot.spool import Spool

    with Spool(str(tmp_path / "spool.sqlite"), "r1") as s:
        yield s


def _ringed(tmp_path, spool, capacity=16):
    from nestor_robot.experience_ring import RingFile, ring_path

    path = ring_path(str(tmp_path), spool.path, "r1")
    ring = RingFile.create(path, spool.spool_id, "r1", "kuka_track", OBS, ACT, capacity, l1_size=ACT * 3)
    return path, ring, ExperienceRecorder("r1", "kuka_track", OBS, ACT, capacity, ring)


def _stamps(spool) -> list[float]:
    return [s for c in spool.pending(10**6) for s in from_chunk(c).stamp.tolist()]


def test_ring_rows_left_by_a_dead_process_are_committed_once(tmp_path, spool):
    from nestor_robot.experience_ring import recover

    path, ring, rec = _ringed(tmp_path, spool)
    _record(rec, 0, 5, np.ones((ACT, 3), np.float32))
    batch, through = rec.drain_marked(spool.next_seq())
    spool.append(batch, ring_mark=(ring.epoch, through))
    _record(rec, 5, 4)  # recorded, never flushed: the process "dies" here
    result = recover(path, spool)
    assert result == {"recovered": 4, "lost": 0, "ring": "recovered"}
    assert _stamps(spool) == [100.0 + i for i in range(9)]
    assert spool.ring_mark() == (ring.epoch, 9)
    assert recover(path, spool)["ring"] == "none"  # the ring is gone: a second start adds nothing


def test_a_ring_that_died_before_its_first_flush_is_recovered_whole(tmp_path, spool):
    from nestor_robot.experience_ring import recover

    path, _, rec = _ringed(tmp_path, spool)
    _record(rec, 0, 7)
    assert recover(path, spool)["recovered"] == 7
    assert _stamps(spool) == [100.0 + i for i in range(7)]


def test_rows_overwritten_before_the_crash_are_counted_lost(tmp_path, spool):
    from nestor_robot.experience_ring import recover

    path, _, rec = _ringed(tmp_path, spool, capacity=8)
    _record(rec, 0, 11)  # 3 more than the ring holds
    result = recover(path, spool)
    assert (result["recovered"], result["lost"]) == (8, 3)
    chunk = spool.pending(1)[0]
    assert chunk.tags["recorder_overflow"] == "3"
    assert _stamps(spool) == [100.0 + i for i in range(3, 11)]


def test_a_ring_of_another_spool_or_a_torn_file_is_refused(tmp_path, spool):
    from nestor_robot.experience_ring import RingFile, recover, ring_path

    path = ring_path(str(tmp_path), spool.path, "r1")
    ring = RingFile.create(path, spool.spool_id + 1, "r1", "kuka_track", OBS, ACT, 8, 0)
    ring.set_written(3)
    assert recover(path, spool)["ring"] == "belongs to another spool: removed"
    with open(path, "wb") as f:
        f.write(b"NESTRING" + b"\xff" * 100)
    assert recover(path, spool)["ring"] == "invalid header: removed"
    assert spool.stats()["appended"] == 0


def test_ring_backed_recorder_drains_like_the_memory_one(tmp_path, spool):
    _, ring, rec = _ringed(tmp_path, spool)
    _record(rec, 0, 5)
    batch = rec.drain(1)
    np.testing.assert_array_equal(batch.obs[:, 0], np.arange(5))
    assert ring.written == 5 and rec.stats()["pending"] == 0
