"""nestor_bringup: the robot node list, the per-node defaults, the process group and the CLI."""

import importlib.util
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from config_fields import dataclass_defaults
from nestor_bringup import cli
from nestor_bringup.nodes import RobotSpec, fleet_specs, overrides_yaml, robot_nodes
from nestor_bringup.process_group import ProcessGroup

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "config"
# Where each node's config dataclass lives (read with ast: importing the sim would load pybullet).
CONFIG_CLASSES = {
    "policy": [
        ("ros2_ws/src/nestor_robot/nestor_robot/policy_config.py", "PolicyNodeConfig"),
        ("ros2_ws/src/nestor_core/nestor_core/policy_runtime.py", "RuntimeConfig"),
    ],
    "uplink": [("ros2_ws/src/nestor_robot/nestor_robot/uplink_node.py", "UplinkNodeConfig")],
    "weight_sync": [("ros2_ws/src/nestor_robot/nestor_robot/weight_sync_node.py", "WeightSyncNodeConfig")],
    "perception": [("ros2_ws/src/nestor_robot/nestor_robot/perception_node.py", "PerceptionConfig")],
    "sim_bridge": [("sim/nestor_sim/bridge_node.py", "BridgeConfig")],
    "bag_recorder": [("ros2_ws/src/nestor_robot/nestor_robot/bag_recorder_node.py", "BagRecorderConfig")],
}


def _domain_id() -> int:
    return random.Random(os.getpid() ^ 0x5A5A).randint(1, 100)


def test_kuka_robot_nodes():
    spec = RobotSpec(robot_id="robot3", task="kuka_track", run_dir="/tmp/run", seed=7, shifts=["payload:4@20"])
    nodes = robot_nodes(spec, str(CONFIG))
    assert [(n.package, n.executable, n.name) for n in nodes] == [
        ("nestor_sim", "sim_bridge", "sim_bridge"),
        ("nestor_robot", "policy_node", "policy"),
        ("nestor_robot", "uplink_node", "uplink"),
        ("nestor_robot", "weight_sync_node", "weight_sync"),
    ]
    by_name = {n.name: n for n in nodes}
    assert all(n.namespace == "robot3" for n in nodes)
    assert by_name["sim_bridge"].overrides["publish_target"] is True
    assert by_name["sim_bridge"].overrides["shifts"] == ["payload:4@20"]
    assert by_name["sim_bridge"].overrides["seed"] == 7
    spool = "/tmp/run/robots/robot3/spool.sqlite"
    assert by_name["policy"].overrides["spool_path"] == by_name["uplink"].overrides["spool_path"] == spool
    for node in nodes:
        assert node.param_files == [str(CONFIG / "robot" / f"{node.name}.yaml")]
        assert Path(node.param_files[0]).is_file()
    # Without the sim (hardware) and with no shifts: no sim node, no empty list in the overrides.
    bare = robot_nodes(RobotSpec(robot_id="r", sim=False), str(CONFIG))
    assert [n.name for n in bare] == ["policy", "uplink", "weight_sync"]
    assert "shifts" not in robot_nodes(RobotSpec(robot_id="r"), str(CONFIG))[0].overrides


def test_camera_task_adds_perception():
    nodes = robot_nodes(RobotSpec(robot_id="robot0", task="crane"), str(CONFIG))
    names = [n.name for n in nodes]
    assert names == ["sim_bridge", "perception", "policy", "uplink", "weight_sync"]
    sim = nodes[0].overrides
    assert sim["publish_target"] is False and sim["camera_enabled"] is True


def test_fleet_specs_cycle_seeds_and_shifts():
    specs = fleet_specs(7, "kuka_track", "/tmp/run", "127.0.0.1:1", seed=10)
    assert [s.robot_id for s in specs] == [f"robot{i}" for i in range(7)]
    assert [s.ns for s in specs] == [s.robot_id for s in specs]
    assert [s.seed for s in specs] == list(range(10, 17))
    assert specs[0].shifts == specs[5].shifts != specs[1].shifts


@pytest.mark.parametrize("node", sorted(CONFIG_CLASSES))
def test_defaults_files_match_node_configs(node):
    doc = yaml.safe_load((CONFIG / "robot" / f"{node}.yaml").read_text())
    assert list(doc) == [f"/**/{node}"]
    params = doc[f"/**/{node}"]["ros__parameters"]
    fields = {}
    for path, class_name in CONFIG_CLASSES[node]:
        if not (REPO / path).exists():
            pytest.skip(f"{path} not written yet")
        fields.update(dataclass_defaults(REPO / path, class_name))
    unknown = sorted(set(params) - set(fields))
    assert not unknown, f"{node}.yaml sets parameters the node does not declare: {unknown}"
    for name, value in params.items():
        default = fields[name]
        if default is ... or default is None:
            continue
        assert type(value) is type(default), f"{node}.yaml {name}: {value!r} vs default {default!r}"
        assert not (isinstance(value, list) and not value), f"{node}.yaml {name}: empty list has no ROS type"


def test_params_files_apply_inside_a_namespace(tmp_path):
    """The `/**/policy` defaults and the per-robot overrides file reach /robotX/policy, in that order."""
    import rclpy
    from nestor_core.params import declare_config
    from nestor_core.policy_runtime import RuntimeConfig
    from nestor_robot.policy_config import RUNTIME_RANGES, PolicyNodeConfig
    from rclpy.context import Context
    from rclpy.node import Node

    spec = RobotSpec(robot_id="robot5", run_dir=str(tmp_path))
    nodes = robot_nodes(spec, str(CONFIG))
    policy = next(n for n in nodes if n.name == "policy")
    defaults = tmp_path / "policy.yaml"
    defaults.write_text((CONFIG / "robot" / "policy.yaml").read_text().replace("horizon: 32", "horizon: 17"))
    overrides = tmp_path / "params.yaml"
    overrides.write_text(overrides_yaml(nodes))
    context = Context()
    rclpy.init(context=context, domain_id=_domain_id())
    try:
        args = ["--ros-args", "--params-file", str(defaults), "--params-file", str(overrides)]
        node = Node("policy", namespace="robot5", context=context, cli_args=args)
        config = declare_config(node, PolicyNodeConfig)
        runtime = declare_config(node, RuntimeConfig, ranges=RUNTIME_RANGES)
        assert runtime.horizon == 17  # from the /**/policy defaults file
        assert config.robot_id == "robot5"  # from the per-robot overrides file, which wins
        assert config.spool_path == policy.overrides["spool_path"]
        other = Node("policy", namespace="robot6", context=context, cli_args=args)
        assert declare_config(other, PolicyNodeConfig).robot_id == "robot0"  # the overrides are per robot
        node.destroy_node()
        other.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)


def test_process_group_start_stop_and_death(tmp_path):
    from policy_models import export_models

    model = export_models(tmp_path, count=1)[0]
    env = dict(os.environ, ROS_DOMAIN_ID=str(_domain_id()))
    env.pop("ROS_AUTOMATIC_DISCOVERY_RANGE", None)
    group = ProcessGroup(str(tmp_path / "run"), env=env)
    assert group.env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    spec = RobotSpec(robot_id="pg0", run_dir=str(tmp_path / "run"), initial_model=str(model), sim=False)
    policy = next(n for n in robot_nodes(spec, str(CONFIG)) if n.name == "policy")
    procs = group.start_robot("pg0", [policy])
    robot_dir = tmp_path / "run" / "robots" / "pg0"
    assert "/pg0/policy" in yaml.safe_load((robot_dir / "params.yaml").read_text())
    assert procs[0].argv[1:5] == ["--ros-args", "-r", "__node:=policy", "-r"]
    deadline = time.monotonic() + 30
    while not (robot_dir / "policy_stats.json").exists():
        assert not group.dead(), group.describe_death(procs[0])
        assert time.monotonic() < deadline, "policy node never wrote its stats"
        time.sleep(0.2)
    assert group.stop() == {"pg0/policy": 0}
    assert "policy ready" in (robot_dir / "policy.log").read_text()

    # A node that dies is reported with its log tail.
    bad = ProcessGroup(str(tmp_path / "bad"), env=env)
    policy.overrides["horizon"] = 1
    [proc] = bad.start_robot("pg1", [policy])
    proc.popen.wait(timeout=60)
    [dead] = bad.dead()
    message = bad.describe_death(dead)
    assert "exited with code 2" in message and "horizon" in message
    assert bad.dead() == []
    bad.stop()


def test_cli_bad_arguments_exit_2(capsys):
    for argv, name in [
        (["fleet", "--robots", "0"], "--robots"),
        (["robot", "--robot-id", "r0", "--shift", "payload"], "--shift"),
        (["robot", "--robot-id", "r0", "--duration", "-1"], "--duration"),
        (["robot"], "--robot-id"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            cli.main(argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and name in err, err
    assert cli.main(["robot", "--robot-id", "r0", "--task", "no_such_task"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--task" in err


def test_cli_subcommand_registry():
    assert {"robot", "fleet"} <= set(cli.SUBCOMMANDS)
    calls = []
    cli.register("probe", "test only", lambda p: p.add_argument("--x", type=int), lambda a: calls.append(a.x) or 0)
    try:
        assert cli.main(["probe", "--x", "3"]) == 0 and calls == [3]
    finally:
        del cli.SUBCOMMANDS["probe"]


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("nestor_sim") is None
    or importlib.util.find_spec("nestor_sim.bridge_node") is None
    or not (Path(sys.executable).parent / "sim_bridge").exists(),
    reason="nestor_sim (sim_bridge) not installed",
)
def test_fleet_smoke(tmp_path):
    from policy_models import export_models

    model = export_models(tmp_path, count=1)[0]
    env = dict(os.environ, ROS_DOMAIN_ID=str(_domain_id() % 50 + 50), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "nestor"),
            "fleet",
            "--robots",
            "1",
            "--duration",
            "10",
            "--run-dir",
            str(run_dir),
            "--initial-model",
            str(model),
            "--cloud",
            "127.0.0.1:9",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    robot_dir = run_dir / "robots" / "robot0"
    stats = json.loads((robot_dir / "policy_stats.json").read_text())
    assert stats["ticks"] > 50, stats
    assert stats["spool"]["appended"] == stats["ticks"]
    for name in ("sim_bridge", "policy", "uplink", "weight_sync"):
        assert (robot_dir / f"{name}.log").exists()
    # The terminal says plainly that the cloud (port 9, nothing listens) is unreachable, and shows the ticks.
    lines = [line for line in result.stdout.splitlines() if line.startswith("robot0: model")]
    assert any("CLOUD UNREACHABLE at 127.0.0.1:9" in line for line in lines), result.stdout
    assert any(" ticks (" in line for line in lines)
    # ... while the uplink's log says it once, not on every retry.
    assert (robot_dir / "uplink.log").read_text().count("stream ended") <= 2
