"""Fault (a): kill -9 the cloud brain mid-stream, restart it on the same port and db; the uplink resumes.

uploaded == stored, with no duplicate and no corrupt row: an ack lost with the crash makes the
robot resend chunks the cloud already committed, and the cloud stores them once.
"""

import pytest
from faultlib import assert_exactly_once, drained, streaming, wait_for
from nestor_robot.spool import Spool
from nestor_robot.uplink import UplinkConfig

pytestmark = pytest.mark.slow


def test_cloud_killed_mid_stream_restarts_and_the_uplink_resumes(cloud, tmp_path):
    spool = Spool(str(tmp_path / "spool.sqlite"), "r1")
    config = UplinkConfig(backoff_min_s=0.05, backoff_max_s=0.5, ack_timeout_s=5.0)
    with streaming(spool, cloud.address, config, 0.01) as (uplink, writer):
        for _ in range(2):
            acked = spool.acked_through()
            wait_for(lambda a=acked: spool.acked_through() > a + 200, 20, "acks before the crash")
            cloud.kill9()
            # An ack already on the wire when the cloud died may still be applied: take the
            # baseline once the uplink has seen its stream end.
            wait_for(lambda: not uplink.stats()["connected"], 10, "the uplink to see the stream end")
            before = spool.stats()
            # The cloud is gone: the writer keeps appending, nothing is acked, the spool grows.
            wait_for(
                lambda b=before: spool.stats()["depth_transitions"] > b["depth_transitions"] + 100,
                10,
                "the spool to grow while the cloud is down",
            )
            assert spool.acked_through() == before["acked_through"]
            cloud.start()
            wait_for(lambda a=before["acked_through"]: spool.acked_through() > a, 20, "acks after the restart")
        uploaded = writer.stop()
        wait_for(lambda: drained(spool), 30, "the spool to drain")
    stats = uplink.stats()
    assert stats["reconnects"] >= 2 and stats["errors"] >= 2
    assert spool.stats()["dropped"] == 0 and not writer.errors
    spool.close()
    cloud.stop()
    assert_exactly_once(cloud.db_path, "r1", uploaded)
