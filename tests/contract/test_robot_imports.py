"""The robot's Python never loads the cloud's stack: torch and rclpy do not meet in one process.

Every module of nestor_core and nestor_robot, found recursively with pkgutil.walk_packages (the
generated gRPC stubs included), is imported in one fresh interpreter; afterwards none of torch,
pybullet, matplotlib or cloud_brain may be in sys.modules. yaml is not on the list: rclpy itself
imports it (tests/robot checks the robot sources for it instead). This is a superset of
tests/robot/test_robot_sources.py::test_robot_modules_import_no_torch, which lists top-level modules only
and checks torch and pybullet.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

PACKAGES = ["nestor_core", "nestor_robot"]
FORBIDDEN = ["torch", "pybullet", "matplotlib", "cloud_brain"]

# Runs in the child: imports modules in order and names the first one that pulled each forbidden root.
_PROBE = """
import importlib, json, pkgutil, sys
packages, forbidden, extra = json.loads(sys.argv[1])
names = []
for package in packages:
    module = importlib.import_module(package)
    names.append(package)
    names += [m.name for m in pkgutil.walk_packages(module.__path__, prefix=package + ".")]
names += extra
culprits = {}
for name in names:
    importlib.import_module(name)
    for root in forbidden:
        if root in sys.modules and root not in culprits:
            culprits[root] = name
print(json.dumps({"modules": names, "culprits": culprits}))
"""


def probe(extra: list[str] | None = None, pythonpath: str | None = None) -> dict:
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (pythonpath, env.get("PYTHONPATH")) if p)
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps([PACKAGES, FORBIDDEN, extra or []])],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def report() -> dict:
    return probe()


def test_every_module_is_found(report):
    modules = set(report["modules"])
    for package in PACKAGES:
        root = pathlib.Path(__import__(package).__file__).parent
        on_disk = {
            f"{package}.{'.'.join(p.relative_to(root).with_suffix('').parts)}".removesuffix(".__init__")
            for p in root.rglob("*.py")
        }
        assert on_disk <= modules, sorted(on_disk - modules)
    assert {"nestor_core.nestor_pb2", "nestor_core.nestor_pb2_grpc", "nestor_robot.policy_node"} <= modules


def test_robot_modules_do_not_load_the_cloud_stack(report):
    assert report["culprits"] == {}, f"forbidden module -> first robot module that loaded it: {report['culprits']}"


def test_probe_names_the_culprit(tmp_path):
    # The probe must be able to fail: an extra module that imports pybullet is reported by name.
    (tmp_path / "leaky_robot_module.py").write_text("import pybullet  # noqa: F401\n")
    result = probe(extra=["leaky_robot_module"], pythonpath=str(tmp_path))
    assert result["culprits"] == {"pybullet": "leaky_robot_module"}
