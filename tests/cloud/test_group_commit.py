"""Group commit: several chunks (of one stream and of several) in one transaction, each outcome final.

No timing is asserted: only what is stored, what each chunk's outcome says, and how chunks were grouped.
"""

import threading

import pytest
from cloud_brain.experience.group_commit import GroupCommit
from cloud_brain.experience.store import NOT_ATTEMPTED, AppendResult, SequenceGapError
from cloud_testlib import make_batch


def test_append_many_stores_several_streams_in_one_transaction(store):
    outcomes = store.append_many(
        [
            ("a", make_batch(robot="r1", first_seq=1, n=5), None),
            ("b", make_batch(robot="r2", first_seq=1, n=3), None),
            ("a", make_batch(robot="r1", first_seq=6, n=5), None),
        ]
    )
    assert [o.acked_through for o in outcomes] == [5, 3, 10]
    assert store.stored_seqs("r1") == [(1, 5), (6, 5)]
    assert store.stored_seqs("r2") == [(1, 3)]


def test_a_failing_chunk_is_rolled_back_alone_and_its_stream_stops(store):
    store.append(make_batch(robot="r1", first_seq=1, n=5))
    outcomes = store.append_many(
        [
            ("a", make_batch(robot="r1", first_seq=9, n=2), None),  # gap: expected 6
            ("b", make_batch(robot="r2", first_seq=1, n=4), None),  # another stream: stored
            # Would be contiguous after a drop it declares, but its stream already failed: not attempted.
            ("a", make_batch(robot="r1", first_seq=11, n=2, dropped_before=5), None),
        ]
    )
    assert isinstance(outcomes[0], SequenceGapError) and outcomes[0].expected == 6
    assert isinstance(outcomes[1], AppendResult) and outcomes[1].stored == 4
    assert outcomes[2] == NOT_ATTEMPTED
    assert store.stored_seqs("r1") == [(1, 5)]
    assert store.robot("r1").last_seq == 5
    assert store.stored_seqs("r2") == [(1, 4)]


def test_a_gap_on_first_contact_leaves_no_robot_row(store):
    outcomes = store.append_many([("a", make_batch(robot="r9", first_seq=4, n=2), None)])
    assert isinstance(outcomes[0], SequenceGapError)
    assert store.robot("r9") is None


def test_group_commit_from_many_threads_stores_every_chunk_once(store):
    group = GroupCommit(store, max_batch=8)
    robots, chunks_per_robot, n = 6, 20, 5
    results: dict[str, list] = {}
    start = threading.Barrier(robots)

    def stream(robot: str) -> None:
        start.wait()
        out = []
        for k in range(0, chunks_per_robot, 2):  # two chunks per call, as a stream with read-ahead hands them
            batches = [(make_batch(robot=robot, first_seq=1 + (k + j) * n, n=n), None) for j in range(2)]
            out += group.append(robot, batches)
        results[robot] = out

    threads = [threading.Thread(target=stream, args=(f"r{i}",)) for i in range(robots)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    for i in range(robots):
        robot = f"r{i}"
        outcomes = results[robot]
        assert [o.acked_through for o in outcomes] == [n * (k + 1) for k in range(chunks_per_robot)]
        assert store.robot(robot).last_seq == n * chunks_per_robot
        assert store.count_transitions() >= n * chunks_per_robot
    assert group.chunks == robots * chunks_per_robot
    assert group.commits <= group.chunks  # one commit per group, a group holds >= 1 chunk


def test_group_commit_raises_in_every_caller_when_the_transaction_fails(store):
    group = GroupCommit(store)

    def broken(batches, now=None):
        raise OSError("disk gone")

    store.append_many = broken
    with pytest.raises(OSError, match="disk gone"):
        group.append("a", [(make_batch(robot="r1", first_seq=1, n=5), None)])
    assert group.commits == 1


def test_group_commit_rejects_a_bad_max_batch(store):
    with pytest.raises(ValueError, match="max_batch"):
        GroupCommit(store, max_batch=0)
