"""Launch files, checked statically (launch/launch_ros are not installed here)."""

import ast
import importlib.metadata
import re
from pathlib import Path

import pytest
import yaml
from nestor_bringup.nodes import RobotSpec, fleet_specs, robot_nodes

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


@pytest.mark.parametrize("name", LAUNCH_FILES)
def test_launch_file_structure(name):
    tree = ast.parse((LAUNCH / name).read_text())
    imports = _imports(tree)
    assert "nestor_bringup.nodes" in imports
    assert "launch_ros.actions" in imports and "launch" in imports
    assert "ament_index_python.packages" in imports
    functions = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    assert "generate_launch_description" in functions
    source = (LAUNCH / name).read_text()
    assert "get_package_share_directory(\"nestor_bringup\")" in source
    assert "robot_nodes(" in source
    # No duplicated node list: executables come only from nestor_bringup.nodes.
    assert not re.search(r"executable=\s*['\"]", source)


def _node_calls(tree: ast.AST) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "Node"]


@pytest.mark.parametrize("name", LAUNCH_FILES)
def test_launch_file_supervision(name):
    """Each node's respawn settings come from its NodeSpec; a control-path exit shuts the launch down."""
    tree = ast.parse((LAUNCH / name).read_text())
    [call] = _node_calls(tree)
    kwargs = {k.arg: k.value for k in call.keywords}
    for arg, field in [("respawn", "respawn"), ("respawn_delay", "respawn_delay"),
                       ("respawn_max_retries", "respawn_max_retries")]:
        value = kwargs.get(arg)
        assert isinstance(value, ast.Attribute) and value.attr == field, f"{name}: {arg}= must be n.{field}"
    assert "sigterm_timeout" in kwargs, f"{name}: the uplink needs its drain time before SIGTERM"
    on_exit = kwargs.get("on_exit")
    assert isinstance(on_exit, ast.IfExp), f"{name}: on_exit must depend on n.respawn"
    assert isinstance(on_exit.body, ast.Constant) and on_exit.body.value is None
    assert isinstance(on_exit.orelse, ast.Call) and on_exit.orelse.func.id == "Shutdown"
    assert "Shutdown" in {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                          and n.module == "launch.actions" for a in n.names}


def test_node_specs_respawn_the_network_side_only():
    camera = robot_nodes(RobotSpec(robot_id="r0", task="crane"), str(CONFIG))
    kuka = robot_nodes(RobotSpec(robot_id="r1", task="kuka_track"), str(CONFIG))
    respawn = {n.name: n.respawn for n in camera + kuka}
    assert respawn == {"sim_bridge": False, "policy": False, "perception": True, "uplink": True, "weight_sync": True}
    for node in camera + kuka:
        if node.respawn:
            assert node.respawn_delay > 0 and node.respawn_max_retries >= 1
    uplink = next(n for n in kuka if n.name == "uplink")
    policy = next(n for n in kuka if n.name == "policy")
    # The uplink's stop timeout covers its drain (config/robot/uplink.yaml drain_timeout_s).
    drain = yaml.safe_load((CONFIG / "robot" / "uplink.yaml").read_text())["/**/uplink"]["ros__parameters"]
    assert uplink.stop_timeout_s == policy.stop_timeout_s + drain["drain_timeout_s"] > policy.stop_timeout_s


def test_fleet_launch_declares_robots():
    source = (LAUNCH / "fleet.launch.py").read_text()
    assert re.search(r"['\"]robots['\"]\s*:", source)


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
    specs = [RobotSpec(robot_id="r0", task="kuka_track"), RobotSpec(robot_id="r1", task="crane")]
    specs += fleet_specs(2, "kuka_track", "/tmp/x", "127.0.0.1:1")
    seen = set()
    for spec in specs:
        for node in robot_nodes(spec, str(CONFIG)):
            seen.add((node.package, node.executable))
    assert ("nestor_robot", "perception_node") in seen and ("nestor_sim", "sim_bridge") in seen
    for package, executable in sorted(seen):
        assert executable in _setup_console_scripts(SETUP_PY[package]), f"{executable} not in {package}/setup.py"
        assert executable in installed, f"{executable} is not an installed console script"
        assert installed[executable].dist.name.replace("-", "_") == package
    assert "nestor" in installed and "nestor" in _setup_console_scripts(SETUP_PY["nestor_bringup"])
