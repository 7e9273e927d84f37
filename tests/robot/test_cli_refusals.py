"""Bad input to `nestor` is refused before any process starts.

One line naming the file, the field and the problem, exit code 2, no traceback, nothing created.
The sim bridge refuses the same input alone.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from nestor_bringup.cli import default_config_dir
from nestor_demo.cloud_process import load_cloud_base
from task_testlib import edited_task

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]
KUKA = REPO / "config" / "tasks" / "kuka_track.yaml"


def _nestor(cwd: Path, *argv: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    return subprocess.run([str(BIN / "nestor"), *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def _refused(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0], result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def _task(tmp_path: Path, edit) -> Path:
    return edited_task(KUKA, tmp_path / "task.yaml", edit)


@pytest.mark.parametrize(
    ("edit", "fragments"),
    [
        (lambda d: d.update(physics_substep=d.pop("physics_substeps")), ["physics_substep: unknown field"]),
        (lambda d: d.update(control_rate_hz="fast"), ["control_rate_hz: expected float"]),
        (lambda d: d.pop("episode_s"), ["episode_s"]),
    ],
    ids=["typo", "wrong_type", "missing"],
)
def test_bad_task_file_is_refused_before_any_process(tmp_path, edit, fragments):
    task = _task(tmp_path, edit)
    run_dir = tmp_path / "run"
    result = _nestor(tmp_path, "robot", "--robot-id", "r0", "--task-file", str(task), "--run-dir", str(run_dir))
    _refused(result, "--task-file", "task.yaml", *fragments)
    assert not run_dir.exists()  # nothing started, nothing written


@pytest.mark.parametrize(
    ("shift", "fragment"),
    [
        ("gravity:4@10", "unknown shift 'gravity'"),
        ("payload:4@10#nolink", "'nolink' is not a link of model.urdf"),
        ("payload:-4@10", "magnitude: must be >= 0"),
        ("actuator_gain:-0.5", "magnitude: must be > 0"),
        ("payload:4@-3", "at_s: must be >= 0"),
    ],
)
@pytest.mark.parametrize("command", ["robot", "fleet"])
def test_bad_shift_is_refused_before_any_process(tmp_path, command, shift, fragment):
    run_dir = tmp_path / "run"
    who = ["--robot-id", "r0"] if command == "robot" else ["--robots", "2"]
    result = _nestor(tmp_path, command, *who, "--shift", shift, "--run-dir", str(run_dir))
    _refused(result, "--shift", shift, fragment)
    assert not run_dir.exists()


def test_demo_cloud_config_is_checked_before_the_run_dir_is_made(tmp_path):
    _refused(_nestor(tmp_path, "demo", "--cloud-config", "nope.yaml"), "--cloud-config", "nope.yaml")
    bad = tmp_path / "cloud.yaml"
    bad.write_text("max_workerz: 300\n")
    _refused(_nestor(tmp_path, "demo", "--cloud-config", str(bad)), "--cloud-config", "max_workerz: unknown field")
    assert not (tmp_path / "runs").exists()  # no run dir, no certs, no runs/latest


def test_demo_default_cloud_config_is_found_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = load_cloud_base(os.path.join(default_config_dir(), "cloud.yaml"), str(KUKA))
    assert isinstance(base, dict) and base


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        (["-p", "shifts:=['payload:-4@10']"], "magnitude: must be >= 0"),
        (["-p", "shifts:=['payload:4@10#nolink']"], "'nolink' is not a link"),
        (["-p", "task_file:=TYPO"], "physics_substep: unknown field"),
    ],
)
def test_sim_bridge_refuses_bad_input_in_one_line(tmp_path, params, fragment):
    typo = _task(tmp_path, lambda d: d.update(physics_substep=d.pop("physics_substeps")))
    params = [p.replace("TYPO", str(typo)) for p in params]
    if not any(p.startswith("task_file") for p in params):
        params += ["-p", f"task_file:={KUKA}"]
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    result = subprocess.run(
        [str(BIN / "sim_bridge"), "--ros-args", *params], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith("sim_bridge: error: ") and fragment in errors[0], result.stderr
    assert "Traceback" not in result.stderr


def test_version_and_defaults_in_help(tmp_path):
    from importlib.metadata import version

    result = _nestor(tmp_path, "--version")
    assert result.returncode == 0 and result.stdout.strip() == f"nestor {version('nestor_bringup')}"
    defaults = [("robot", "(default: kuka_track)"), ("fleet", "(default: 2)"), ("demo", "(default: 150.0)")]
    for command, default in defaults:
        helped = _nestor(tmp_path, command, "--help")
        assert helped.returncode == 0 and default in " ".join(helped.stdout.split()), (command, helped.stdout)
    assert "--json" in _nestor(tmp_path, "demo", "--help").stdout
