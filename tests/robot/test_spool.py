"""The experience spool: durable, bounded, gap-announcing, shared by two processes."""

import multiprocessing
import sqlite3
import threading

import numpy as np
import pytest
from nestor_core.experience import ExperienceBatch, from_chunk
from nestor_robot.spool import Spool

ROBOT = "robot_t"


def make_batch(first_seq: int, n: int, robot: str = ROBOT, obs_dim: int = 4, act_dim: int = 2) -> ExperienceBatch:
    seqs = np.arange(first_seq, first_seq + n)
    return ExperienceBatch(
        robot_id=robot,
        task="kuka_track",
        first_seq=first_seq,
        # obs[:, 0] carries the seq so a test can check which transition arrived.
        obs=np.repeat(seqs[:, None], obs_dim, axis=1).astype(np.float32),
        action=np.zeros((n, act_dim), np.float32),
        cost=np.ones(n, np.float32),
        fast_read=np.zeros((n, act_dim), np.float32),
        slow_read=np.zeros((n, act_dim), np.float32),
        surprise=np.zeros(n, np.float32),
        stamp=seqs.astype(np.float64) * 0.01,
        model_versions=np.ones(n, np.int64),
    )


def append_n(spool: Spool, chunks: int, size: int) -> None:
    for _ in range(chunks):
        spool.append(make_batch(spool.next_seq(), size))


def test_roundtrip_and_durable_across_reopen(tmp_path):
    path = tmp_path / "spool.sqlite"
    with Spool(path, ROBOT) as spool:
        append_n(spool, 3, 5)
        assert spool.next_seq() == 16
    with Spool(path, ROBOT) as spool:
        chunks = spool.pending(10)
        assert [c.first_seq for c in chunks] == [1, 6, 11]
        batch = from_chunk(chunks[1])
        assert batch.obs[:, 0].tolist() == [6, 7, 8, 9, 10]
        assert all(c.dropped_before == 0 for c in chunks)
        stats = spool.stats()
        assert stats["depth_transitions"] == 15 and stats["depth_chunks"] == 3
        assert stats["appended"] == 15 and stats["dropped"] == 0


def test_next_seq_survives_acks_and_restarts(tmp_path):
    path = tmp_path / "spool.sqlite"
    with Spool(path, ROBOT) as spool:
        append_n(spool, 2, 10)
        assert spool.ack(20) == 20
        assert spool.pending(10) == []
        assert spool.stats()["depth_chunks"] == 0
    with Spool(path, ROBOT) as spool:
        assert spool.next_seq() == 21  # never reused although every row was deleted
        assert spool.acked_through() == 20
        with pytest.raises(ValueError, match="first_seq"):
            spool.append(make_batch(1, 3))
        spool.append(make_batch(21, 3))
        assert [c.first_seq for c in spool.pending(5)] == [21]


def test_ack_is_monotonic_partial_and_clamped(tmp_path):
    with Spool(tmp_path / "s.sqlite", ROBOT) as spool:
        append_n(spool, 3, 4)  # 1-4, 5-8, 9-12
        spool.ack(6)  # mid-chunk: 5-8 stays pending (the cloud de-duplicates a resend)
        assert [c.first_seq for c in spool.pending(5)] == [5, 9]
        assert spool.ack(2) == 6  # an older ack changes nothing
        assert spool.ack(99) == 12  # cannot ack seqs never produced
        assert spool.pending(5) == []


def test_append_validation(tmp_path):
    with Spool(tmp_path / "s.sqlite", ROBOT) as spool:
        with pytest.raises(ValueError, match="robot_id"):
            spool.append(make_batch(1, 2, robot="other"))
        bad = make_batch(1, 2)
        bad.dropped_before = 3
        with pytest.raises(ValueError, match="dropped_before"):
            spool.append(bad)
    with pytest.raises(ValueError, match="robot_id"):
        Spool(tmp_path / "s.sqlite", "other")
    with pytest.raises(ValueError, match="full_policy"):
        Spool(tmp_path / "t.sqlite", ROBOT, full_policy="block")


def test_drop_oldest_counts_and_announces_gap(tmp_path):
    with Spool(tmp_path / "s.sqlite", ROBOT, capacity_transitions=20) as spool:
        append_n(spool, 4, 5)  # full: 1..20
        result = spool.append(make_batch(21, 5))
        assert result.stored and result.evicted == 5
        result = spool.append(make_batch(26, 10))
        assert result.evicted == 10
        chunks = spool.pending(10)
        assert [c.first_seq for c in chunks] == [16, 21, 26]
        # Only the first chunk after the gap announces it, with the merged size.
        assert [c.dropped_before for c in chunks] == [15, 0, 0]
        stats = spool.stats()
        assert stats["dropped"] == 15 and stats["evicted"] == 15
        assert stats["depth_transitions"] == 20
        spool.ack(20)
        assert spool.pending(10)[0].dropped_before == 0  # the gap was delivered with seq 16


def test_evicted_chunk_acked_in_flight_shrinks_gap(tmp_path):
    with Spool(tmp_path / "s.sqlite", ROBOT, capacity_transitions=10) as spool:
        append_n(spool, 2, 5)  # 1-5, 6-10 (1-5 assume in flight)
        spool.append(make_batch(11, 5))  # evicts 1-5
        assert spool.pending(1)[0].dropped_before == 5
        spool.ack(3)  # the cloud had received 1-3 before eviction (partial ack is hypothetical)
        assert spool.pending(1)[0].dropped_before == 2
        spool.ack(5)
        assert spool.pending(1)[0].dropped_before == 0


def test_reject_newest_consumes_seqs_and_announces(tmp_path):
    with Spool(tmp_path / "s.sqlite", ROBOT, capacity_transitions=10, full_policy="reject_newest") as spool:
        append_n(spool, 2, 5)
        result = spool.append(make_batch(11, 5))
        assert not result.stored and result.rejected == 5
        assert spool.next_seq() == 16
        spool.ack(10)
        spool.append(make_batch(16, 5))
        (chunk,) = spool.pending(5)
        assert chunk.first_seq == 16 and chunk.dropped_before == 5
        assert spool.stats()["rejected"] == 5 and spool.stats()["dropped"] == 5


def test_batch_larger_than_capacity_is_rejected_not_stored(tmp_path):
    with Spool(tmp_path / "s.sqlite", ROBOT, capacity_transitions=4) as spool:
        result = spool.append(make_batch(1, 6))
        assert not result.stored and result.rejected == 6
        spool.append(make_batch(7, 2))
        assert spool.pending(5)[0].dropped_before == 6


def test_corrupt_row_is_quarantined_and_counted(tmp_path):
    path = tmp_path / "s.sqlite"
    with Spool(path, ROBOT) as spool:
        append_n(spool, 3, 4)  # 1-4, 5-8, 9-12
    db = sqlite3.connect(path)
    db.execute("UPDATE chunks SET data = ? WHERE first_seq = 5", (b"\xff\x00garbage",))
    db.commit()
    db.close()
    with Spool(path, ROBOT) as spool:
        chunks = spool.pending(10)
        assert [c.first_seq for c in chunks] == [1, 9]
        assert [c.dropped_before for c in chunks] == [0, 4]
        stats = spool.stats()
        assert stats["quarantined"] == 4 and stats["quarantined_chunks"] == 1 and stats["dropped"] == 4
    db = sqlite3.connect(path)
    assert db.execute("SELECT first_seq, reason FROM quarantine").fetchall() == [(5, "unparseable")]
    db.close()


def test_only_corrupt_rows_in_window_still_yields_the_rest(tmp_path):
    path = tmp_path / "s.sqlite"
    with Spool(path, ROBOT) as spool:
        append_n(spool, 3, 2)
    db = sqlite3.connect(path)
    db.execute("UPDATE chunks SET data = x'00' WHERE first_seq IN (1, 3)")
    db.commit()
    db.close()
    with Spool(path, ROBOT) as spool:
        (chunk,) = spool.pending(2)
        assert chunk.first_seq == 5 and chunk.dropped_before == 4


def test_quarantine_by_caller(tmp_path):
    with Spool(tmp_path / "s.sqlite", ROBOT) as spool:
        append_n(spool, 2, 3)
        assert spool.quarantine(1, "invalid_argument: obs") == 3
        assert spool.quarantine(1, "again") == 0
        (chunk,) = spool.pending(5)
        assert chunk.first_seq == 4 and chunk.dropped_before == 3


def test_close_twice_and_use_after_close(tmp_path):
    spool = Spool(tmp_path / "s.sqlite", ROBOT)
    spool.close()
    spool.close()
    with pytest.raises(ValueError, match="closed"):
        spool.next_seq()


def _reader(path: str, total: int, out: multiprocessing.Queue) -> None:
    """Uplink stand-in in another process: read, 'send', ack until every seq was seen."""
    import time

    from nestor_core.experience import from_chunk as parse

    seen = []
    with Spool(path, ROBOT) as spool:
        deadline = time.monotonic() + 60
        while len(seen) < total and time.monotonic() < deadline:
            chunks = spool.pending(3)
            if not chunks:
                time.sleep(0.001)
                continue
            for chunk in chunks:
                seen.extend(int(s) for s in parse(chunk).obs[:, 0])
            spool.ack(chunks[-1].first_seq + chunks[-1].count - 1)
    out.put(seen)


@pytest.mark.slow
def test_concurrent_writer_thread_and_reader_process(tmp_path):
    path = str(tmp_path / "s.sqlite")
    chunks, size = 300, 7
    spool = Spool(path, ROBOT)  # created before the reader opens it
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    reader = ctx.Process(target=_reader, args=(path, chunks * size, out))
    reader.start()
    errors = []

    def write():
        try:
            append_n(spool, chunks, size)
        except Exception as err:  # surfaced by the assert below
            errors.append(err)

    writer = threading.Thread(target=write)
    writer.start()
    writer.join(60)
    try:
        seen = out.get(timeout=60)
    finally:
        reader.join(10)
        if reader.is_alive():
            reader.kill()
    assert not errors
    assert seen == list(range(1, chunks * size + 1))  # every transition once, in order
    assert spool.acked_through() == chunks * size
    stats = spool.stats()
    assert stats["depth_chunks"] == 0 and stats["dropped"] == 0 and stats["appended"] == chunks * size
    spool.close()
