"""The sim side of the policy node tests: a plain rclpy driver, and readers of the node's stats and spool."""

import json
import math
import sqlite3
import time
from pathlib import Path

from policy_models import JOINTS
from ros_testlib import launch_policy, policy_argv, stop_policy


def read_stats(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def spool_rows(path: Path) -> list[tuple[int, int]]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        return db.execute("SELECT first_seq, last_seq FROM chunks ORDER BY first_seq").fetchall()
    finally:
        db.close()


def assert_contiguous(rows):
    assert rows, "spool holds no chunks"
    assert rows[0][0] == 1
    for (_, last), (first, _) in zip(rows, rows[1:], strict=False):
        assert first == last + 1, rows


def start_policy(models, tmp_path, namespace, domain_id, *params):
    """policy_node from models[0] (version 1) with its spool and run dir in tmp_path, plus `params`."""
    argv = policy_argv(
        namespace,
        models[0],
        "initial_model_version:=1",
        f"spool_path:={tmp_path / 'spool.sqlite'}",
        f"run_dir:={tmp_path / 'run'}",
        "status_period_s:=0.2",
        *params,
    )
    return launch_policy(argv, tmp_path / "policy.log", domain_id)


def finish(driver, proc, log) -> tuple[int | None, str]:
    """Close the driver, stop the policy node; its exit code and its log's text."""
    driver.close()
    code = stop_policy(proc, log)
    return code, Path(log.name).read_text()


class Driver:
    """Plays the sim: joint states + target + cost at 100 Hz, collects commands."""

    def __init__(self, namespace: str, domain_id: int):
        import rclpy
        from nestor_core import topics
        from nestor_core.qos import COMMAND_QOS, EVENT_QOS, SENSOR_QOS
        from rclpy.context import Context
        from rclpy.node import Node
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Float64, Float64MultiArray, String

        self.rclpy = rclpy
        self.JointState, self.Float64, self.String = JointState, Float64, String
        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = Node("driver", namespace=namespace, context=self.context)
        self.state_pub = self.node.create_publisher(JointState, topics.JOINT_STATES, SENSOR_QOS)
        self.target_pub = self.node.create_publisher(JointState, topics.TARGET, SENSOR_QOS)
        self.cost_pub = self.node.create_publisher(Float64, topics.COST, COMMAND_QOS)
        self.model_pub = self.node.create_publisher(String, topics.MODEL_UPDATE, EVENT_QOS)
        self.commands = []
        self.command_times = []
        self.node.create_subscription(Float64MultiArray, topics.COMMANDS, self._on_command, COMMAND_QOS)
        from diagnostic_msgs.msg import DiagnosticArray
        from nestor_core.qos import STATUS_QOS

        self.statuses = []  # (monotonic time, DiagnosticStatus)
        self.node.create_subscription(
            DiagnosticArray,
            topics.POLICY_STATUS,
            lambda m: self.statuses.extend((time.monotonic(), s) for s in m.status),
            STATUS_QOS,
        )
        self.nan_joint = None  # set: that joint's position is published as NaN
        self.corrupt = None  # set: (names, position, velocity) -> the same, malformed
        from rclpy.executors import SingleThreadedExecutor

        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.t = 0.0

    def _on_command(self, msg) -> None:
        self.commands.append(list(msg.data))
        self.command_times.append(time.monotonic())

    def commands_between(self, start: float, end: float) -> list[list[float]]:
        return [c for c, t in zip(self.commands, self.command_times, strict=True) if start <= t < end]

    def wait_connected(self, timeout: float, proc) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.state_pub.get_subscription_count() > 0 and self.node.count_publishers("effort_controller/commands"):
                return
            assert proc.poll() is None, "policy_node exited early"
            self.executor.spin_once(timeout_sec=0.05)
        raise AssertionError("policy_node did not connect")

    def run(self, seconds: float, until=None) -> bool:
        """Publish at 100 Hz for `seconds` (or until `until()` is true); returns until()'s value."""
        period = 0.01
        end = time.monotonic() + seconds
        next_t = time.monotonic()
        while time.monotonic() < end:
            self._publish_tick()
            next_t += period
            while True:
                left = next_t - time.monotonic()
                if left <= 0:
                    break
                self.executor.spin_once(timeout_sec=left)
            if until is not None and until():
                return True
        return until() if until is not None else True

    def _publish_tick(self) -> None:
        self.t += 0.01
        q = [0.1 * math.sin(self.t + i) for i in range(len(JOINTS))]
        qd = [0.1 * math.cos(self.t + i) for i in range(len(JOINTS))]
        # A different joint order (plus an extra joint) than the model's: the node maps by name.
        names = [*reversed(JOINTS), "extra_joint"]
        if self.nan_joint is not None:
            q[JOINTS.index(self.nan_joint)] = float("nan")
        position, velocity = [*reversed(q), 0.0], [*reversed(qd), 0.0]
        if self.corrupt is not None:
            names, position, velocity = self.corrupt(names, position, velocity)
        state = self.JointState(name=names, position=position, velocity=velocity)
        state.header.stamp = self.node.get_clock().now().to_msg()
        self.state_pub.publish(state)
        target = self.JointState(name=list(JOINTS), position=[0.0] * len(JOINTS), velocity=[0.0] * len(JOINTS))
        self.target_pub.publish(target)
        self.cost_pub.publish(self.Float64(data=sum(x * x for x in q)))

    def announce(self, update: dict) -> None:
        self.model_pub.publish(self.String(data=json.dumps(update)))

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        self.rclpy.try_shutdown(context=self.context)
