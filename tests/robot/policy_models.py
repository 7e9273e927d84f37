"""Test helper: real policy ONNX files, exported by cloud_brain in a subprocess.

torch must never share a process with rclpy, so the export runs in its own interpreter.
"""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
JOINTS = tuple(f"lbr_iiwa_joint_{i}" for i in range(1, 8))

_SCRIPT = """
import sys
from cloud_brain.learning.policy_net import NestedPolicy, NetSpec
from cloud_brain.learning.policy_export import export_onnx

joints = tuple(sys.argv[2].split(","))
n = len(joints)
spec = NetSpec(task="kuka_track", controlled_joints=joints, passive_joints=(), kp=(300.0,) * n,
               kd=(30.0,) * n, effort_limit=(100.0,) * n, obs_scale=(1.0,) * (4 * n), hidden=8,
               key_features=8)
for i, path in enumerate(sys.argv[3:]):
    with open(path, "wb") as f:
        f.write(export_onnx(NestedPolicy(spec, seed=int(sys.argv[1]) + i)))
"""


def export_models(out_dir: Path, count: int = 2, seed: int = 0) -> list[Path]:
    """Write `count` kuka_track models (7 joints, tiny nets) into out_dir; returns their paths."""
    paths = [Path(out_dir) / f"model_{i + 1}.onnx" for i in range(count)]
    env = dict(os.environ, PYTHONPATH=str(REPO / "cloud_brain"))
    subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(seed), ",".join(JOINTS), *map(str, paths)],
        check=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )
    return paths
