"""Fault (e): online backup while the cloud ingests, and a verified restore.

`nestor-cloud backup` copies the live database in one read transaction; each backup taken during
ingest restores (`nestor-cloud restore`) to a consistent database: integrity_check ok, every
robot's seqs contiguous from 1, counters matching, every chunk parsing. A restored database then
serves: the robots resume from where the backup left off and the cloud de-duplicates the rest.
"""

import json
import sqlite3
import subprocess
import threading

import pytest
from cloud_brain.experience import backup
from faultlib import BIN, REPO, CloudProcess, SpoolWriter, assert_exactly_once, drained, wait_for
from nestor_robot.spool import Spool
from nestor_robot.uplink import Uplink, UplinkConfig

# `nestor-cloud backup` copies the SQLite file; a PostgreSQL store is backed up with pg_dump.
pytestmark = [pytest.mark.slow, pytest.mark.parametrize("cloud", ["sqlite"], indirect=True)]


def cli(*args, check=True):
    done = subprocess.run([str(BIN / "nestor-cloud"), *args], capture_output=True, text=True, cwd=REPO, timeout=60)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def test_backup_during_ingest_restores_consistent(cloud, tmp_path):
    robots = ["r1", "r2", "r3"]
    spools = {r: Spool(str(tmp_path / f"{r}.sqlite"), r) for r in robots}
    uplinks = {r: Uplink(spools[r], cloud.address, UplinkConfig(backoff_min_s=0.05, backoff_max_s=0.5)) for r in robots}
    stop = threading.Event()
    threads = [threading.Thread(target=u.run, args=(stop,), daemon=True) for u in uplinks.values()]
    writers = [SpoolWriter(spools[r], r, chunk=7, period_s=0.005).start() for r in robots]
    for t in threads:
        t.start()
    backups = []
    try:
        for i in range(3):
            wait_for(lambda i=i: min(s.acked_through() for s in spools.values()) > 300 * (i + 1), 20, "ingest")
            out = tmp_path / f"backup-{i}.db"
            done = cli("backup", "--db", cloud.db_path, "--out", str(out), "--json")
            report = json.loads(done.stdout)
            assert report["ok"] and report["integrity"] == "ok" and report["robots"] == 3
            backups.append((out, report))
        uploaded = {r: w.stop() for r, w in zip(robots, writers, strict=True)}
        wait_for(lambda: all(drained(s) for s in spools.values()), 30, "the spools to drain")
    finally:
        for w in writers:
            w.stop()
        stop.set()
        for t in threads:
            t.join(10)
    cloud.stop()
    for r in robots:
        assert_exactly_once(cloud.db_path, r, uploaded[r])

    # Every backup restores to a consistent database, and the later ones hold more.
    totals = []
    for i, (out, report) in enumerate(backups):
        target = tmp_path / f"restored-{i}" / "nestor.db"
        done = cli("restore", "--from", str(out), "--db", str(target), "--json")
        restored = json.loads(done.stdout)
        assert restored["ok"] and restored["counts"] == report["counts"]
        check = backup.verify(str(target))
        assert check.ok, check.problems
        totals.append(check.transitions)
    assert totals == sorted(totals) and totals[0] > 0

    # The restored database serves: the robots resend what it lacks, exactly once.
    restored_cloud = CloudProcess(tmp_path / "restored-cloud", str(tmp_path / "restored-0" / "nestor.db"))
    restored_cloud.start()
    try:
        for r in robots:
            fresh = Spool(str(tmp_path / f"{r}-again.sqlite"), r)
            writer = SpoolWriter(fresh, r, chunk=7, period_s=0, max_transitions=uploaded[r])
            writer._run()  # refill a spool with the same seqs, synchronously
            uplink = Uplink(fresh, restored_cloud.address, UplinkConfig(backoff_min_s=0.05, backoff_max_s=0.5))
            stop = threading.Event()
            thread = threading.Thread(target=uplink.run, args=(stop,), daemon=True)
            thread.start()
            try:
                wait_for(lambda f=fresh: drained(f), 30, f"{r} to drain into the restored cloud")
            finally:
                stop.set()
                thread.join(10)
            assert fresh.acked_through() == uploaded[r]
            fresh.close()
    finally:
        restored_cloud.stop()
    for r in robots:
        assert_exactly_once(restored_cloud.db_path, r, uploaded[r])
    for s in spools.values():
        s.close()


def test_restore_refuses_a_damaged_backup_and_an_existing_db(cloud, tmp_path):
    out = tmp_path / "backup.db"
    cli("backup", "--db", cloud.db_path, "--out", str(out))
    assert "exists" in cli("backup", "--db", cloud.db_path, "--out", str(out), check=False).stderr
    target = tmp_path / "restored.db"
    cli("restore", "--from", str(out), "--db", str(target))
    refused = cli("restore", "--from", str(out), "--db", str(target), check=False)
    assert refused.returncode == 1 and "--force" in refused.stderr
    # A backup whose sequence state was tampered with fails verification and is not installed.
    damaged = tmp_path / "damaged.db"
    damaged.write_bytes(out.read_bytes())
    with sqlite3.connect(damaged) as conn:
        conn.execute(
            "INSERT INTO robots (robot_id, task, last_seq, first_contact_unix, last_contact_unix)"
            " VALUES ('ghost', 'arm', 5, 0, 0)"
        )
    refused = cli("restore", "--from", str(damaged), "--db", str(tmp_path / "x.db"), check=False)
    assert refused.returncode == 1 and "ghost" in refused.stderr and "failed verification" in refused.stderr
    assert not (tmp_path / "x.db").exists()
