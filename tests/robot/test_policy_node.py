"""The policy node for real: its own process, DDS on loopback, a real ONNX model and spool."""

import ast
import hashlib
import json
import math
import os
import pkgutil
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from policy_models import JOINTS, export_models

BIN = Path(sys.executable).parent


def _domain_id() -> int:
    return random.Random(os.getpid() ^ time.time_ns()).randint(1, 100)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return export_models(tmp_path_factory.mktemp("models"), count=2)


def _read_stats(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _spool_rows(path: Path) -> list[tuple[int, int]]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        return db.execute("SELECT first_seq, last_seq FROM chunks ORDER BY first_seq").fetchall()
    finally:
        db.close()


def _assert_contiguous(rows):
    assert rows, "spool holds no chunks"
    assert rows[0][0] == 1
    for (_, last), (first, _) in zip(rows, rows[1:], strict=False):
        assert first == last + 1, rows


class _Driver:
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
        self.node.create_subscription(
            Float64MultiArray, topics.COMMANDS, lambda m: self.commands.append(list(m.data)), COMMAND_QOS
        )
        from rclpy.executors import SingleThreadedExecutor

        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.t = 0.0

    def wait_connected(self, timeout: float, proc) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.state_pub.get_subscription_count() > 0 and self.node.count_publishers(
                "effort_controller/commands"
            ):
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
        state = self.JointState(name=names, position=[*reversed(q), 0.0], velocity=[*reversed(qd), 0.0])
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


@pytest.mark.parametrize("executor", ["events", "single"])
def test_policy_node_end_to_end(models, tmp_path, executor):
    domain_id = _domain_id()
    namespace = f"/ptest{os.getpid()}"
    spool = tmp_path / "spool.sqlite"
    run_dir = tmp_path / "run"
    stats_file = run_dir / "policy_stats.json"
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", ROS_DOMAIN_ID=str(domain_id))
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    log = open(tmp_path / "policy.log", "w")
    proc = subprocess.Popen(
        [
            str(BIN / "policy_node"),
            "--ros-args",
            "-r", f"__ns:={namespace}",
            "-p", "robot_id:=r1",
            "-p", "task:=kuka_track",
            "-p", f"initial_model:={models[0]}",
            "-p", "initial_model_version:=1",
            "-p", f"spool_path:={spool}",
            "-p", f"run_dir:={run_dir}",
            "-p", "status_period_s:=0.2",
            "-p", f"executor:={executor}",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    driver = _Driver(namespace, domain_id)
    try:
        driver.wait_connected(30.0, proc)
        driver.run(2.0)
        assert len(driver.commands) > 50, f"only {len(driver.commands)} commands"
        assert all(len(c) == len(JOINTS) for c in driver.commands)
        assert all(math.isfinite(x) for c in driver.commands for x in c)
        assert any(abs(x) > 0 for c in driver.commands for x in c)

        time.sleep(0.3)  # at least one flush period
        _assert_contiguous(_spool_rows(spool))

        # A verified update is swapped in between two ticks.
        data = models[1].read_bytes()
        driver.announce(
            {"version": 2, "path": str(models[1]), "sha256": hashlib.sha256(data).hexdigest(), "task": "kuka_track"}
        )
        assert driver.run(10.0, until=lambda: _read_stats(stats_file).get("swaps") == 1), _read_stats(stats_file)
        stats = _read_stats(stats_file)
        assert stats["model_version"] == 2
        assert stats["swap_log"][-1]["from_version"] == 1 and stats["swap_log"][-1]["to_version"] == 2

        # A wrong digest is refused and the running model stays.
        driver.announce({"version": 3, "path": str(models[0]), "sha256": "0" * 64, "task": "kuka_track"})
        assert driver.run(10.0, until=lambda: _read_stats(stats_file).get("rejected_models") == 1)
        driver.run(0.5)
        stats = _read_stats(stats_file)
        assert stats["model_version"] == 2 and stats["swaps"] == 1
        assert stats["reject_log"][-1]["reason"] == "sha256_mismatch"
        assert stats["tick_us"]["p50"] > 0
    finally:
        driver.close()
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        finally:
            if proc.poll() is None:
                proc.kill()
            log.close()
    output = (tmp_path / "policy.log").read_text()
    assert proc.returncode == 0, output
    # Everything recorded reached the spool, with contiguous seqs from 1.
    final = _read_stats(stats_file)
    rows = _spool_rows(spool)
    _assert_contiguous(rows)
    assert rows[-1][1] == final["recorder"]["recorded"] == final["ticks"]
    assert final["recorder"]["overflow"] == 0


@pytest.mark.parametrize(("param", "named"), [("horizon:=1", "horizon"), ("executor:=multi", "executor")])
def test_policy_node_bad_parameter_names_it(tmp_path, param, named):
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", ROS_DOMAIN_ID=str(_domain_id()))
    result = subprocess.run(
        [str(BIN / "policy_node"), "--ros-args", "-p", param, "-p", f"run_dir:={tmp_path}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert named in result.stderr


def _modules(package: str) -> list[str]:
    module = __import__(package)
    return [f"{package}.{m.name}" for m in pkgutil.iter_modules(module.__path__)]


def test_robot_modules_import_no_torch():
    names = _modules("nestor_core") + _modules("nestor_robot")
    assert "nestor_robot.policy_node" in names
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "bad = sorted(m for m in ('torch', 'pybullet') if m in sys.modules)\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_robot_sources_do_not_import_yaml_torch_pybullet():
    # rclpy itself loads yaml, so this one is checked in the source rather than in sys.modules.
    bad = []
    for package in ("nestor_core", "nestor_robot"):
        root = Path(__import__(package).__file__).parent
        for path in sorted(root.glob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                forbidden = [n for n in names if n.split(".")[0] in ("yaml", "torch", "pybullet")]
                bad += [f"{package}/{path.name}: {n}" for n in forbidden]
    assert not bad, bad
