"""Fault: kill -9 the policy node mid-run and restart it. Nothing it recorded is lost or duplicated.

A plain rclpy driver plays the sim with joint states whose header stamp is the tick number. The first
policy process runs with a 30 s flush period, so when it is killed nothing it recorded has reached the
spool yet (without the memory-mapped ring, all of it would be lost). The restarted node commits the
dead process's ring to the spool; at the end the spool holds every tick the first process answered,
once, with contiguous seqs, followed by the second process's ticks.
"""

import os
import random
import signal
import subprocess
import time

import pytest
from nestor_core.experience import from_chunk
from nestor_robot.spool import Spool
from policy_testlib import tiny_policy
from ros_testlib import launch_policy, policy_argv

pytestmark = pytest.mark.slow


class Driver:
    """Joint states + target at 100 Hz with stamp = tick number; counts the commands that come back."""

    def __init__(self, namespace: str, domain_id: int):
        import rclpy
        from nestor_core import topics
        from nestor_core.qos import COMMAND_QOS, SENSOR_QOS
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Float64MultiArray

        self.rclpy, self.JointState = rclpy, JointState
        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = Node("driver", namespace=namespace, context=self.context)
        self.state = self.node.create_publisher(JointState, topics.JOINT_STATES, SENSOR_QOS)
        self.target = self.node.create_publisher(JointState, topics.TARGET, SENSOR_QOS)
        self.commands = 0
        self.node.create_subscription(Float64MultiArray, topics.COMMANDS, self._on_command, COMMAND_QOS)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.tick = 0

    def _on_command(self, msg) -> None:
        self.commands += 1

    def connected(self) -> bool:
        self.executor.spin_once(timeout_sec=0.05)
        return self.state.get_subscription_count() > 0 and self.node.count_publishers("effort_controller/commands") > 0

    def run(self, seconds: float) -> None:
        end, next_t = time.monotonic() + seconds, time.monotonic()
        while time.monotonic() < end:
            self.tick += 1
            state = self.JointState(name=["j0"], position=[0.01 * (self.tick % 50)], velocity=[0.0])
            state.header.stamp.sec = self.tick
            self.target.publish(self.JointState(name=["j0"], position=[0.0], velocity=[0.0]))
            self.state.publish(state)
            next_t += 0.01
            while (left := next_t - time.monotonic()) > 0:
                self.executor.spin_once(timeout_sec=left)

    def settle(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.05)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        self.rclpy.try_shutdown(context=self.context)


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_policy_killed_mid_run_loses_and_duplicates_nothing(tmp_path):
    model = tmp_path / "tiny.onnx"
    model.write_bytes(tiny_policy())
    spool_path, ring_dir = tmp_path / "spool.sqlite", tmp_path / "ring"
    ring_dir.mkdir()
    domain_id, namespace = random.randint(1, 100), f"/kill{os.getpid()}"

    def start(flush_period_s: float, log_name: str) -> subprocess.Popen:
        argv = policy_argv(
            namespace,
            model,
            f"spool_path:={spool_path}",
            f"ring_dir:={ring_dir}",
            f"run_dir:={tmp_path / log_name}.d",
            f"flush_period_s:={flush_period_s}",
            "status_period_s:=0.2",
        )
        return launch_policy(argv, tmp_path / log_name, domain_id)[0]

    driver = Driver(namespace, domain_id)
    procs = [start(30.0, "policy1.log")]
    try:
        _wait(driver.connected, 30, "the first policy process")
        driver.run(2.0)
        driver.settle(0.3)
        answered = driver.commands  # every command is one tick recorded (recorded right after the publish)
        assert answered > 50
        last_tick_of_first = driver.tick
        os.kill(procs[0].pid, signal.SIGKILL)
        procs[0].wait(10)
        with Spool(str(spool_path), "r1") as spool:
            assert spool.stats()["appended"] == 0  # nothing was flushed: all of it sits in the ring

        procs.append(start(0.2, "policy2.log"))
        # DDS still remembers the killed process's endpoints for a while: wait for the new one's own word.
        _wait(
            lambda: "policy ready" in (tmp_path / "policy2.log").read_text() or procs[1].poll() is not None,
            60,
            "the restarted policy process",
        )
        assert procs[1].poll() is None, (tmp_path / "policy2.log").read_text()
        commands_before = driver.commands
        driver.run(1.5)
        driver.settle(0.3)
        answered_after = driver.commands - commands_before
        procs[1].send_signal(signal.SIGINT)
        assert procs[1].wait(15) == 0, (tmp_path / "policy2.log").read_text()
    finally:
        driver.close()
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)

    with Spool(str(spool_path), "r1") as spool:
        chunks = spool.pending(10**6)
        stats = spool.stats()
    batches = [from_chunk(c) for c in chunks]
    seqs = [seq for b in batches for seq in range(b.first_seq, b.last_seq + 1)]
    stamps = [int(s) for b in batches for s in b.stamp]
    assert seqs == list(range(1, len(seqs) + 1)) and stats["dropped"] == 0
    assert len(set(stamps)) == len(stamps), "a transition was stored twice"
    first = [s for s in stamps if s <= last_tick_of_first]  # the first process's ticks come first
    assert stamps[: len(first)] == first
    # Every tick the killed process answered is stored (it may have recorded one more than it answered).
    assert answered <= len(first) <= answered + 2, (answered, len(first))
    assert len(stamps) - len(first) >= answered_after
    log2 = (tmp_path / "policy2.log").read_text()
    assert f"recorder ring of the previous policy process: {len(first)} transitions committed" in log2
    assert not any(ring_dir.iterdir()), "a cleanly stopped node leaves no ring behind"
