"""Signals to the `nestor` CLI on real processes.

No node outlives it, and a fleet stops only the robot whose control path died.

* `nestor fleet`: kill -9 of robot0's policy stops robot0's nodes only; then SIGTERM to the fleet
  stops every node (exit 1: a robot failed).
* `nestor robot` (with the sim, SCHED_FIFO nodes): SIGTERM stops every node.
* kill -9 of `nestor robot` itself: the kernel's parent-death signal stops every node.
"""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from faultlib import BIN, DETACHED, REPO, wait_for
from test_supervision import pid_alive, processes_of, read_json

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    sys.path.insert(0, str(REPO / "tests" / "robot"))
    from policy_models import export_models

    return export_models(tmp_path_factory.mktemp("models"), count=1)[0]


def _start(tmp_path: Path, *args: str) -> tuple[subprocess.Popen, Path]:
    run_dir = tmp_path / "run"
    env = dict(
        os.environ,
        ROS_DOMAIN_ID=str(random.Random(os.getpid() ^ 0x31).randint(1, 100)),
        ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
    )
    log = open(tmp_path / "nestor.log", "wb")  # noqa: SIM115 - owned by the child
    proc = subprocess.Popen(
        [str(BIN / "nestor"), *args, "--run-dir", str(run_dir), "--cloud", "127.0.0.1:9"],
        env=env,
        stdout=log,
        **DETACHED,
    )
    log.close()
    return proc, run_dir


def _nodes(run_dir: Path, robot_id: str) -> dict:
    return read_json(run_dir / "robots" / robot_id / "supervision.json").get("nodes", {})


def _all_up(proc: subprocess.Popen, run_dir: Path, robots: list[str], names: set[str], log: Path):
    assert proc.poll() is None, log.read_text()
    return all(
        set(_nodes(run_dir, r)) == names
        and (run_dir / "robots" / r / "policy_stats.json").exists()
        and all(pid_alive(n["pid"]) for n in _nodes(run_dir, r).values())
        for r in robots
    )


def _cleanup(proc: subprocess.Popen, run_dir: Path) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    for pid in processes_of(run_dir):
        os.kill(pid, signal.SIGKILL)


def test_fleet_stops_only_the_robot_whose_policy_died_and_sigterm_stops_the_rest(tmp_path, model):
    proc, run_dir = _start(tmp_path, "fleet", "--robots", "2", "--no-sim", "--initial-model", str(model))
    log = tmp_path / "nestor.log"
    names = {"policy", "uplink", "weight_sync"}
    try:
        wait_for(lambda: _all_up(proc, run_dir, ["robot0", "robot1"], names, log), 90, "both robots' nodes")
        robot0, robot1 = _nodes(run_dir, "robot0"), _nodes(run_dir, "robot1")
        os.kill(robot0["policy"]["pid"], signal.SIGKILL)
        wait_for(
            lambda: read_json(run_dir / "robots" / "robot0" / "supervision.json").get("stopped"),
            30,
            "robot0 to be stopped",
        )
        wait_for(lambda: not any(pid_alive(n["pid"]) for n in robot0.values()), 30, "robot0's nodes to exit")
        assert proc.poll() is None, log.read_text()  # the fleet runs on
        assert all(pid_alive(n["pid"]) for n in robot1.values()), robot1
        supervision1 = read_json(run_dir / "robots" / "robot1" / "supervision.json")
        assert not supervision1["stopped"] and supervision1["restarts"] == 0
        text = log.read_text()
        assert "robot0/policy (policy_node) was killed by SIGKILL" in text and "stopping robot robot0" in text
        assert "robot1" not in text.split("stopping robot robot0")[1].split("\n")[0]

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 1, log.read_text()  # a robot failed during the run
    finally:
        _cleanup(proc, run_dir)
    text = log.read_text()
    assert "SIGTERM: stopping" in text and "Traceback" not in text
    survivors = [n["pid"] for n in robot1.values() if pid_alive(n["pid"])] + processes_of(run_dir)
    assert not survivors, survivors


def test_sigterm_to_nestor_robot_stops_every_node(tmp_path, model):
    # The cloud is unreachable: the uplink drains for drain_timeout_s, 3 s in this copy of the config.
    config = tmp_path / "config"
    shutil.copytree(REPO / "config", config)
    uplink = config / "robot" / "uplink.yaml"
    uplink.write_text(uplink.read_text().replace("drain_timeout_s: 30.0", "drain_timeout_s: 3.0"))
    assert "drain_timeout_s: 3.0" in uplink.read_text()
    proc, run_dir = _start(
        tmp_path, "robot", "--robot-id", "robot0", "--initial-model", str(model), "--config-dir", str(config)
    )
    log = tmp_path / "nestor.log"
    names = {"sim_bridge", "policy", "uplink", "weight_sync"}
    try:
        wait_for(lambda: _all_up(proc, run_dir, ["robot0"], names, log), 90, "the robot's nodes")
        wait_for(
            lambda: read_json(run_dir / "robots" / "robot0" / "policy_stats.json").get("ticks", 0) > 100,
            60,
            "the policy to tick",
        )
        pids = [n["pid"] for n in _nodes(run_dir, "robot0").values()]
        proc.send_signal(signal.SIGTERM)
        # The uplink waits its drain_timeout_s and says how much it left; the stop ends, with every node.
        assert proc.wait(120) == 0, log.read_text()
    finally:
        _cleanup(proc, run_dir)
    text = log.read_text()
    assert "SIGTERM: stopping" in text and "transitions left for the next start" in text, text
    survivors = [p for p in pids if pid_alive(p)] + processes_of(run_dir)
    assert not survivors, survivors
    stats = json.loads((run_dir / "robots" / "robot0" / "policy_stats.json").read_text())
    assert stats["spool"]["appended"] == stats["ticks"]  # the policy's last flush made it to the spool


def test_kill_9_of_nestor_robot_takes_every_node_with_it(tmp_path, model):
    proc, run_dir = _start(tmp_path, "robot", "--robot-id", "robot0", "--no-sim", "--initial-model", str(model))
    log = tmp_path / "nestor.log"
    try:
        wait_for(
            lambda: _all_up(proc, run_dir, ["robot0"], {"policy", "uplink", "weight_sync"}, log),
            90,
            "the robot's nodes",
        )
        pids = [n["pid"] for n in _nodes(run_dir, "robot0").values()]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 60
        while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        survivors = [p for p in pids if pid_alive(p)] + processes_of(run_dir)
        assert not survivors, survivors
    finally:
        _cleanup(proc, run_dir)
