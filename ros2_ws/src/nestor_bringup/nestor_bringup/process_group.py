"""Run NodeSpecs as separate OS processes, without `ros2 launch`.

Each node is its console script from the same venv as this interpreter, started as
`<script> --ros-args -r __node:=NAME -r __ns:=/NS --params-file <defaults> --params-file <overrides>`.
The overrides of one robot are written to <run_dir>/robots/<id>/params.yaml, so the run records
what it ran. Output goes to <run_dir>/robots/<id>/<node>.log. Processes get their own session, so a
Ctrl-C in the terminal reaches only us; `stop()` then sends SIGINT, waits, and SIGKILLs stragglers.
"""

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from nestor_bringup.nodes import NodeSpec, overrides_yaml


@dataclasses.dataclass
class ManagedProcess:
    """One running node process."""

    robot_id: str
    spec: NodeSpec
    argv: list[str]
    log_path: Path
    popen: subprocess.Popen
    reported: bool = False

    @property
    def label(self) -> str:
        return f"{self.robot_id}/{self.spec.name}"


def script_path(executable: str) -> str:
    """The console script `executable` next to this interpreter (same venv)."""
    path = Path(sys.executable).parent / executable
    if not path.exists():
        raise FileNotFoundError(f"console script {executable!r} not found in {path.parent}")
    return str(path)


def node_argv(spec: NodeSpec, overrides_file: str | None) -> list[str]:
    argv = [script_path(spec.executable), "--ros-args", "-r", f"__node:={spec.name}"]
    ns = spec.namespace.strip("/")
    if ns:
        argv += ["-r", f"__ns:=/{ns}"]
    for path in spec.param_files:
        argv += ["--params-file", str(path)]
    if overrides_file:
        argv += ["--params-file", str(overrides_file)]
    return argv


def node_env(base: dict | None = None) -> dict:
    """Environment of a node: loopback discovery unless told otherwise; ROS_DOMAIN_ID passes through."""
    env = dict(os.environ if base is None else base)
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class ProcessGroup:
    """The node processes of one or more robots."""

    def __init__(self, run_dir: str, env: dict | None = None):
        self.run_dir = Path(run_dir)
        self.env = node_env(env)
        self.processes: list[ManagedProcess] = []

    def start_robot(self, robot_id: str, nodes: list[NodeSpec]) -> list[ManagedProcess]:
        """Write the robot's overrides file and start its nodes in order."""
        robot_dir = self.run_dir / "robots" / robot_id
        robot_dir.mkdir(parents=True, exist_ok=True)
        overrides = robot_dir / "params.yaml"
        overrides.write_text(overrides_yaml(nodes))
        started = []
        for spec in nodes:
            argv = node_argv(spec, str(overrides))
            log_path = robot_dir / f"{spec.name}.log"
            with open(log_path, "ab") as log:
                log.write(f"# {' '.join(argv)}\n".encode())
                log.flush()
                popen = subprocess.Popen(
                    argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            proc = ManagedProcess(robot_id, spec, argv, log_path, popen)
            self.processes.append(proc)
            started.append(proc)
        return started

    def dead(self) -> list[ManagedProcess]:
        """Processes that exited since the last call (each reported once)."""
        out = []
        for proc in self.processes:
            if not proc.reported and proc.popen.poll() is not None:
                proc.reported = True
                out.append(proc)
        return out

    def describe_death(self, proc: ManagedProcess, lines: int = 20) -> str:
        return (
            f"{proc.label} ({proc.spec.executable}) exited with code {proc.popen.returncode}; "
            f"last lines of {proc.log_path}:\n{log_tail(proc.log_path, lines)}"
        )

    def running(self) -> list[ManagedProcess]:
        return [p for p in self.processes if p.popen.poll() is None]

    def stop(self, timeout_s: float = 10.0) -> dict[str, int]:
        """SIGINT everyone, wait up to timeout_s, then SIGKILL; returns label -> exit code."""
        self._stop(self.processes, timeout_s)
        return {p.label: p.popen.returncode for p in self.processes}

    def stop_nodes(self, names: set[str], timeout_s: float = 10.0) -> dict[str, int]:
        """Stop only the nodes called `names` (on every robot), as stop() does."""
        chosen = [p for p in self.processes if p.spec.name in names]
        self._stop(chosen, timeout_s)
        return {p.label: p.popen.returncode for p in chosen}

    @staticmethod
    def _stop(processes: list[ManagedProcess], timeout_s: float) -> None:
        for proc in processes:
            if proc.popen.poll() is not None:
                continue
            try:
                proc.popen.send_signal(signal.SIGINT)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout_s
        for proc in processes:
            left = max(0.0, deadline - time.monotonic())
            try:
                proc.popen.wait(timeout=left)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait()
