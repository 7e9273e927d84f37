"""The robot's sources and modules stay clear of torch, pybullet and yaml."""

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path


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
