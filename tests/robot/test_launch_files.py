"""Launch files, checked statically (launch/launch_ros are not installed here)."""

import ast
import importlib.metadata
import os
import re
from pathlib import Path

import pytest
import yaml
from nestor_bringup.launch_args import arguments, specs_from
from nestor_bringup.nodes import RobotSpec, fleet_specs, overrides_yaml, robot_nodes

REPO = Path(__file__).resolve().parents[2]
LAUNCH = REPO / "launch"
CONFIG = REPO / "config"
SETUP_PY = {
    "nestor_robot": REPO / "ros2_ws/src/nestor_robot/setup.py",
    "nestor_sim": REPO / "sim/setup.py",
    "nestor_bringup": REPO / "ros2_ws/src/nestor_bringup/setup.py",
}
LAUNCH_FILES = ["robot.launch.py", "sim_robot.launch.py", "fleet.launch.py"]


def _imports(tree: ast.AST) -> set[str]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


LAUNCH_ACTIONS = REPO / "ros2_ws/src/nestor_bringup/nestor_bringup/launch_actions.py"


@pytest.mark.parametrize("name", LAUNCH_FILES)
def test_launch_file_structure(name):
    tree = ast.parse((LAUNCH / name).read_text())
    imports = _imports(tree)
    assert "nestor_bringup.launch_actions" in imports and "nestor_bringup.launch_args" in imports
    assert "launch.actions" in imports and "launch" in imports
    functions = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    assert functions == {"generate_launch_description"}
    source = (LAUNCH / name).read_text()
    # The node actions are the shared ones, for this file's kind; no node list of its own.
    assert "OpaqueFunction(function=node_actions, args=[KIND])" in source
    assert not re.search(r"executable=\s*['\"]", source) and "Node(" not in source


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == name]


def test_launch_actions_structure():
    """One helper builds every node action: the node list from robot_nodes, the config from the share dir."""
    tree = ast.parse(LAUNCH_ACTIONS.read_text())
    source = LAUNCH_ACTIONS.read_text()
    imports = _imports(tree)
    assert {"nestor_bringup.nodes", "ament_index_python.packages", "launch_ros.actions"} <= imports
    assert 'get_package_share_directory("nestor_bringup")' in source and "robot_nodes(" in source
    assert "specs_from(kind, values)" in source and "arguments(kind)" in source
    assert not re.search(r"executable=\s*['\"]", source)
    # launch/launch_ros are imported inside the functions only (they are not installed here).
    top = {n.module for n in tree.body if isinstance(n, ast.ImportFrom)}
    assert not {m for m in top if m.split(".")[0] in ("launch", "launch_ros", "lifecycle_msgs")}


def test_launch_actions_supervision():
    """Each node's respawn settings come from its NodeSpec; a control-path exit shuts the launch down."""
    tree = ast.parse(LAUNCH_ACTIONS.read_text())
    [common] = [
        n.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "common" for t in n.targets)
    ]
    kwargs = {k.arg: k.value for k in common.keywords}
    for arg, field in [
        ("respawn", "respawn"),
        ("respawn_delay", "respawn_delay"),
        ("respawn_max_retries", "respawn_max_retries"),
    ]:
        value = kwargs.get(arg)
        assert isinstance(value, ast.Attribute) and value.attr == field, f"{arg}= must be n.{field}"
    assert "sigterm_timeout" in kwargs, "the uplink needs its drain time before SIGTERM"
    on_exit = kwargs.get("on_exit")
    assert isinstance(on_exit, ast.IfExp), "on_exit must depend on n.respawn"
    assert isinstance(on_exit.body, ast.Constant) and on_exit.body.value is None
    assert isinstance(on_exit.orelse, ast.Call) and on_exit.orelse.func.id == "Shutdown"
    # Node and LifecycleNode both get every one of these settings.
    for name in ("Node", "LifecycleNode"):
        [call] = _calls(tree, name)
        assert [k.arg for k in call.keywords] == [None] and call.keywords[0].value.id == "common", name


def test_launch_actions_lifecycle_transitions():
    """Lifecycle nodes are launch_ros LifecycleNodes, driven by ChangeState events.

    They are configured at every process start (respawns included) and activated once
    configuring -> inactive.
    """
    tree = ast.parse(LAUNCH_ACTIONS.read_text())
    source = LAUNCH_ACTIONS.read_text()
    from_imports = {(n.module, a.name) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert {
        ("launch_ros.actions", "LifecycleNode"),
        ("launch_ros.event_handlers", "OnStateTransition"),
        ("launch_ros.events.lifecycle", "ChangeState"),
        ("lifecycle_msgs.msg", "Transition"),
        ("launch.events", "matches_action"),
        ("launch.event_handlers", "OnProcessStart"),
        ("launch.actions", "EmitEvent"),
        ("launch.actions", "RegisterEventHandler"),
    } <= from_imports
    assert "if not n.lifecycle:" in source
    assert "ChangeState(lifecycle_node_matcher=matches_action(node), transition_id=transition_id)" in source
    [on_start] = _calls(tree, "OnProcessStart")
    kwargs = {k.arg: k.value for k in on_start.keywords}
    assert kwargs["target_action"].id == "node"
    assert ast.unparse(kwargs["on_start"]) == "[change(Transition.TRANSITION_CONFIGURE)]"
    [on_state] = _calls(tree, "OnStateTransition")
    kwargs = {k.arg: k.value for k in on_state.keywords}
    assert kwargs["target_lifecycle_node"].id == "node"
    assert (kwargs["start_state"].value, kwargs["goal_state"].value) == ("configuring", "inactive")
    assert ast.unparse(kwargs["entities"]) == "[change(Transition.TRANSITION_ACTIVATE)]"


def test_launch_actions_run_against_recording_fakes(monkeypatch):
    """The node_action for real, with launch/launch_ros replaced by recorders.

    Lifecycle nodes get a LifecycleNode plus its two handlers, the others a Node, all with their
    NodeSpec's settings.
    """
    import sys
    import types

    made = []

    def recorder(name):
        def make(*args, **kwargs):
            obj = types.SimpleNamespace(kind=name, args=args, kwargs=kwargs)
            made.append(obj)
            return obj

        return make

    modules = {
        "launch.actions": ["EmitEvent", "RegisterEventHandler", "Shutdown"],
        "launch.event_handlers": ["OnProcessStart"],
        "launch.events": ["matches_action"],
        "launch_ros.actions": ["LifecycleNode", "Node"],
        "launch_ros.event_handlers": ["OnStateTransition"],
        "launch_ros.events.lifecycle": ["ChangeState"],
    }
    for module, names in modules.items():
        fake = types.ModuleType(module)
        for name in names:
            setattr(fake, name, recorder(name))
        monkeypatch.setitem(sys.modules, module, fake)
    from lifecycle_msgs.msg import Transition
    from nestor_bringup.launch_actions import node_action

    nodes = {n.name: n for n in robot_nodes(RobotSpec(robot_id="r0", task="crane", record=True), str(CONFIG))}
    assert {n for n, spec in nodes.items() if spec.lifecycle} == {"sim_bridge", "policy", "uplink", "weight_sync"}
    for name, spec in nodes.items():
        made.clear()
        actions = node_action(spec)
        if not spec.lifecycle:
            assert [a.kind for a in actions] == ["Node"], name
            continue
        assert spec.overrides["autostart"] is False
        assert [a.kind for a in actions] == ["RegisterEventHandler", "RegisterEventHandler", "LifecycleNode"]
        node = actions[2]
        assert node.kwargs["name"] == name and node.kwargs["namespace"] == "r0"
        assert node.kwargs["respawn"] is spec.respawn and node.kwargs["parameters"][-1] is spec.overrides
        on_start, on_state = actions[0].args[0], actions[1].args[0]
        assert on_start.kind == "OnProcessStart" and on_start.kwargs["target_action"] is node
        assert on_state.kind == "OnStateTransition" and on_state.kwargs["target_lifecycle_node"] is node
        [configure] = on_start.kwargs["on_start"]
        [activate] = on_state.kwargs["entities"]
        assert configure.kwargs["event"].kwargs["transition_id"] == Transition.TRANSITION_CONFIGURE
        assert activate.kwargs["event"].kwargs["transition_id"] == Transition.TRANSITION_ACTIVATE
        assert (node.kwargs["on_exit"] is None) == spec.respawn


def test_node_specs_respawn_the_network_side_only():
    camera = robot_nodes(RobotSpec(robot_id="r0", task="crane"), str(CONFIG))
    kuka = robot_nodes(RobotSpec(robot_id="r1", task="kuka_track"), str(CONFIG))
    respawn = {n.name: n.respawn for n in camera + kuka}
    assert respawn == {"sim_bridge": False, "policy": False, "perception": True, "uplink": True, "weight_sync": True}
    recorded = robot_nodes(RobotSpec(robot_id="r2", task="kuka_track", record=True), str(CONFIG))
    assert next(n for n in recorded if n.name == "bag_recorder").respawn  # its death no longer stops the robot
    for node in camera + kuka:
        if node.respawn:
            assert node.respawn_delay > 0 and node.respawn_max_retries >= 1
    uplink = next(n for n in kuka if n.name == "uplink")
    policy = next(n for n in kuka if n.name == "policy")
    # The uplink's stop timeout covers its drain (config/robot/uplink.yaml drain_timeout_s).
    drain = yaml.safe_load((CONFIG / "robot" / "uplink.yaml").read_text())["/**/uplink"]["ros__parameters"]
    assert uplink.stop_timeout_s == policy.stop_timeout_s + drain["drain_timeout_s"] > policy.stop_timeout_s


def _kind_of(name: str) -> str:
    tree = ast.parse((LAUNCH / name).read_text())
    [kind] = [
        n.value.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "KIND" for t in n.targets)
    ]
    return kind


@pytest.mark.parametrize("name", LAUNCH_FILES)
def test_launch_files_take_their_arguments_from_the_one_table(name):
    kind = _kind_of(name)
    assert name == f"{kind}.launch.py"
    source = (LAUNCH / name).read_text()
    # Declared from the one table and read by the shared node actions; no argument list of its own.
    assert "DeclareLaunchArgument(name, default_value=d, description=h)" in source
    assert source.count("arguments(KIND)") == 1 and "args=[KIND]" in source
    assert "ARGUMENTS = {" not in source
    declared = arguments(kind)
    assert {"params_file", "namespace", "task", "cloud", "run_dir", "certs_dir"} <= set(declared)
    for argument in re.findall(r"(\w+):=", ast.get_docstring(ast.parse(source))):
        assert argument in declared, f"{name}'s docstring uses {argument}:=, which it does not declare"


def test_fleet_launch_declares_robots_and_shifts():
    assert {"robots", "shifts", "namespace", "params_file"} <= set(arguments("fleet"))
    assert "robot_id" not in arguments("fleet") and "shifts" not in arguments("robot")


def test_launch_values_become_the_cli_robot_specs(tmp_path):
    user = tmp_path / "mine.yaml"
    user.write_text("/**/policy:\n  ros__parameters:\n    horizon: 9\n")
    fleet = specs_from(
        "fleet",
        {
            "robots": "3",
            "shifts": "payload:4.0@20, friction:1.0@30",
            "namespace": "/lab/",
            "params_file": str(user),
            "seed": "5",
        },
    )
    assert [s.ns for s in fleet] == ["lab/robot0", "lab/robot1", "lab/robot2"]
    assert all(s.shifts == ["payload:4.0@20", "friction:1.0@30"] for s in fleet)
    assert [s.seed for s in fleet] == [5, 6, 7]
    cli_like = fleet_specs(
        3,
        "kuka_track",
        "runs/latest",
        "127.0.0.1:50051",
        seed=5,
        shifts=[["payload:4.0@20", "friction:1.0@30"]],
        namespace="lab",
        params_files=[str(user)],
    )
    assert fleet == cli_like
    assert [s.shifts for s in specs_from("fleet", {"robots": "2"})] == [s.shifts for s in fleet_specs(2, "t", "r", "c")]
    [one] = specs_from("sim_robot", {"robot_id": "arm1", "namespace": "lab/arm1", "params_file": str(user)})
    assert (one.robot_id, one.ns, one.sim) == ("arm1", "lab/arm1", True)
    for node in robot_nodes(one, str(CONFIG)):
        assert node.param_files == [str(CONFIG / "robot" / f"{node.name}.yaml"), str(user)]
        assert node.namespace == "lab/arm1"
    [hw] = specs_from("robot", {"robot_id": "arm2"})
    assert hw.sim is False and hw.ns == "arm2" and hw.params_files == [] and hw.record is False
    recorded = specs_from("fleet", {"robots": "2", "record": "True"})
    assert all(s.record for s in recorded)
    assert [n.name for n in robot_nodes(recorded[0], str(CONFIG))][0] == "bag_recorder"


@pytest.mark.parametrize(
    "values, message",
    [
        ({"robots": "two"}, "robots: expected an integer, got 'two'"),
        ({"robots": "0"}, "robots: must be >= 1"),
        ({"params_file": "/nonexistent.yaml"}, "params_file: cannot read /nonexistent.yaml"),
        ({"record": "yes"}, "record: expected true or false, got 'yes'"),
    ],
)
def test_bad_launch_values_name_the_argument(values, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        specs_from("fleet", values)


def test_bad_params_file_layout_is_refused(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("policy:\n  horizon: 9\n")
    with pytest.raises(ValueError, match="params_file: .*policy: expected a 'ros__parameters' mapping"):
        specs_from("robot", {"params_file": str(bad)})


def test_user_params_file_sits_between_defaults_and_overrides(tmp_path):
    """Through real rclpy parameter loading: the user's file beats the defaults, the overrides beat it."""
    import random

    import rclpy
    from nestor_core.params import declare_config
    from nestor_core.policy_runtime import RuntimeConfig
    from nestor_robot.policy_config import RUNTIME_RANGES, PolicyNodeConfig
    from rclpy.context import Context
    from rclpy.node import Node

    user = tmp_path / "mine.yaml"
    user.write_text("/**/policy:\n  ros__parameters:\n    horizon: 9\n    robot_id: not_me\n")
    [spec] = specs_from(
        "robot", {"robot_id": "arm3", "namespace": "lab/arm3", "params_file": str(user), "run_dir": str(tmp_path)}
    )
    nodes = robot_nodes(spec, str(CONFIG))
    policy = next(n for n in nodes if n.name == "policy")
    overrides = tmp_path / "params.yaml"
    overrides.write_text(overrides_yaml(nodes))
    args = [
        "--ros-args",
        *[a for f in policy.param_files for a in ("--params-file", f)],
        "--params-file",
        str(overrides),
    ]
    context = Context()
    rclpy.init(context=context, domain_id=random.Random(os.getpid() ^ 0x7A7A).randint(1, 100))
    try:
        node = Node("policy", namespace=policy.namespace, context=context, cli_args=args)
        assert node.get_fully_qualified_name() == "/lab/arm3/policy"
        # The user's file over the defaults (32).
        assert declare_config(node, RuntimeConfig, ranges=RUNTIME_RANGES).horizon == 9
        assert declare_config(node, PolicyNodeConfig).robot_id == "arm3"  # the overrides win
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)


def test_bringup_symlinks_and_data_files():
    pkg = REPO / "ros2_ws/src/nestor_bringup"
    assert (pkg / "launch").is_symlink() and (pkg / "launch").resolve() == LAUNCH
    assert (pkg / "config").is_symlink() and (pkg / "config").resolve() == CONFIG
    assert sorted(p.name for p in (pkg / "launch").glob("*.launch.py")) == sorted(LAUNCH_FILES)
    assert (pkg / "config" / "robot" / "policy.yaml").is_file()


def _setup_console_scripts(path: Path) -> set[str]:
    return set(re.findall(r"['\"]\s*([\w-]+)\s*=\s*[\w.]+:\w+\s*['\"]", path.read_text()))


def test_every_node_executable_is_an_installed_console_script():
    installed = {ep.name: ep for ep in importlib.metadata.entry_points(group="console_scripts")}
    specs = [RobotSpec(robot_id="r0", task="kuka_track", record=True), RobotSpec(robot_id="r1", task="crane")]
    specs += fleet_specs(2, "kuka_track", "/tmp/x", "127.0.0.1:1")
    seen = set()
    for spec in specs:
        for node in robot_nodes(spec, str(CONFIG)):
            seen.add((node.package, node.executable))
    assert ("nestor_robot", "perception_node") in seen and ("nestor_sim", "sim_bridge") in seen
    assert ("nestor_robot", "bag_recorder") in seen
    for package, executable in sorted(seen):
        assert executable in _setup_console_scripts(SETUP_PY[package]), f"{executable} not in {package}/setup.py"
        assert executable in installed, f"{executable} is not an installed console script"
        assert installed[executable].dist.name.replace("-", "_") == package
    assert "nestor" in installed and "nestor" in _setup_console_scripts(SETUP_PY["nestor_bringup"])
