"""Kill -9 of the cloud brain during a consolidation round.

No worker process survives it, and the next start records the round as interrupted and runs it
again, with no traceback anywhere.
"""

import os
import time

import grpc
import pytest
from cloud_testlib import make_chunk
from faultlib import CloudProcess, wait_for
from nestor_core import nestor_pb2_grpc
from test_supervision import pid_alive

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` (children, grandchildren, ...), from /proc."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    out, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - out
        out |= frontier
    return out


def _ingest(address: str, n: int) -> None:
    with grpc.insecure_channel(address) as channel:
        acks = list(nestor_pb2_grpc.ExperienceStub(channel).Ingest(iter([make_chunk(first_seq=1, n=n)]), timeout=30))
    assert acks and acks[-1].acked_through_seq == n


def _rounds(db_path: str) -> list[tuple]:
    from cloud_brain.experience.store import ExperienceStore

    store = ExperienceStore(db_path)
    try:
        return store.query("SELECT experience_from, experience_to, error, version FROM rounds ORDER BY id")
    finally:
        store.close()


def test_cloud_killed_during_a_round_leaves_no_worker_and_the_round_is_rerun(tmp_path, monkeypatch):
    marker = tmp_path / "round.pid"
    monkeypatch.setenv("NESTOR_TEST_ROUND_PID", str(marker))
    monkeypatch.setenv("NESTOR_TEST_ROUND_SECONDS", "120")
    # Rounds as soon as there are 10 transitions; a failed round is retried after 1 s.
    schedule = {"enabled": True, "every_transitions": 10, "min_transitions": 1}
    schedule |= {"poll_seconds": 0.2, "failure_backoff_seconds": 1.0}
    cloud = CloudProcess(
        tmp_path / "cloud",
        str(tmp_path / "cloud" / "nestor.db"),
        extra={"consolidate": "cloud_testlib:slow_round", "schedule": schedule},
    )
    cloud.start()
    try:
        _ingest(cloud.address, 50)
        wait_for(marker.exists, 60, "the round to start in the worker")
        worker = int(marker.read_text())
        below = descendants(cloud.pid)
        assert worker in below, (worker, below)
        cloud.kill9()
        deadline = time.monotonic() + 30
        while any(pid_alive(p) for p in below) and time.monotonic() < deadline:
            time.sleep(0.1)
        survivors = [p for p in below if pid_alive(p)]
        assert not survivors, f"outlived the cloud: {survivors}"
        assert [row[2] for row in _rounds(cloud.db_path)] == ["running"]  # what the crash left behind

        # The next start records it as interrupted and consolidates the same experience again.
        marker.unlink()
        monkeypatch.setenv("NESTOR_TEST_ROUND_SECONDS", "0")
        cloud.start()
        wait_for(
            lambda: len(_rounds(cloud.db_path)) == 2 and _rounds(cloud.db_path)[1][2] == "", 60, "the re-run round"
        )
    finally:
        cloud.stop()
    (first, to, error, version), rerun = _rounds(cloud.db_path)
    assert error.startswith("interrupted") and version == 0
    assert rerun[0] == first and rerun[1] >= to and rerun[3] > 0
    logs = [(tmp_path / "cloud" / f"cloud-{i}.log").read_text() for i in (1, 2)]
    assert "interrupted" in logs[1]
    for text in logs:
        assert "Traceback" not in text, text
