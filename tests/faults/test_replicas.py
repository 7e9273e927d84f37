"""Faults of a cloud made of two `nestor-cloud serve` replicas on one PostgreSQL database.

  * kill -9 of one replica mid-stream: every robot lists both addresses and fails over;
  * PostgreSQL restarted (immediate, like a crash) mid-stream;
  * two replicas racing for the same consolidation round, and the round's holder killed mid-round.

Each asserts uploaded == stored: seqs 1..N stored once each, contiguous, no duplicate, no drop.
"""

import threading
import time

import grpc
import pytest
from cloud_brain.experience.store import ExperienceStore
from faultlib import CloudProcess, SpoolWriter, assert_exactly_once, drained, wait_for
from nestor_core import nestor_pb2, nestor_pb2_grpc
from nestor_robot.spool import Spool
from nestor_robot.uplink import Uplink, UplinkConfig

pytestmark = pytest.mark.slow

ROBOTS = 4


def start_replicas(tmp_path, dsn, count=2, extra=None):
    replicas = [CloudProcess(tmp_path / f"replica{i}", dsn, extra=extra) for i in range(count)]
    for replica in replicas:
        replica.start()
    return replicas


class Fleet:
    """ROBOTS spool writers + uplinks; robot k lists the replicas starting at k % len (spread)."""

    def __init__(self, tmp_path, addresses, period_s=0.01):
        self.stop_event = threading.Event()
        self.spools, self.uplinks, self.writers, self.threads = [], [], [], []
        for k in range(ROBOTS):
            spool = Spool(str(tmp_path / f"spool{k}.sqlite"), f"r{k}")
            order = addresses[k % len(addresses) :] + addresses[: k % len(addresses)]
            uplink = Uplink(
                spool, ",".join(order), UplinkConfig(backoff_min_s=0.05, backoff_max_s=0.5, ack_timeout_s=5.0)
            )
            self.spools.append(spool)
            self.uplinks.append(uplink)
            self.writers.append(SpoolWriter(spool, f"r{k}", chunk=10, period_s=period_s).start())
            thread = threading.Thread(target=uplink.run, args=(self.stop_event,), daemon=True)
            thread.start()
            self.threads.append(thread)

    def acked(self) -> list[int]:
        return [s.acked_through() for s in self.spools]

    def wait_progress(self, by=100, timeout=30, what="acks"):
        base = self.acked()
        wait_for(lambda: all(a > b + by for a, b in zip(self.acked(), base, strict=True)), timeout, what)

    def finish(self) -> list[int]:
        uploaded = [w.stop() for w in self.writers]
        wait_for(lambda: all(drained(s) for s in self.spools), 60, "every spool to drain")
        return uploaded

    def close(self):
        for w in self.writers:
            w.stop()
        self.stop_event.set()
        for t in self.threads:
            t.join(10)
        for s in self.spools:
            s.close()


def check_exactly_once(dsn, uploaded):
    for k, n in enumerate(uploaded):
        assert n > 0
        assert_exactly_once(dsn, f"r{k}", n)


def test_kill9_of_one_replica_mid_stream_robots_fail_over(tmp_path, pg_dsn):
    replicas = start_replicas(tmp_path, pg_dsn)
    fleet = Fleet(tmp_path, [r.address for r in replicas])
    try:
        fleet.wait_progress(what="acks from both replicas")
        replicas[0].kill9()
        # Every robot, including those that were streaming to the dead replica, is acked again.
        fleet.wait_progress(by=200, timeout=30, what="acks after the failover")
        uploaded = fleet.finish()
        dropped = [s.stats()["dropped"] for s in fleet.spools]
    finally:
        fleet.close()
        for r in replicas:
            r.stop()
    moved = [u.stats()["failovers"] for u in fleet.uplinks]
    assert sum(1 for m in moved if m >= 1) >= ROBOTS // 2, moved  # those on replica 0 moved
    assert dropped == [0] * ROBOTS
    check_exactly_once(pg_dsn, uploaded)


def test_postgres_restarted_mid_stream(tmp_path, pg_server, pg_dsn):
    if not hasattr(pg_server, "restart"):
        pytest.skip("external server: not restarted by tests")
    replicas = start_replicas(tmp_path, pg_dsn)
    fleet = Fleet(tmp_path, [r.address for r in replicas])
    try:
        fleet.wait_progress(what="acks before the restart")
        pg_server.restart("immediate")
        fleet.wait_progress(by=200, timeout=60, what="acks after PostgreSQL came back")
        uploaded = fleet.finish()
        for r in replicas:
            assert r.popen.poll() is None, f"a replica died with the database:\n{r.log_tail()}"
    finally:
        fleet.close()
        for r in replicas:
            r.stop()
    check_exactly_once(pg_dsn, uploaded)


def _rounds(dsn):
    store = ExperienceStore(dsn)
    try:
        return store.query(
            "SELECT experience_from, experience_to, version, error FROM rounds WHERE task = 'arm' ORDER BY id"
        )
    finally:
        store.close()


def _subscribe_latest(address, timeout=20.0):
    with grpc.insecure_channel(address) as channel:
        call = nestor_pb2_grpc.ModelsStub(channel).Subscribe(
            nestor_pb2.SubscribeRequest(robot_id="watcher", task="arm", current_version=0), timeout=timeout
        )
        for update in call:
            return update.version
    return 0


def test_two_replicas_race_for_rounds_and_one_takes_over_a_dead_holder(tmp_path, pg_dsn, monkeypatch):
    monkeypatch.setenv("NESTOR_TEST_ROUND_SLEEP", "3")
    schedule = {
        "enabled": True,
        "every_transitions": 400,
        "min_transitions": 1,
        "every_seconds": 3600.0,
        "poll_seconds": 0.2,
        "failure_backoff_seconds": 0.5,
    }
    extra = {
        "schedule": schedule,
        "consolidate": "cloud_testlib:replica_round",
        "store": {"lease_seconds": 3.0, "watch_seconds": 0.2},
    }
    replicas = start_replicas(tmp_path, pg_dsn, extra=extra)
    fleet = Fleet(tmp_path, [r.address for r in replicas], period_s=0.02)
    try:
        # Both replicas see every round due at the same time; the lease lets one run it.
        wait_for(lambda: len([r for r in _rounds(pg_dsn) if not r[3]]) >= 2, 90, "two rounds")
        # Kill the replica that holds the next round's lease while that round runs.
        store = ExperienceStore(pg_dsn)
        try:
            holder = wait_for(
                lambda: store.query(
                    "SELECT holder FROM leases WHERE name = 'round:arm' AND expires_unix > ?", (time.time(),)
                ),
                60,
                "a round in flight",
            )
        finally:
            store.close()
        pid = int(holder[0][0].split(":")[1])
        victim = next(r for r in replicas if r.pid == pid)
        survivor = next(r for r in replicas if r is not victim)
        done_before = len([r for r in _rounds(pg_dsn) if not r[3]])
        victim.kill9()
        # The survivor takes the lease over once it expires and runs that round itself.
        wait_for(
            lambda: len([r for r in _rounds(pg_dsn) if not r[3]]) > done_before,
            60,
            "the survivor to run the dead holder's round",
        )
        uploaded = fleet.finish()
        # A version accepted by a round reaches the robots subscribed to the surviving replica.
        latest = max(r[2] for r in _rounds(pg_dsn) if not r[3])  # finished rounds (a running one has error set)
        wait_for(lambda: _subscribe_latest(survivor.address) == latest, 20, "the newest version on the survivor")
    finally:
        fleet.close()
        for r in replicas:
            r.stop()
    rounds = [r for r in _rounds(pg_dsn) if not r[3]]
    # Exactly one replica ran each round: the experience ranges chain without overlap.
    for (_, prev_to, _, _), (start, end, _, _) in zip(rounds, rounds[1:], strict=False):
        assert start == prev_to and end > start, rounds
    versions = [r[2] for r in rounds]
    assert len(set(versions)) == len(versions), rounds
    check_exactly_once(pg_dsn, uploaded)
