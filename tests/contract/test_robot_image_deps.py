"""The robot image installs every import of the robot's nodes (read statically: no Docker engine here).

Every absolute import in the modules of nestor_core, nestor_robot and nestor_sim (function-level ones
included) must be the standard library, one of our packages declared as an `exec_depend`, or a third-party
module that docker/robot.Dockerfile pip-installs (its `grep -E '^(...)=='` list over requirements.txt)
or that the package's package.xml declares as an `exec_depend` rosdep key (and rosdep is not told to skip).
Issue 12: prometheus_client was imported at module level by two nodes and installed by neither.
"""

from __future__ import annotations

import ast
import pathlib
import re
import sys
import xml.etree.ElementTree as ElementTree

import pytest
from dockerfiles import parse_dockerfile

REPO = pathlib.Path(__file__).resolve().parents[2]
PACKAGES = {
    "nestor_core": REPO / "ros2_ws/src/nestor_core",
    "nestor_robot": REPO / "ros2_ws/src/nestor_robot",
    "nestor_sim": REPO / "sim",
}
# Top-level module -> (its PyPI distribution, its rosdep key); None = not installed that way.
THIRD_PARTY = {
    "numpy": (None, "python3-numpy"),  # the distribution's numpy: ROS's message extensions are built on it
    "yaml": (None, "python3-yaml"),
    "cv2": (None, "python3-opencv"),
    "onnx": ("onnx", None),
    "onnxruntime": ("onnxruntime", None),
    "grpc": ("grpcio", "python3-grpcio"),
    "google": ("protobuf", "python3-protobuf"),
    "cryptography": ("cryptography", "python3-cryptography"),
    "prometheus_client": ("prometheus-client", "python3-prometheus-client"),
    "pybullet": ("pybullet", None),
    "pybullet_data": ("pybullet", None),
    "pybullet_utils": ("pybullet", None),
    "gymnasium": ("gymnasium", None),
    "rich": ("rich", None),
    "mcap": ("mcap", None),  # the bag recorder (pip, from requirements.txt)
}
ROS_PACKAGES = {
    "rclpy",
    "std_msgs",
    "sensor_msgs",
    "diagnostic_msgs",
    "rcl_interfaces",
    "builtin_interfaces",
    "lifecycle_msgs",
}


def imports_of(package_dir: pathlib.Path, name: str) -> dict[str, str]:
    """Top-level module -> the first file importing it, for every absolute import in the package."""
    found: dict[str, str] = {}
    for path in sorted((package_dir / name).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                roots = [node.module.split(".")[0]]
            else:
                continue
            for root in roots:
                found.setdefault(root, str(path.relative_to(REPO)))
    return found


def exec_depends(package_dir: pathlib.Path) -> set[str]:
    root = ElementTree.parse(package_dir / "package.xml").getroot()
    return {e.text.strip() for e in root.iter("exec_depend")}


def image_installs() -> tuple[set[str], set[str]]:
    """(pip distributions the robot image installs, rosdep keys it skips)."""
    text = " ".join(i.value for i in parse_dockerfile(REPO / "docker/robot.Dockerfile") if i.keyword == "RUN")
    pip = re.search(r"grep -E '\^\(([^)]*)\)=='", text)
    assert pip, "robot.Dockerfile: the pip list (grep -E '^(...)==' requirements.txt) is gone"
    skipped = re.search(r'--skip-keys "([^"]*)"', text)
    return set(pip.group(1).split("|")), set(skipped.group(1).split()) if skipped else set()


def pinned_requirements() -> set[str]:
    lines = (REPO / "requirements.txt").read_text().splitlines()
    return {line.split("==")[0].strip().lower() for line in lines if "==" in line and not line.startswith("#")}


def unsatisfied(package: str, imports: dict[str, str], pip: set[str], skipped: set[str], depends: set[str]):
    """The imports of `package` that its image would not have, each with the file importing it."""
    missing = []
    for module, where in sorted(imports.items()):
        if module in sys.stdlib_module_names or module == "__future__" or module == package:
            continue
        if module in PACKAGES or module in ROS_PACKAGES:
            if module not in depends:
                missing.append(f"{module} ({where}): not an exec_depend of {package}/package.xml")
            continue
        assert module in THIRD_PARTY, f"{where} imports {module}: add it to THIRD_PARTY with how the image gets it"
        dist, key = THIRD_PARTY[module]
        if dist in pip or (key in depends and key not in skipped):
            continue
        missing.append(f"{module} ({where}): neither pip-installed by robot.Dockerfile nor a rosdep exec_depend")
    return missing


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_every_import_of_the_robot_is_installed_in_its_image(package):
    pip, skipped = image_installs()
    imports = imports_of(PACKAGES[package], package)
    assert unsatisfied(package, imports, pip, skipped, exec_depends(PACKAGES[package])) == []


def test_the_image_pip_list_is_pinned_in_requirements():
    pip, _ = image_installs()
    assert pip <= pinned_requirements(), sorted(pip - pinned_requirements())


def test_the_check_names_a_missing_install():
    # The state issue 12 found: prometheus_client pip-installed by nobody and skipped (or absent) in rosdep.
    pip, skipped = image_installs()
    imports = imports_of(PACKAGES["nestor_robot"], "nestor_robot")
    assert "prometheus_client" in imports
    depends = exec_depends(PACKAGES["nestor_robot"])
    missing = unsatisfied("nestor_robot", imports, pip - {"prometheus-client"}, skipped, depends)
    assert len(missing) == 1 and missing[0].startswith("prometheus_client (ros2_ws/src/nestor_robot/"), missing
