"""Lifecycle nodes driven over their real lifecycle services (lifecycle_msgs ChangeState / GetState).

The client is a plain rclpy node in this process; each node runs in its own process, DDS on loopback.
"""

import math
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from policy_models import JOINTS, export_models

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "config"


def _domain_id() -> int:
    return random.Random(os.getpid() ^ time.time_ns()).randint(1, 100)


def _wait(predicate, timeout: float, proc=None, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc is None or proc.poll() is None, f"node exited early ({what})"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


class _Graph:
    """A plain rclpy node (own context and domain), spun in a thread.

    It is the lifecycle client and a stand-in sim that publishes joint states, target and cost at
    100 Hz and counts commands.
    """

    def __init__(self, namespace: str, domain_id: int):
        import rclpy
        from nestor_core import topics
        from nestor_core.qos import COMMAND_QOS, SENSOR_QOS
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Float64, Float64MultiArray

        self.rclpy, self.JointState, self.Float64 = rclpy, JointState, Float64
        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node("lifecycle_test", namespace=namespace, context=self.context)
        self.state_pub = self.node.create_publisher(JointState, topics.JOINT_STATES, SENSOR_QOS)
        self.target_pub = self.node.create_publisher(JointState, topics.TARGET, SENSOR_QOS)
        self.cost_pub = self.node.create_publisher(Float64, topics.COST, COMMAND_QOS)
        self.commands = 0
        self.joint_states = 0
        self.node.create_subscription(Float64MultiArray, topics.COMMANDS, self._on_command, COMMAND_QOS)
        # The sim bridge's (this node publishes joint states only while `publishing` is set).
        self.node.create_subscription(JointState, topics.JOINT_STATES, self._on_state, SENSOR_QOS)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.publishing = threading.Event()
        self._threads = [
            threading.Thread(target=self._spin, daemon=True),
            threading.Thread(target=self._publish, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _on_command(self, msg) -> None:
        self.commands += 1

    def _on_state(self, msg) -> None:
        self.joint_states += 1

    def _spin(self) -> None:
        while self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # noqa: BLE001 - shut down under us
                return

    def _publish(self) -> None:
        t = 0.0
        while self.context.ok():
            time.sleep(0.01)
            if not self.publishing.is_set():
                continue
            t += 0.01
            q = [0.1 * math.sin(t + i) for i in range(len(JOINTS))]
            try:
                state = self.JointState(name=list(JOINTS), position=q, velocity=[0.0] * len(JOINTS))
                state.header.stamp = self.node.get_clock().now().to_msg()
                self.state_pub.publish(state)
                self.target_pub.publish(
                    self.JointState(name=list(JOINTS), position=[0.0] * len(JOINTS), velocity=[0.0] * len(JOINTS))
                )
                self.cost_pub.publish(self.Float64(data=sum(x * x for x in q)))
            except Exception:  # noqa: BLE001 - shut down under us
                return

    def client(self, target: str):
        from nestor_core.lifecycle import LifecycleClient

        return LifecycleClient(self.node, target)

    def commands_stay_at(self, seconds: float) -> int:
        """Publish for `seconds` after in-flight commands settled; returns the commands that came meanwhile."""
        time.sleep(0.5)
        before = self.commands
        time.sleep(seconds)
        return self.commands - before

    def close(self) -> None:
        self.publishing.clear()
        self.rclpy.try_shutdown(context=self.context)
        for thread in self._threads:
            thread.join(timeout=2.0)


def _start(executable: str, tmp_path: Path, domain_id: int, namespace: str, *params: str, name: str = "node"):
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", ROS_DOMAIN_ID=str(domain_id))
    log_path = tmp_path / f"{name}.log"
    log = open(log_path, "w")  # noqa: SIM115 - closed by _stop
    argv = [
        str(BIN / executable),
        "--ros-args",
        "-r",
        f"__ns:={namespace}",
        "-p",
        "autostart:=false",
        *[a for p in params for a in ("-p", p)],
    ]
    return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT), log, log_path


def _stop(proc, log) -> int:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    return proc.returncode


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return export_models(tmp_path_factory.mktemp("models"), count=1)[0]


def test_policy_transitions_over_the_lifecycle_services(model, tmp_path):
    """unconfigured -> configure -> activate (commands) -> deactivate (none) -> cleanup -> again."""
    import json

    from nestor_core.lifecycle import TransitionRefused

    domain_id, namespace = _domain_id(), f"/lc{os.getpid()}"
    run_dir = tmp_path / "run"
    proc, log, log_path = _start(
        "policy_node",
        tmp_path,
        domain_id,
        namespace,
        "robot_id:=r1",
        "task:=kuka_track",
        f"initial_model:={model}",
        "initial_model_version:=1",
        f"spool_path:={tmp_path / 'spool.sqlite'}",
        f"run_dir:={run_dir}",
        "status_period_s:=0.2",
        name="policy",
    )
    graph = _Graph(namespace, domain_id)
    try:
        client = graph.client(f"{namespace}/policy")
        assert client.wait(60.0), log_path.read_text()
        assert client.state() == "unconfigured"
        graph.publishing.set()
        assert graph.commands_stay_at(1.0) == 0  # unconfigured: no model, no subscriptions

        client.change("configure", timeout_s=60.0)
        assert client.state() == "inactive"
        assert graph.commands_stay_at(1.0) == 0  # inactive: the model is loaded, nothing ticks
        with pytest.raises(TransitionRefused, match="cleanup refused|configure refused"):
            client.change("configure")  # not a transition from inactive

        client.change("activate")
        assert client.state() == "active"
        _wait(lambda: graph.commands > 20, 30.0, proc, "commands while active")

        client.change("deactivate")
        assert client.state() == "inactive"
        assert graph.commands_stay_at(1.0) == 0  # the tick stopped
        stats = json.loads((run_dir / "policy_stats.json").read_text())  # written at deactivate
        assert stats["ticks"] > 20 and stats["model_version"] == 1
        assert stats["spool"]["appended"] == stats["ticks"]  # the recorder was flushed into the spool

        client.change("cleanup")
        assert client.state() == "unconfigured"

        before = graph.commands
        client.change("configure", timeout_s=60.0)
        client.change("activate")
        assert client.state() == "active"
        _wait(lambda: graph.commands > before + 20, 30.0, proc, "commands after a second configure")
    finally:
        graph.close()
        code = _stop(proc, log)
    output = log_path.read_text()
    assert code == 0, output
    assert output.count("policy ready") == 2
    assert "Traceback" not in output


def test_refused_configure_names_the_parameter_and_stays_unconfigured(tmp_path):
    from nestor_core.lifecycle import TransitionRefused

    domain_id, namespace = _domain_id(), f"/lcbad{os.getpid()}"
    proc, log, log_path = _start(
        "policy_node", tmp_path, domain_id, namespace, "spool_full_policy:=bogus", f"run_dir:={tmp_path}", name="policy"
    )
    graph = _Graph(namespace, domain_id)
    try:
        client = graph.client(f"{namespace}/policy")
        assert client.wait(60.0), log_path.read_text()
        with pytest.raises(TransitionRefused, match="configure refused"):
            client.change("configure", timeout_s=60.0)
        assert client.state() == "unconfigured"
        assert proc.poll() is None  # still there, waiting for a configure that can succeed
        _wait(lambda: "configure refused" in log_path.read_text(), 10.0, proc, "the refusal in the log")
        line = next(x for x in log_path.read_text().splitlines() if "configure refused" in x)
        assert line.endswith(
            "configure refused: parameter spool_full_policy: 'bogus' not in ('drop_oldest', 'reject_newest')"
        ), line
        client.change("shutdown")
        assert client.state() == "finalized"
    finally:
        graph.close()
        code = _stop(proc, log)
    assert code == 0, log_path.read_text()


@pytest.mark.parametrize(
    "executable, name, params",
    [
        ("sim_bridge", "sim_bridge", [f"task_file:={CONFIG / 'tasks' / 'kuka_track.yaml'}", "robot_id:=r1"]),
        ("uplink_node", "uplink", ["robot_id:=r1", "cloud_address:=127.0.0.1:9", "drain_timeout_s:=0.5"]),
        ("weight_sync_node", "weight_sync", ["robot_id:=r1", "cloud_address:=127.0.0.1:9"]),
    ],
)
def test_every_resource_node_cycles_through_its_states(tmp_path, executable, name, params):
    domain_id, namespace = _domain_id(), f"/lc{name}{os.getpid()}"
    extra = {
        "uplink": [f"spool_path:={tmp_path / 'spool.sqlite'}", f"run_dir:={tmp_path}"],
        "weight_sync": [f"model_dir:={tmp_path / 'models'}"],
    }.get(name, [])
    proc, log, log_path = _start(executable, tmp_path, domain_id, namespace, *params, *extra, name=name)
    graph = _Graph(namespace, domain_id)
    try:
        client = graph.client(f"{namespace}/{name}")
        assert client.wait(60.0), log_path.read_text()
        for transition, state in [
            ("configure", "inactive"),
            ("activate", "active"),
            ("deactivate", "inactive"),
            ("cleanup", "unconfigured"),
            ("configure", "inactive"),
            ("activate", "active"),
        ]:
            client.change(transition, timeout_s=60.0)
            assert client.state() == state, (transition, log_path.read_text())
            if name == "sim_bridge" and state == "active":
                seen = graph.joint_states
                _wait(lambda seen=seen: graph.joint_states > seen + 10, 30.0, proc, "joint states while active")
    finally:
        graph.close()
        code = _stop(proc, log)
    output = log_path.read_text()
    assert code == 0, output
    assert output.count("cleaned up (unconfigured)") >= 1 and "Traceback" not in output


def test_bringup_activates_each_start_and_each_respawn_and_winds_down_at_stop(tmp_path):
    """ProcessGroup (what `nestor robot/fleet/demo` run) drives the same services.

    Configure + activate after the start and again after a respawn, deactivate + cleanup before SIGINT.
    """
    import io

    from nestor_bringup.nodes import RobotSpec, robot_nodes
    from nestor_bringup.process_group import ProcessGroup
    from nestor_bringup.supervisor import RestartPolicy, Supervisor

    domain_id = _domain_id()
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain_id), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    spec = RobotSpec(robot_id="lcb0", run_dir=str(tmp_path / "run"), cloud_address="127.0.0.1:9", sim=False)
    [uplink] = [n for n in robot_nodes(spec, str(CONFIG)) if n.name == "uplink"]
    assert uplink.lifecycle and uplink.respawn and uplink.overrides["autostart"] is False
    uplink.overrides["drain_timeout_s"] = 0.5
    group = ProcessGroup(str(tmp_path / "run"), env=env)
    out = io.StringIO()
    supervisor = Supervisor(group, RestartPolicy(delay_s=0.2), out=out)
    graph = _Graph("/lcb0", domain_id)
    try:
        [proc] = group.start_robot("lcb0", [uplink])
        client = graph.client("/lcb0/uplink")
        assert client.wait(60.0), proc.log_path.read_text()

        def active() -> bool:
            supervisor.poll()
            try:
                return client.state(timeout_s=2.0) == "active"
            except Exception:  # noqa: BLE001 - a restarting node does not answer
                return False

        _wait(active, 60.0, what="the uplink active after its start")
        proc.popen.send_signal(signal.SIGKILL)
        _wait(lambda: supervisor.poll() is not None and proc.restarts == 1, 30.0, what="the restart")
        _wait(active, 60.0, what="the respawned uplink active again")
        assert not supervisor.failed, out.getvalue()
    finally:
        codes = group.stop()
        graph.close()
    log = proc.log_path.read_text()
    assert codes == {"lcb0/uplink": 0}, log
    assert log.count("]: activated") == 2  # once per process
    tail = log.rsplit("# restart 1", 1)[1]
    assert tail.index("deactivated (inactive)") < tail.index("cleaned up (unconfigured)")


def test_bringup_reports_a_refused_configure_and_stops_the_robot(tmp_path):
    import io

    from nestor_bringup.nodes import RobotSpec, robot_nodes
    from nestor_bringup.process_group import ProcessGroup
    from nestor_bringup.supervisor import Supervisor

    env = dict(os.environ, ROS_DOMAIN_ID=str(_domain_id()), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    spec = RobotSpec(robot_id="lcb1", run_dir=str(tmp_path / "run"), cloud_address="127.0.0.1:9", sim=False)
    [uplink] = [n for n in robot_nodes(spec, str(CONFIG)) if n.name == "uplink"]
    uplink.overrides["status_period_s"] = 0.0  # in its range, refused by its validate()
    group = ProcessGroup(str(tmp_path / "run"), env=env)
    out = io.StringIO()
    supervisor = Supervisor(group, out=out)
    try:
        group.start_robot("lcb1", [uplink])
        _wait(lambda: supervisor.poll() or supervisor.failed, 90.0, what="the refusal")
        failure = supervisor.failed["lcb1"]
        assert failure.reason == (
            "lcb1/uplink (uplink_node) configure refused: parameter status_period_s: must be > 0, got 0.0"
        ), failure.reason
        assert "configure refused" in out.getvalue()
    finally:
        group.stop()
