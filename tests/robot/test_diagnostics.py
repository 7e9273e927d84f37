"""/diagnostics: every node of a robot publishes diagnostic_msgs/DiagnosticArray there.

Real processes over DDS; each entry is named by its node's full name, hardware_id = robot id,
beside the node's own status.
"""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

NESTOR = Path(sys.executable).parent / "nestor"
NODES = ["bag_recorder", "sim_bridge", "perception", "policy", "uplink", "weight_sync"]


@pytest.mark.slow
@pytest.mark.skipif(not (Path(sys.executable).parent / "sim_bridge").exists(), reason="nestor_sim not installed")
def test_every_node_publishes_on_diagnostics(tmp_path):
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    from nestor_core import topics
    from nestor_core.qos import STATUS_QOS
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    domain = random.Random(os.getpid() ^ 0xD1A6).randint(1, 100)
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    argv = [str(NESTOR), "robot", "--robot-id", "diag7", "--task", "crane", "--record", "--duration", "40"]
    argv += ["--run-dir", str(tmp_path / "run"), "--cloud", "127.0.0.1:9"]
    robot = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    context = Context()
    rclpy.init(context=context, domain_id=domain)
    seen: dict[str, DiagnosticStatus] = {}
    own: list[DiagnosticArray] = []
    try:
        node = Node("diagnostics_listener", context=context)
        node.create_subscription(
            DiagnosticArray, topics.DIAGNOSTICS, lambda m: seen.update({s.name: s for s in m.status}), STATUS_QOS
        )
        node.create_subscription(DiagnosticArray, "/diag7/" + topics.POLICY_STATUS, own.append, STATUS_QOS)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        deadline = time.monotonic() + 35
        wanted = {f"/diag7/{name}" for name in NODES}
        while time.monotonic() < deadline and not (wanted <= set(seen) and own):
            executor.spin_once(timeout_sec=0.2)
            assert robot.poll() is None, robot.communicate()[0][-3000:]
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)
        robot.send_signal(signal.SIGINT)  # the CLI's own stop: it stops every node it started
        out = robot.communicate(timeout=60)[0]
    assert wanted <= set(seen), f"missing {sorted(wanted - set(seen))}; got {sorted(seen)}\n{out[-2000:]}"
    for name in wanted:
        status = seen[name]
        assert status.hardware_id == "diag7", name
        assert status.level in (DiagnosticStatus.OK, DiagnosticStatus.WARN), (name, status.message)
        assert status.values, name
    # The policy's own status topic still carries the same report; no model yet, so WARN.
    policy = {kv.key for kv in seen["/diag7/policy"].values}
    assert {"model_version", "missed_ticks"} <= policy
    assert {kv.key for kv in own[-1].status[0].values} == policy
    assert seen["/diag7/policy"].level == DiagnosticStatus.WARN
    assert {kv.key: kv.value for kv in seen["/diag7/sim_bridge"].values}["task"] == "crane"
    assert "connected" in {kv.key for kv in seen["/diag7/weight_sync"].values}
    assert seen["/diag7/uplink"].level == DiagnosticStatus.WARN  # nothing listens on 127.0.0.1:9
