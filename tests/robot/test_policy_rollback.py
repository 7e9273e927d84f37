"""Automatic rollback for real: the policy node process, DDS on loopback, a model that is clearly worse.

The driver plays a sim whose cost is the squared effort the policy commands, so a model with
huge gains costs far more. After the swap the node judges the new model over
rollback_window_ticks, reverts to the previous one, reports it (stats, status, policy/rollback)
and ignores the bad version when it is announced again. Its /metrics on 127.0.0.1 shows it.
"""

import hashlib
import json
import os
import socket
import subprocess
import sys
import urllib.request

import pytest
from policy_driver import Driver, finish, read_stats
from policy_models import JOINTS, REPO
from ros_testlib import launch_policy, policy_argv, random_domain_id

pytestmark = pytest.mark.slow

_SCRIPT = """
import sys
from cloud_brain.learning.policy_net import NestedPolicy, NetSpec
from cloud_brain.learning.policy_export import export_onnx

joints = tuple(sys.argv[1].split(","))
n = len(joints)
for arg in sys.argv[2:]:
    path, kp = arg.split("=")
    spec = NetSpec(task="kuka_track", controlled_joints=joints, passive_joints=(), kp=(float(kp),) * n,
                   kd=(30.0,) * n, effort_limit=(1e6,) * n, obs_scale=(1.0,) * (4 * n), hidden=8, key_features=8)
    with open(path, "wb") as f:
        f.write(export_onnx(NestedPolicy(spec, seed=0)))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _CostDriver(Driver):
    """The cost of a tick is the squared effort of the newest command."""

    def __init__(self, namespace, domain_id):
        super().__init__(namespace, domain_id)
        from nestor_core import topics
        from nestor_core.qos import EVENT_QOS

        self.rollbacks = []
        self.node.create_subscription(
            self.String, topics.POLICY_ROLLBACK, lambda m: self.rollbacks.append(json.loads(m.data)), EVENT_QOS
        )

    def _publish_tick(self):
        super()._publish_tick()
        if self.commands:
            self.cost_pub.publish(self.Float64(data=sum(x * x for x in self.commands[-1])))


def test_policy_node_rolls_back_a_worse_model(tmp_path):
    good, bad = tmp_path / "good.onnx", tmp_path / "bad.onnx"
    env = dict(os.environ, PYTHONPATH=str(REPO / "cloud_brain"))
    subprocess.run(
        [sys.executable, "-c", _SCRIPT, ",".join(JOINTS), f"{good}=300", f"{bad}=30000"],
        check=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )
    domain_id = random_domain_id()
    namespace = f"/rtest{os.getpid()}"
    run_dir = tmp_path / "run"
    stats_file = run_dir / "policy_stats.json"
    port = _free_port()
    argv = policy_argv(
        namespace,
        good,
        "initial_model_version:=1",
        f"run_dir:={run_dir}",
        "status_period_s:=0.2",
        "rollback_window_ticks:=50",
        "rollback_margin:=0.5",
        f"metrics_port:={port}",
    )
    proc, log = launch_policy(argv, tmp_path / "policy.log", domain_id)
    driver = _CostDriver(namespace, domain_id)
    announce = {
        "version": 2,
        "path": str(bad),
        "sha256": hashlib.sha256(bad.read_bytes()).hexdigest(),
        "task": "kuka_track",
    }
    try:
        driver.wait_connected(30.0, proc)
        driver.run(1.5)  # the pre-swap baseline
        driver.announce(announce)
        assert driver.run(15.0, until=lambda: read_stats(stats_file).get("rollbacks") == 1), read_stats(stats_file)
        stats = read_stats(stats_file)
        assert stats["model_version"] == 1 and stats["bad_versions"] == [2] and stats["swaps"] == 1
        event = stats["rollback_log"][-1]
        assert (event["version"], event["reverted_to"]) == (2, 1)
        assert event["post_cost"] > 1.5 * event["pre_cost"]
        assert stats["swap_log"][-1]["rollback"] is True
        assert driver.run(5.0, until=lambda: bool(driver.rollbacks))
        assert driver.rollbacks[0]["version"] == 2 and "after the swap" in driver.rollbacks[0]["reason"]
        # Announced again: ignored, never re-adopted.
        driver.announce(announce)
        driver.run(1.0)
        stats = read_stats(stats_file)
        assert stats["model_version"] == 1 and stats["swaps"] == 1 and stats["rollbacks"] == 1
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        for line in ("nestor_robot_model_version 1.0", "nestor_robot_rollbacks 1.0", "nestor_robot_swaps 1.0"):
            assert line in text, text
        assert "nestor_robot_missed_ticks" in text and "nestor_robot_spool_depth_transitions" in text
    finally:
        _, output = finish(driver, proc, log)
    assert proc.returncode == 0, output
