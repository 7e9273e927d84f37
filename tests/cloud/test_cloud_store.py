"""Experience store and ingest rules on both real backends.

The backends: a SQLite file, a PostgreSQL database. The rules: dedup, overlap, gaps, drops, reads.
"""

import sqlite3

import numpy as np
import pytest
from cloud_brain.experience.ingest import ingest_chunk
from cloud_brain.experience.store import ExperienceStore, SequenceGapError
from cloud_brain.experience.store_db import connect
from cloud_testlib import make_batch, make_chunk
from hypothesis import given, settings
from hypothesis import strategies as st
from nestor_core.experience import ChunkError


def test_pragmas_wal_and_full_sync(tmp_path):
    store = ExperienceStore(tmp_path / "exp.db")
    assert store.query("PRAGMA journal_mode")[0][0] == "wal"
    assert store.query("PRAGMA synchronous")[0][0] == 2  # FULL
    store.close()


def test_postgres_commits_durably(pg_dsn):
    store = ExperienceStore(pg_dsn)
    assert store.query("SHOW fsync")[0][0] == "on"
    assert store.query("SHOW synchronous_commit")[0][0] == "on"
    store.close()


def test_contiguous_then_duplicate_resend_stores_nothing(store):
    first = store.append(make_batch(first_seq=1, n=5))
    assert (first.stored, first.duplicates, first.acked_through) == (5, 0, 5)
    again = store.append(make_batch(first_seq=1, n=5))
    assert (again.stored, again.duplicates, again.acked_through, again.row_id) == (0, 5, 5, 0)
    assert store.stored_seqs("r1") == [(1, 5)]
    robot = store.robot("r1")
    assert (robot.last_seq, robot.transitions, robot.duplicates) == (5, 5, 5)


def test_overlap_stores_only_the_new_tail(store):
    store.append(make_batch(first_seq=1, n=5))
    result = store.append(make_batch(first_seq=3, n=6))  # seqs 3..8, new: 6..8
    assert (result.stored, result.duplicates, result.acked_through) == (3, 3, 8)
    assert store.stored_seqs("r1") == [(1, 5), (6, 3)]
    batches = list(store.read_batches("arm"))
    assert [b.first_seq for b in batches] == [1, 6]
    np.testing.assert_array_equal(batches[1].obs[:, 0], [6, 7, 8])
    assert batches[1].dropped_before == 0


def test_gap_is_rejected_and_stores_nothing(store):
    store.append(make_batch(first_seq=1, n=5))
    with pytest.raises(SequenceGapError, match="expected seq 6") as err:
        store.append(make_batch(first_seq=8, n=2))
    assert err.value.expected == 6
    assert store.stored_seqs("r1") == [(1, 5)]
    assert store.robot("r1").last_seq == 5


def test_gap_on_first_contact_is_rejected_without_creating_the_robot(store):
    with pytest.raises(SequenceGapError, match="expected seq 1"):
        store.append(make_batch(first_seq=4, n=2))
    assert store.robot("r1") is None


def test_declared_drop_is_accepted_and_counted(store):
    store.append(make_batch(first_seq=1, n=5))
    result = store.append(make_batch(first_seq=9, n=2, dropped_before=3))  # 6..8 dropped
    assert (result.stored, result.dropped, result.acked_through) == (2, 3, 10)
    assert store.dropped_ranges("r1") == [(6, 3)]
    assert store.robot("r1").dropped == 3
    # The same chunk again is a duplicate and records no second drop.
    again = store.append(make_batch(first_seq=9, n=2, dropped_before=3))
    assert (again.stored, again.dropped, again.duplicates) == (0, 0, 2)
    assert store.dropped_ranges("r1") == [(6, 3)]


def test_declared_drop_of_the_wrong_size_is_a_gap(store):
    store.append(make_batch(first_seq=1, n=5))
    with pytest.raises(SequenceGapError, match="expected seq 8"):
        store.append(make_batch(first_seq=9, n=2, dropped_before=2))
    with pytest.raises(SequenceGapError):
        store.append(make_batch(first_seq=6, n=2, dropped_before=1))
    assert store.dropped_ranges("r1") == []


def test_robots_are_independent_and_rows_by_task(store):
    store.append(make_batch(robot="a", first_seq=1, n=4))
    store.append(make_batch(robot="b", first_seq=1, n=3, task="crane", obs_dim=6, act_dim=1))
    store.append(make_batch(robot="a", first_seq=5, n=2))
    assert store.count_transitions() == 9
    assert store.count_transitions("arm") == 6
    assert store.count_transitions("crane") == 3
    assert store.max_row_id() == 3
    assert store.max_row_id("arm") == 3
    assert store.max_row_id("crane") == 2
    assert store.count_transitions("arm", after_row=1) == 2
    assert [b.first_seq for b in store.read_batches("arm", after_row=0, up_to_row=1)] == [1]
    assert [b.first_seq for b in store.read_batches("arm", limit_rows=1)] == [1]
    assert [len(b) for b in store.read_batches("crane")] == [3]


def test_state_survives_reopen(store_target):
    path = store_target
    s = ExperienceStore(path)
    s.append(make_batch(first_seq=1, n=5))
    s.close()
    s.close()  # twice is fine
    s = ExperienceStore(path)
    assert s.append(make_batch(first_seq=1, n=5)).duplicates == 5
    assert s.append(make_batch(first_seq=6, n=1)).acked_through == 6
    s.close()


def test_rows_hold_reencoded_proto_and_indexed_columns(store, store_target):
    store.append(make_batch(first_seq=1, n=4, version=3))
    conn = connect(store_target)  # a second connection: what is committed, not what is cached
    row = conn.execute("SELECT robot_id, task, first_seq, count, model_version, mean_cost FROM chunks").fetchone()
    conn.close()
    assert tuple(row) == ("r1", "arm", 1, 4, 3, pytest.approx(np.mean([1, 2, 3, 4])))


def test_the_database_refuses_a_second_chunk_at_the_same_seq(store, store_target):
    """Exactly once is the database's rule too, not only the store's check."""
    store.append(make_batch(first_seq=1, n=4))
    conn = connect(store_target)
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute(
            "INSERT INTO chunks (robot_id, task, first_seq, count, model_version, mean_cost, received_unix, chunk)"
            " VALUES ('r1', 'arm', 1, 4, 1, 0, 0, ?)",
            (b"x",),
        )
    conn.close()
    assert store.stored_seqs("r1") == [(1, 4)]


def test_ingest_chunk_validates_before_storing(store, tasks):
    assert ingest_chunk(store, make_chunk(n=3), tasks).stored == 3
    bad = make_batch(first_seq=4, n=3)
    bad.cost[1] = np.nan
    from nestor_core.experience import to_chunk

    cases = {
        "non_finite": to_chunk(bad),
        "bad_shape": make_chunk(first_seq=4, n=3, obs_dim=5),
        "unknown_task": make_chunk(first_seq=4, n=3, task="nope"),
        "missing_robot_id": make_chunk(robot="", first_seq=4, n=3),
    }
    for reason, chunk in cases.items():
        with pytest.raises(ChunkError) as err:
            ingest_chunk(store, chunk, tasks)
        assert err.value.reason == reason
    assert store.count_transitions() == 3
    assert store.robot("r1").last_seq == 3


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(-6, 4), st.integers(1, 5), st.integers(0, 3)), min_size=1, max_size=25))
def test_invariant_stored_plus_dropped_is_exactly_one_to_last(sends):
    """Random resends/overlaps/gaps/drops: stored seqs are exactly 1..last minus declared drops."""
    store = ExperienceStore(":memory:")
    for offset, n, dropped in sends:
        last = store.robot("r1").last_seq if store.robot("r1") else 0
        first = max(1, last + 1 + offset)
        try:
            store.append(make_batch(first_seq=first, n=n, dropped_before=dropped))
        except SequenceGapError:
            pass
    robot = store.robot("r1")
    last = robot.last_seq if robot else 0
    covered = []
    for first, count in store.stored_seqs("r1") + store.dropped_ranges("r1"):
        covered.extend(range(first, first + count))
    assert sorted(covered) == list(range(1, last + 1))
    assert sum(b.obs[:, 0].size for b in store.read_batches("arm")) == (robot.transitions if robot else 0)
    for batch in store.read_batches("arm"):
        np.testing.assert_array_equal(batch.obs[:, 0], np.arange(batch.first_seq, batch.last_seq + 1))
    store.close()
