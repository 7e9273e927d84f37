"""Supervision on real processes.

`nestor robot` (sim_bridge, policy, uplink, weight_sync) against a real `nestor-cloud serve`, over
DDS on localhost and gRPC on 127.0.0.1.

* kill -9 of `uplink_node`: the policy keeps ticking, the supervisor restarts the uplink after its
  backoff, policy/status counts the restart, and the store later holds 1..N with no gap or duplicate.
* kill -9 of `weight_sync_node`, and a model promoted while it is down: it arrives after the restart.
* SIGINT of `nestor robot`: the uplink drains, the spool is empty, no child survives.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from faultlib import BIN, DETACHED, REPO, CloudProcess, wait_for
from nestor_core import nestor_pb2, nestor_pb2_grpc
from nestor_robot.spool import Spool

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

TASK_FILE = REPO / "config" / "tasks" / "kuka_track.yaml"
RESPAWN_DELAY_S = 4.0

_SEED_MODELS = """
import sys
from cloud_brain.config import CloudConfig
from cloud_brain.models.registry import ModelRegistry
from cloud_brain.learning.round_worker import resolve
from cloud_brain.experience.store import ExperienceStore

initial_model = resolve(CloudConfig.__dataclass_fields__["initial_model"].default)  # the cloud's default

store = ExperienceStore(sys.argv[1])
registry = ModelRegistry(store)
for seed, status in ((0, "active"), (1, "candidate")):
    onnx, io_signature = initial_model(sys.argv[2], seed)
    registry.register("kuka_track", onnx, io_signature, parent=0 if seed == 0 else 1, status=status, reason="test")
store.close()
"""


def seed_models(db_path: Path) -> None:
    """v1 active, v2 a candidate (promoted by the test), both real kuka_track models (torch: own process)."""
    subprocess.run(
        [sys.executable, "-c", _SEED_MODELS, str(db_path), str(TASK_FILE)], check=True, cwd=REPO, timeout=180
    )


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def processes_of(run_dir: Path) -> list[int]:
    """Live processes whose command line names the run dir (every node of the run does)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(run_dir) in cmdline and pid_alive(int(entry)):
            out.append(int(entry))
    return out


class StatusListener:
    """Subscribes to /<ns>/policy/status with its own rclpy context; keeps the newest values."""

    def __init__(self, ns: str, domain_id: int):
        import threading

        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from nestor_core import topics
        from nestor_core.qos import STATUS_QOS
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node

        self.values: dict = {}
        self.levels: list[int] = []
        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = Node("status_listener", namespace=ns, context=self.context)
        self.node.create_subscription(DiagnosticArray, topics.POLICY_STATUS, self._on_status, STATUS_QOS)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self):
        while self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.1)
            except Exception:  # noqa: BLE001 - the context was shut down
                return

    def _on_status(self, msg):
        status = msg.status[0]
        self.values = {kv.key: kv.value for kv in status.values}
        self.levels.append(status.level)

    def close(self):
        import rclpy

        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self.thread.join(5)


@pytest.fixture
def kuka_cloud(tmp_path):
    db = tmp_path / "cloud" / "nestor.db"
    db.parent.mkdir(parents=True)
    seed_models(db)
    proc = CloudProcess(tmp_path / "cloud", str(db), extra={"task_files": [str(TASK_FILE)]})
    proc.start(timeout=120)
    yield proc
    proc.stop()


def _supervised(run_dir: Path, node: str) -> dict:
    return read_json(run_dir / "robots" / "robot0" / "supervision.json").get("nodes", {}).get(node, {})


def test_network_nodes_crash_and_come_back_while_the_robot_runs_then_sigint_drains(kuka_cloud, tmp_path):
    run_dir = tmp_path / "run"
    robot_dir = run_dir / "robots" / "robot0"
    domain_id = random.Random(os.getpid() ^ 0x13).randint(1, 100)
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain_id), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    log = open(tmp_path / "nestor.log", "wb")  # noqa: SIM115 - closed below
    robot = subprocess.Popen(
        [
            str(BIN / "nestor"),
            "robot",
            "--robot-id",
            "robot0",
            "--cloud",
            kuka_cloud.address,
            "--run-dir",
            str(run_dir),
            "--respawn-delay",
            str(RESPAWN_DELAY_S),
        ],
        env=env,
        stdout=log,
        **DETACHED,
    )
    listener = StatusListener("robot0", domain_id)
    spool = None
    pids = set()
    try:

        def nestor_out() -> str:
            return (tmp_path / "nestor.log").read_text(errors="replace")

        def running_and_ticking():
            assert robot.poll() is None, nestor_out()
            return read_json(robot_dir / "policy_stats.json").get("ticks", 0) > 300

        wait_for(running_and_ticking, 120, "the robot to tick on model v1")
        spool = Spool(str(robot_dir / "spool.sqlite"), "robot0")
        wait_for(lambda: spool.acked_through() > 200, 60, "acks from the cloud")

        # ---- kill -9 the uplink: the control loop keeps running, the spool grows, the uplink comes back.
        uplink = _supervised(run_dir, "uplink")
        pids.add(uplink["pid"])
        os.kill(uplink["pid"], signal.SIGKILL)
        killed_at = time.monotonic()
        ticks_at_kill = read_json(robot_dir / "policy_stats.json")["ticks"]
        acked_at_kill = spool.acked_through()
        wait_for(lambda: _supervised(run_dir, "uplink").get("restart_pending"), 10, "the supervisor to see the crash")

        def ticking_while_down():
            stats = read_json(robot_dir / "policy_stats.json")
            return stats.get("ticks", 0) > ticks_at_kill + 50 and stats

        stats = wait_for(ticking_while_down, RESPAWN_DELAY_S, "ticks while the uplink is down")
        down = _supervised(run_dir, "uplink")
        assert down["restart_pending"] and not pid_alive(uplink["pid"]), down  # still down: the ticks were its gap
        assert spool.acked_through() == acked_at_kill  # nobody acks while it is down ...
        assert stats["spool"]["depth_transitions"] > 0  # ... and the spool holds the experience
        back = wait_for(
            lambda: (n := _supervised(run_dir, "uplink")).get("restarts") == 1 and n["running"] and n,
            RESPAWN_DELAY_S + 30,
            "the uplink's restart",
        )
        assert time.monotonic() - killed_at >= RESPAWN_DELAY_S - 0.5  # after its backoff, not at once
        pids.add(back["pid"])
        wait_for(lambda: spool.acked_through() > acked_at_kill, 60, "acks from the restarted uplink")
        wait_for(lambda: listener.values.get("node_restarts") == "1", 30, "policy/status to count the restart")
        assert read_json(robot_dir / "policy_stats.json")["ticks"] > stats["ticks"]

        # ---- kill -9 weight_sync; a new model is promoted while it is down; it arrives after the restart.
        sync = _supervised(run_dir, "weight_sync")
        pids.add(sync["pid"])
        os.kill(sync["pid"], signal.SIGKILL)
        wait_for(lambda: _supervised(run_dir, "weight_sync").get("restart_pending"), 10, "the weight_sync crash")
        with grpc.insecure_channel(kuka_cloud.address) as channel:
            reply = nestor_pb2_grpc.ModelsStub(channel).Promote(nestor_pb2.PromoteRequest(version=2), timeout=10)
        assert reply.model.version == 2
        promoted_at = time.time()
        assert _supervised(run_dir, "weight_sync")["restart_pending"], "weight_sync came back before the push"
        assert read_json(robot_dir / "policy_stats.json")["model_version"] == 1
        swapped = wait_for(
            lambda: (s := read_json(robot_dir / "policy_stats.json")).get("model_version") == 2 and s,
            RESPAWN_DELAY_S + 60,
            "model v2 on the robot after weight_sync's restart",
        )
        swap = [e for e in swapped["swap_log"] if e["to_version"] == 2]
        assert swap and swap[0]["from_version"] == 1 and swap[0]["wall_time"] > promoted_at
        restarted = _supervised(run_dir, "weight_sync")
        assert restarted["restarts"] == 1 and restarted["running"]
        pids.add(restarted["pid"])
        pids |= {n["pid"] for n in read_json(robot_dir / "supervision.json")["nodes"].values()}

        # ---- SIGINT: the policy flushes, the uplink drains, everything exits.
        robot.send_signal(signal.SIGINT)
        assert robot.wait(120) == 0, nestor_out()
        assert "spools: robot0 empty" in nestor_out(), nestor_out()
    finally:
        listener.close()
        if robot.poll() is None:
            os.killpg(robot.pid, signal.SIGKILL)
            robot.wait(10)
        log.close()
    assert "Traceback" not in nestor_out()
    survivors = [p for p in pids if pid_alive(p)] + processes_of(run_dir)
    assert not survivors, survivors
    stats = spool.stats()
    spool.close()
    recorded = stats["next_seq"] - 1
    assert stats["depth_transitions"] == 0 and stats["acked_through"] == recorded and stats["dropped"] == 0
    assert recorded == read_json(robot_dir / "policy_stats.json")["ticks"]
    kuka_cloud.stop()
    from cloud_brain.experience.store import ExperienceStore

    store = ExperienceStore(kuka_cloud.db_path)
    try:
        ranges, dropped, record = store.stored_seqs("robot0"), store.dropped_ranges("robot0"), store.robot("robot0")
    finally:
        store.close()
    expected = 1
    for first, count in ranges:
        assert first == expected, f"chunk at seq {first}, expected {expected} (gap or duplicate)"
        expected += count
    assert expected - 1 == recorded and dropped == [] and record.transitions == recorded
    assert "restarted robot0/uplink" in nestor_out() and "restarted robot0/weight_sync" in nestor_out()
