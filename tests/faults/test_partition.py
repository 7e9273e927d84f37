"""Fault (b): a 60 s network partition between robot and cloud, through a loopback TCP proxy.

The partition starts as a black hole (connections stay open, nothing arrives: the robot only
notices by its ack timeout) and turns into refused connections; meanwhile the spool grows. After
the partition heals the spool drains, and uploaded == stored with no duplicate or corrupt row.
"""

import time

import pytest
from faultlib import assert_exactly_once, drained, streaming, wait_for
from nestor_robot.spool import Spool
from nestor_robot.uplink import UplinkConfig
from tcp_proxy import TcpProxy

pytestmark = pytest.mark.slow

PARTITION_S = 60.0


def test_sixty_second_partition_spool_grows_then_drains(cloud, tmp_path):
    proxy = TcpProxy(cloud.address)
    spool = Spool(str(tmp_path / "spool.sqlite"), "r1")
    config = UplinkConfig(backoff_min_s=0.05, backoff_max_s=2.0, ack_timeout_s=3.0)
    depths = []
    try:
        with streaming(spool, proxy.address, config, 0.02) as (uplink, writer):
            wait_for(lambda: spool.acked_through() > 200, 20, "acks before the partition")
            acked_at_cut = spool.acked_through()
            started = time.monotonic()
            proxy.partition("blackhole")
            while time.monotonic() - started < PARTITION_S:
                if proxy.mode == "blackhole" and time.monotonic() - started > PARTITION_S / 2:
                    proxy.partition("refuse")
                depths.append(spool.stats()["depth_transitions"])
                time.sleep(1.0)
            # Chunks in flight at the cut may still have been acked; nothing after that.
            acked_in_partition = spool.acked_through()
            assert acked_in_partition - acked_at_cut <= 8 * 10
            assert depths[-1] > depths[0] + 1000, f"the spool did not grow: {depths}"
            proxy.heal()
            healed = time.monotonic()
            wait_for(lambda: spool.acked_through() > acked_in_partition, 30, "acks after the partition")
            resumed_s = time.monotonic() - healed
            uploaded = writer.stop()
            # A minute of backlog (~3,000 chunks) drains at the store's commit rate: a bound, not a speed test.
            wait_for(lambda: drained(spool), 120, "the spool to drain")
    finally:
        proxy.close()
    stats = uplink.stats()
    assert "ACK_TIMEOUT" in stats["last_error"] or "UNAVAILABLE" in stats["last_error"], stats["last_error"]
    assert proxy.refused > 0, "the refuse phase never saw a reconnect attempt"
    assert resumed_s < 30
    assert spool.stats()["dropped"] == 0 and not writer.errors
    spool.close()
    cloud.stop()
    assert_exactly_once(cloud.db_path, "r1", uploaded)
