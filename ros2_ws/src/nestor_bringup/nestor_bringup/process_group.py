"""Run NodeSpecs as separate OS processes, without `ros2 launch`.

Each node is its console script from the same venv as this interpreter, started as
`<script> --ros-args -r __node:=NAME -r __ns:=/NS --params-file <defaults> --params-file <overrides>`.
The overrides of one robot are written to <run_dir>/robots/<id>/params.yaml, so the run records
what it ran. Output goes to <run_dir>/robots/<id>/<node>.log.

Each node leads its own session and process group, so a Ctrl-C in the terminal reaches only us;
signals to a node go to its whole process group. Each node also gets SIGTERM from the kernel
when we exit, however we exit (kill -9 included: `nestor_core.lifeline.die_with_parent`), so no
node outlives the CLI. `stop()` stops in STOP_STAGES order (control first, so the policy's last
flush lands in the spool, then the uplink, which drains the spool to the cloud): SIGINT, wait up to
each node's stop_timeout_s, then SIGKILL. Setting `hurry` (a second Ctrl-C) cuts the waits short.

The lifecycle nodes (NodeSpec.lifecycle) are configured and activated over their lifecycle services
after each start and restart, in the background (nestor_bringup.lifecycle); `lifecycle_failures()`
reports a refused transition. At stop they are deactivated and cleaned up before the SIGINT.
"""

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from nestor_core.lifeline import die_with_parent

from nestor_bringup.nodes import SPOOL_FILE, NodeSpec, overrides_yaml

# Stop order: the policy first (it flushes its recorder into the spool; a sim stopped before it
# would leave it without joint states), then the sim, then the network side (the uplink drains).
STOP_STAGES = (("policy",), ("sim_bridge", "perception"), ("uplink", "weight_sync"))


@dataclasses.dataclass
class ManagedProcess:
    """One running node process."""

    robot_id: str
    spec: NodeSpec
    argv: list[str]
    log_path: Path
    popen: subprocess.Popen
    reported: bool = False
    started_at: float = dataclasses.field(default_factory=time.monotonic)
    restarts: int = 0
    stopping: bool = False  # SIGINT sent: a later stop() waits for it without signalling again
    lifecycle_error: str = ""  # why the newest bring-up failed (a lifecycle node)
    lifecycle_reported: bool = True  # lifecycle_error already handed out by lifecycle_failures()
    bringup: threading.Thread | None = None
    winding_down: bool = False  # stop() began: a bring-up in progress gives up

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
        self.hurry = threading.Event()  # set: stop() SIGKILLs instead of waiting
        self._lifecycle = None  # nestor_bringup.lifecycle.LifecycleManager, made for the first lifecycle node
        self._lifecycle_lock = threading.Lock()

    def _manager(self):
        with self._lifecycle_lock:
            if self._lifecycle is None:
                from nestor_bringup.lifecycle import LifecycleManager

                self._lifecycle = LifecycleManager(self.env)
            return self._lifecycle

    def _bring_up(self, proc: ManagedProcess) -> None:
        """Configure + activate a lifecycle node that just started, in a thread of its own."""
        if not proc.spec.lifecycle:
            return
        from nestor_bringup.nodes import TRANSITION_TIMEOUT_S

        manager, popen = self._manager(), proc.popen

        def run() -> None:
            def cancelled() -> bool:
                return proc.winding_down or self.hurry.is_set() or popen.poll() is not None or proc.popen is not popen

            try:
                error = manager.bring_up(proc.spec.full_name, proc.log_path, TRANSITION_TIMEOUT_S, cancelled)
            except Exception:  # noqa: BLE001 - the manager closed under a cancelled bring-up
                if cancelled():
                    return
                raise
            if error and not cancelled():
                proc.lifecycle_error, proc.lifecycle_reported = error, False

        proc.lifecycle_error, proc.lifecycle_reported = "", True
        proc.bringup = threading.Thread(target=run, name=f"bringup-{proc.label}", daemon=True)
        proc.bringup.start()

    def starting(self) -> bool:
        """Whether a lifecycle node is still being configured and activated."""
        return any(p.bringup is not None and p.bringup.is_alive() for p in self.processes)

    def lifecycle_failures(self) -> list[ManagedProcess]:
        """Lifecycle nodes whose configure or activate failed since the last call (each reported once)."""
        out = []
        for proc in self.processes:
            if not proc.lifecycle_reported:
                proc.lifecycle_reported = True
                out.append(proc)
        return out

    def _spawn(self, argv: list[str], log_path: Path, note: str) -> subprocess.Popen:
        with open(log_path, "ab") as log:
            log.write(f"# {note}{' '.join(argv)}\n".encode())
            log.flush()
            return subprocess.Popen(
                argv,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=die_with_parent(signal.SIGTERM),
            )

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
            proc = ManagedProcess(robot_id, spec, argv, log_path, self._spawn(argv, log_path, ""))
            self.processes.append(proc)
            started.append(proc)
            self._bring_up(proc)
        return started

    def restart(self, proc: ManagedProcess) -> None:
        """Start a dead node again, same command line, same log (appended)."""
        if proc.popen.poll() is None:
            raise RuntimeError(f"{proc.label} is still running")
        proc.restarts += 1
        proc.popen = self._spawn(proc.argv, proc.log_path, f"restart {proc.restarts}: ")
        proc.started_at = time.monotonic()
        proc.reported = False
        proc.stopping = False
        proc.winding_down = False
        self._bring_up(proc)  # a respawned lifecycle node is configured and activated again

    def robots(self) -> list[str]:
        """Robot ids in start order."""
        return list(dict.fromkeys(p.robot_id for p in self.processes))

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

    def stop(self, timeout_s: float | None = None, robots: set[str] | None = None) -> dict[str, int]:
        """Stop every node (of `robots`, when given) in STOP_STAGES order; returns label -> exit code.

        Each node gets SIGINT, then SIGKILL after timeout_s (default: its spec's stop_timeout_s).
        """
        chosen = [p for p in self.processes if robots is None or p.robot_id in robots]
        staged = {name for stage in STOP_STAGES for name in stage}
        for stage in (*STOP_STAGES, None):
            batch = [p for p in chosen if (p.spec.name in stage if stage else p.spec.name not in staged)]
            self._stop(batch, timeout_s)
        if robots is None and self._lifecycle is not None:
            for proc in chosen:
                if proc.bringup is not None:
                    proc.bringup.join(timeout=5.0)
            self._lifecycle.close()
            self._lifecycle = None
        return {p.label: p.popen.returncode for p in chosen}

    def stop_nodes(self, names: set[str], timeout_s: float | None = None) -> dict[str, int]:
        """Stop only the nodes called `names` (on every robot), as stop() does."""
        chosen = [p for p in self.processes if p.spec.name in names]
        self._stop(chosen, timeout_s)
        return {p.label: p.popen.returncode for p in chosen}

    def _wind_down(self, processes: list[ManagedProcess], timeout_s: float | None) -> None:
        """Deactivate and clean up the running lifecycle nodes among `processes`, side by side."""
        for proc in processes:
            proc.winding_down = True  # a bring-up still in progress gives up
        managed = [p for p in processes if p.spec.lifecycle and not p.stopping and p.popen.poll() is None]
        if not managed or self.hurry.is_set():
            return
        manager = self._manager()

        def run(proc: ManagedProcess) -> None:
            limit = proc.spec.stop_timeout_s if timeout_s is None else timeout_s
            deadline = time.monotonic() + limit
            while proc.bringup is not None and proc.bringup.is_alive() and time.monotonic() < deadline:
                proc.bringup.join(timeout=0.1)  # a configure in flight finishes (or the wait gives up)
            manager.bring_down(proc.spec.full_name, max(0.1, deadline - time.monotonic()), self.hurry)

        threads = [threading.Thread(target=run, args=(p,), daemon=True) for p in managed]
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive() and not self.hurry.is_set():
                thread.join(timeout=0.1)

    def _stop(self, processes: list[ManagedProcess], timeout_s: float | None) -> None:
        self._wind_down(processes, timeout_s)
        for proc in processes:
            if not proc.stopping:
                proc.stopping = True
                _signal_group(proc.popen, signal.SIGINT)
        now = time.monotonic()
        deadlines = {id(p): now + (p.spec.stop_timeout_s if timeout_s is None else timeout_s) for p in processes}
        waiting = [p for p in processes if p.popen.poll() is None]
        while waiting:
            now = time.monotonic()
            for proc in waiting:
                if proc.popen.poll() is None and (self.hurry.is_set() or now >= deadlines[id(proc)]):
                    _signal_group(proc.popen, signal.SIGKILL)
                    proc.popen.wait()
            waiting = [p for p in waiting if p.popen.poll() is None]
            if waiting:
                time.sleep(0.05)


def _signal_group(popen: subprocess.Popen, sig: int) -> None:
    """Send `sig` to the process group the node leads (its pgid is its pid), while it is unreaped.

    Unreaped, its pid, and so its group id, cannot have been reused.
    """
    if popen.poll() is not None:
        return
    try:
        os.killpg(popen.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def spool_left(run_dir: str, robot_ids: list[str]) -> dict[str, int | None]:
    """Transitions still unacknowledged in each robot's spool (None: no spool file)."""
    from nestor_robot.spool import Spool

    out = {}
    for robot_id in robot_ids:
        path = Path(run_dir) / "robots" / robot_id / SPOOL_FILE
        if not path.exists():
            out[robot_id] = None
            continue
        try:
            with Spool(str(path), robot_id) as spool:
                out[robot_id] = spool.stats()["depth_transitions"]
        except Exception:  # noqa: BLE001 - a report, not a reason to fail the stop
            out[robot_id] = None
    return out


def describe_spools(left: dict[str, int | None]) -> str:
    """One line: what the stop left in the spools for the next start."""
    parts = []
    for robot_id, count in left.items():
        if count is None:
            continue
        parts.append(f"{robot_id} empty" if count == 0 else f"{robot_id} {count} transitions left for the next start")
    return "spools: " + (", ".join(parts) if parts else "none")
