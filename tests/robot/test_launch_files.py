"""Launch files, checked statically (launch/launch_ros are not installed here)."""

import ast
import importlib.metadata
import re
from pathlib import Path

import pytest
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
