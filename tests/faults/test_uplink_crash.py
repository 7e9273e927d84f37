"""Fault (c): kill -9 a robot's uplink process (the `uplink_node` console script) and restart it.

The spool is shared with a writer in this process (the policy node's role). Whatever the killed
uplink had in flight is resent by the new one; the cloud stores it once.
"""

import os
import signal
import socket
import subprocess
import urllib.request

import pytest
from faultlib import BIN, DETACHED, SpoolWriter, assert_exactly_once, drained, wait_for
from nestor_core.lifeline import stop_process
from nestor_robot.spool import Spool

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_uplink(spool_path, address, log_path, metrics_port=0):
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", PYTHONUNBUFFERED="1")
    with open(log_path, "ab") as log:
        params = {
            "robot_id": "r1",
            "spool_path": spool_path,
            "cloud_address": address,
            "backoff_max_s": 0.5,
            "window": 4,
            "metrics_port": metrics_port,
            "status_period_s": 0.2,
        }
        argv = [str(BIN / "uplink_node"), "--ros-args"]
        for name, value in params.items():
            argv += ["-p", f"{name}:={value}"]
        return subprocess.Popen(argv, stdout=log, env=env, **DETACHED)


def test_uplink_process_killed_and_restarted(cloud, tmp_path):
    spool_path = str(tmp_path / "spool.sqlite")
    spool = Spool(spool_path, "r1")
    writer = SpoolWriter(spool, "r1", chunk=10, period_s=0.01).start()
    log_path = tmp_path / "uplink.log"
    port = _free_port()
    procs = [_start_uplink(spool_path, cloud.address, log_path, port)]
    try:
        # The uplink's /metrics on 127.0.0.1 (refreshed with its status, every 0.2 s here).
        def metrics():
            try:
                text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
            except OSError:
                return ""
            return text if 'nestor_robot_ack_latency_seconds{quantile="0.99"}' in text else ""

        text = wait_for(metrics, 30, "the uplink's /metrics")
        for name in (
            "nestor_robot_spool_depth_transitions",
            "nestor_robot_acked_seq",
            "nestor_robot_uplink_connected",
            "nestor_robot_dropped_transitions",
            "nestor_robot_uplink_reconnects",
        ):
            assert name in text, text
        for _ in range(2):
            acked = spool.acked_through()
            wait_for(lambda a=acked: spool.acked_through() > a + 200, 30, f"acks from the uplink ({log_path})")
            os.kill(procs[-1].pid, signal.SIGKILL)
            procs[-1].wait(10)
            stalled = spool.acked_through()
            wait_for(lambda s=stalled: spool.stats()["depth_transitions"] > 100, 10, "the spool to grow")
            assert spool.acked_through() == stalled
            procs.append(_start_uplink(spool_path, cloud.address, log_path))
        uploaded = writer.stop()
        wait_for(lambda: drained(spool), 30, "the spool to drain")
    finally:
        writer.stop()
        for proc in procs:
            stop_process(proc, signal.SIGINT, timeout_s=10, kill_timeout_s=5)
    assert spool.stats()["dropped"] == 0 and not writer.errors
    spool.close()
    cloud.stop()
    assert_exactly_once(cloud.db_path, "r1", uploaded)
