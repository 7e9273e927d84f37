"""Fault (d): the cloud's disk fills up, then space returns.

The cloud's database lives on a small tmpfs mounted for the test (we are root in CI; without the
privilege the test is skipped, never faked). While the disk is full every chunk is refused with
RESOURCE_EXHAUSTED naming the full disk, counted as reject reason `disk_full`, and nothing is
acknowledged, so the robot keeps its spool. When space returns the uplink resumes by itself and
uploaded == stored.
"""

import errno
import os
import subprocess

import grpc
import pytest
from faultlib import CloudProcess, assert_exactly_once, drained, streaming, wait_for
from nestor_core import nestor_pb2, nestor_pb2_grpc
from nestor_robot.spool import Spool
from nestor_robot.uplink import UplinkConfig

pytestmark = pytest.mark.slow


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); needs root")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(path) -> int:
    """Write zeros to `path` until the filesystem is full; returns the bytes written."""
    written = 0
    block = b"\0" * 65536
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            try:
                written += os.write(fd, block)
            except OSError as err:
                if err.errno != errno.ENOSPC:
                    raise
                if len(block) == 1:
                    break
                block = block[: len(block) // 2]  # fill the last bytes too
    finally:
        os.fsync(fd)
        os.close(fd)
    return written


def status(address):
    with grpc.insecure_channel(address) as channel:
        return nestor_pb2_grpc.FleetStub(channel).GetStatus(nestor_pb2.StatusRequest(), timeout=10)


def test_disk_full_refuses_with_resource_exhausted_then_resumes(small_disk, tmp_path):
    cloud = CloudProcess(tmp_path / "cloud", str(small_disk / "nestor.db"))
    cloud.start()
    spool = Spool(str(tmp_path / "spool.sqlite"), "r1")
    config = UplinkConfig(backoff_min_s=0.05, backoff_max_s=0.5)
    filler = small_disk / "filler"
    try:
        with streaming(spool, cloud.address, config, 0.01) as (uplink, writer):
            wait_for(lambda: spool.acked_through() > 200, 20, "acks before the disk fills")
            fill(filler)
            wait_for(lambda: "disk full" in uplink.stats()["last_error"], 20, "a disk-full refusal")
            error = uplink.stats()["last_error"]
            assert error.startswith("RESOURCE_EXHAUSTED") and "disk full" in error, error
            stalled = spool.acked_through()
            depth = spool.stats()["depth_transitions"]
            wait_for(lambda: spool.stats()["depth_transitions"] > depth + 200, 10, "the spool to grow")
            assert spool.acked_through() == stalled, "something was acknowledged while the disk was full"
            assert status(cloud.address).rejected_by_reason["disk_full"] >= 1
            filler.unlink()
            wait_for(lambda: spool.acked_through() > stalled, 20, "acks after space returned")
            uploaded = writer.stop()
            wait_for(lambda: drained(spool), 30, "the spool to drain")
    finally:
        cloud.stop()
    assert spool.stats()["dropped"] == 0 and not writer.errors
    spool.close()
    assert_exactly_once(cloud.db_path, "r1", uploaded)
