"""The policy node for real: its own process, DDS on loopback, a real ONNX model and spool."""

import ast
import hashlib
import json
import math
import os
import pkgutil
import random
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from policy_models import JOINTS, export_models
from ros_testlib import stop_policy

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
            "-r",
            f"__ns:={namespace}",
            "-p",
            "robot_id:=r1",
            "-p",
            "task:=kuka_track",
            "-p",
            f"initial_model:={models[0]}",
            "-p",
            "initial_model_version:=1",
            "-p",
            f"spool_path:={spool}",
            "-p",
            f"run_dir:={run_dir}",
            "-p",
            "status_period_s:=0.2",
            "-p",
            f"executor:={executor}",
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
        stop_policy(proc, log)
    output = (tmp_path / "policy.log").read_text()
    assert proc.returncode == 0, output
    # Everything recorded reached the spool, with contiguous seqs from 1.
    final = _read_stats(stats_file)
    rows = _spool_rows(spool)
    _assert_contiguous(rows)
    assert rows[-1][1] == final["recorder"]["recorded"] == final["ticks"]
    assert final["recorder"]["overflow"] == 0


def _start_policy(models, tmp_path, namespace, domain_id, *params):
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", ROS_DOMAIN_ID=str(domain_id))
    log = open(tmp_path / "policy.log", "w")
    argv = [
        str(BIN / "policy_node"),
        "--ros-args",
        "-r",
        f"__ns:={namespace}",
        "-p",
        "robot_id:=r1",
        "-p",
        "task:=kuka_track",
        "-p",
        f"initial_model:={models[0]}",
        "-p",
        "initial_model_version:=1",
        "-p",
        f"spool_path:={tmp_path / 'spool.sqlite'}",
        "-p",
        f"run_dir:={tmp_path / 'run'}",
        "-p",
        "status_period_s:=0.2",
        *[a for p in params for a in ("-p", p)],
    ]
    return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT), log


def _max_abs(commands) -> float:
    return max((abs(x) for c in commands for x in c), default=0.0)


def test_nan_joint_state_never_drives_an_actuator(models, tmp_path):
    """A NaN position (a plain rclpy driver): last good command held, then zero; status ERROR; no learning."""
    domain_id, namespace = _domain_id(), f"/nantest{os.getpid()}"
    hold = 5
    proc, log = _start_policy(models, tmp_path, namespace, domain_id, f"input_hold_ticks:={hold}")
    driver = _Driver(namespace, domain_id)
    stats_file = tmp_path / "run" / "policy_stats.json"
    try:
        driver.wait_connected(30.0, proc)
        driver.run(2.0)
        good = driver.commands_between(time.monotonic() - 1.0, time.monotonic())
        assert len(good) > 50 and _max_abs(good) > 0
        before = _read_stats(stats_file)

        bad_from = time.monotonic()
        driver.nan_joint = JOINTS[3]
        driver.run(1.5)
        bad_to = time.monotonic()
        during = driver.commands_between(bad_from, bad_to)
        assert len(during) > 50, len(during)
        # No command while the NaN lasts exceeds the last good command in magnitude ...
        assert _max_abs(during) <= _max_abs(good) + 1e-9, (during[:10], _max_abs(good))
        # ... and once the hold is over (5 ticks = 50 ms; 0.3 s leaves room for delivery) it is zero effort.
        late = driver.commands_between(bad_from + 0.3, bad_to)
        assert late and all(x == 0.0 for c in late for x in c), late[:5]
        errors = [s for t, s in driver.statuses if bad_from < t <= bad_to + 0.3 and s.level == b"\x02"]
        assert errors, [(s.level, s.message) for _, s in driver.statuses[-5:]]
        assert "non_finite" in errors[-1].message and JOINTS[3] in errors[-1].message
        values = {kv.key: kv.value for kv in errors[-1].values}
        assert int(values["bad_input_ticks"]) > 0

        driver.nan_joint = None
        good_from = time.monotonic()
        driver.run(1.5)
        after = driver.commands_between(good_from + 0.2, time.monotonic())
        assert len(after) > 50
        # Back within the range the commands had before, within a few ticks (0.2 s of delivery slack).
        assert 0 < _max_abs(after) <= 1.5 * _max_abs(good), (_max_abs(after), _max_abs(good))
        assert driver.run(5.0, until=lambda: _read_stats(stats_file).get("bad_input_streak") == 0)
        # OK again once a whole status period passed without bad input (the stats refresh once per flush).
        assert driver.run(5.0, until=lambda: any(s.level == b"\x00" for t, s in driver.statuses if t > good_from)), [
            (s.level, s.message) for _, s in driver.statuses[-3:]
        ]
    finally:
        driver.close()
        code = stop_policy(proc, log)
    output = (tmp_path / "policy.log").read_text()
    assert code == 0, output
    assert "non_finite: joint_states.position[lbr_iiwa_joint_4] is nan" in output
    final = _read_stats(stats_file)
    assert final["bad_input_ticks"] > 100 and final["bad_input_longest_streak"] > hold
    assert final["ticks"] > before["ticks"]
    # The bad ticks were neither stepped (L0/L1) nor recorded: every recorded transition is a good tick.
    rows = _spool_rows(tmp_path / "spool.sqlite")
    _assert_contiguous(rows)
    assert rows[-1][1] == final["recorder"]["recorded"] == final["ticks"]


_MALFORMED = {
    "joint_states: joint 'lbr_iiwa_joint_7' missing": lambda n, p, v: (n[1:], p[1:], v[1:]),
    "joint_states: 8 names but 8 positions, 3 velocities": lambda n, p, v: (n, p, v[:3]),
    "joint_states: joint 'lbr_iiwa_joint_1' missing": lambda n, p, v: ([], [], []),
}


def test_malformed_joint_states_raise_the_status(models, tmp_path):
    """Missing joint, short velocity array, empty message: safe command, counted, status names the reason."""
    domain_id, namespace = _domain_id(), f"/badtest{os.getpid()}"
    proc, log = _start_policy(models, tmp_path, namespace, domain_id)
    driver = _Driver(namespace, domain_id)
    stats_file = tmp_path / "run" / "policy_stats.json"
    seen = {}
    try:
        driver.wait_connected(30.0, proc)
        driver.run(1.0)
        for reason, corrupt in _MALFORMED.items():
            driver.corrupt = corrupt
            start = time.monotonic()
            assert driver.run(
                6.0,
                until=lambda r=reason, t=start: any(
                    r in s.message and s.level in (b"\x01", b"\x02") for u, s in driver.statuses if u > t
                ),
            ), [(s.level, s.message) for _, s in driver.statuses[-3:]]
            driver.run(0.5)
            late = driver.commands_between(start + 0.3, time.monotonic())
            assert late and all(x == 0.0 for c in late for x in c)  # past the hold: zero effort
            seen[reason] = _read_stats(stats_file).get("bad_input_ticks", 0)
        driver.corrupt = None
        driver.run(1.0)
    finally:
        driver.close()
        code = stop_policy(proc, log)
    assert code == 0, (tmp_path / "policy.log").read_text()
    counts = list(seen.values())
    assert counts == sorted(counts) and counts[0] > 0, seen
    final = _read_stats(stats_file)
    assert final["bad_inputs"] >= final["bad_input_ticks"] > counts[-1] - 1


def _call(driver, client, request):
    future = client.call_async(request)
    deadline = time.monotonic() + 10.0
    while not future.done() and time.monotonic() < deadline:
        driver.executor.spin_once(timeout_sec=0.05)
    assert future.done(), "no answer from the parameter service"
    return future.result()


def test_parameter_services_from_a_plain_client(models, tmp_path):
    """`ros2 param set/get` as a plain rclpy client: bad values refused with a reason, l0_step_scale takes effect."""
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import GetParameters, SetParameters

    domain_id, namespace = _domain_id(), f"/paramtest{os.getpid()}"
    proc, log = _start_policy(models, tmp_path, namespace, domain_id)
    driver = _Driver(namespace, domain_id)
    stats_file = tmp_path / "run" / "policy_stats.json"
    double, string = ParameterType.PARAMETER_DOUBLE, ParameterType.PARAMETER_STRING
    integer = ParameterType.PARAMETER_INTEGER

    def param(name, kind, value):
        field = {double: "double_value", string: "string_value", integer: "integer_value"}[kind]
        return Parameter(name=name, value=ParameterValue(type=kind, **{field: value}))

    try:
        driver.wait_connected(30.0, proc)
        setter = driver.node.create_client(SetParameters, f"{namespace}/policy/set_parameters")
        getter = driver.node.create_client(GetParameters, f"{namespace}/policy/get_parameters")
        assert setter.wait_for_service(timeout_sec=10.0) and getter.wait_for_service(timeout_sec=10.0)
        names = ["control_rate_hz", "l0_step_scale", "spool_full_policy", "horizon"]
        before = _call(driver, getter, GetParameters.Request(names=names)).values
        bad = [
            param("control_rate_hz", double, -5.0),
            param("l0_step_scale", double, 7.0),
            param("l0_step_scale", string, "fast"),
            param("spool_full_policy", string, "bogus"),
            param("horizon", integer, -3),
        ]
        results = _call(driver, setter, SetParameters.Request(parameters=bad)).results
        assert [r.successful for r in results] == [False] * 5, results
        assert all(r.reason for r in results)
        assert "read-only" in results[0].reason and "out of range" in results[1].reason
        assert results[2].reason == "parameter l0_step_scale: expected float, got 'fast'"
        after = _call(driver, getter, GetParameters.Request(names=names)).values
        assert after == before  # `get` reports what the node runs with

        # L0 learns while l0_step_scale is 1 ...
        driver.run(1.5)
        norms = []
        assert driver.run(
            5.0,
            until=lambda: (
                norms.append(_read_stats(stats_file).get("l0_fast_state_norm")) or len(set(norms) - {None}) >= 2
            ),
        )
        freeze = SetParameters.Request(parameters=[param("l0_step_scale", double, 0.0)])
        (result,) = _call(driver, setter, freeze).results
        assert result.successful, result.reason
        (value,) = _call(driver, getter, GetParameters.Request(names=["l0_step_scale"])).values
        assert value.double_value == 0.0
        # ... and is frozen from the next tick on: the fast state stops changing.
        assert driver.run(5.0, until=lambda: _read_stats(stats_file).get("l0_step_scale") == 0.0)
        frozen = _read_stats(stats_file)["l0_fast_state_norm"]
        ticks = _read_stats(stats_file)["ticks"]
        assert driver.run(5.0, until=lambda: _read_stats(stats_file)["ticks"] > ticks + 100)
        assert _read_stats(stats_file)["l0_fast_state_norm"] == frozen
    finally:
        driver.close()
        code = stop_policy(proc, log)
    output = (tmp_path / "policy.log").read_text()
    assert code == 0, output
    assert "parameters changed: {'l0_step_scale': 0.0}" in output


_NODE_NAMES = {
    "policy_node": "policy",
    "uplink_node": "uplink",
    "weight_sync_node": "weight_sync",
    "perception_node": "perception",
    "sim_bridge": "sim_bridge",
}


@pytest.mark.parametrize("executable", sorted(_NODE_NAMES))
def test_unknown_parameter_in_a_params_file_is_refused(tmp_path, executable):
    name = _NODE_NAMES[executable]
    params = tmp_path / "params.yaml"
    params.write_text(f"/**/{name}:\n  ros__parameters:\n    l0_step_scal: 0\n")
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", ROS_DOMAIN_ID=str(_domain_id()))
    result = subprocess.run(
        [
            str(BIN / executable),
            "--ros-args",
            "-r",
            f"__node:={name}",
            "--params-file",
            str(params),
            *(["-p", "task_file:=x.yaml"] if name == "sim_bridge" else []),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if "error" in line]
    assert lines == [
        f"{executable}: error: parameter l0_step_scal: node /{name} has no such parameter"
        + (" (did you mean 'l0_step_scale'?)" if name == "policy" else "")
    ], result.stderr
    assert "Traceback" not in result.stderr


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
