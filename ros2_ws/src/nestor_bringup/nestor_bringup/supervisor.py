"""Supervision of a ProcessGroup: restart the network side, stop a robot whose control path died.

Rules (the launch files say the same through each NodeSpec's respawn fields):

* A node with `respawn` (perception, uplink, weight_sync; `nodes.RESPAWN_NODES`) that dies is
  started again after a backoff: `respawn_delay`, doubled for each crash in a row, capped at
  `RestartPolicy.max_delay_s`. A node that ran `stable_s` before it died starts again from the
  first delay. The robot's control loop keeps running on its current model meanwhile, and the
  spool keeps every transition until the uplink is back.
* Each node may be restarted `respawn_max_retries` times within `window_s`. One more crash and
  the supervisor gives up: the robot is stopped, as below.
* A node without `respawn` (sim_bridge, policy: the control path) that dies stops its robot,
  loudly. The other robots of the group keep running.
* A lifecycle node that refuses its configure (a bad parameter, an unreadable model) or its
  activate stops its robot too, with the node's reason: a restart would be refused the same way.
  A respawned lifecycle node is configured and activated again (ProcessGroup.restart).

Every restart, and what each robot's nodes are doing, is written to
`<run_dir>/robots/<id>/supervision.json`, which the policy node reports in `policy/status`.
"""

import collections
import dataclasses
import signal
import sys
import threading
import time
from pathlib import Path

from nestor_core.atomic_file import write_json_atomic

from nestor_bringup.process_group import ManagedProcess, ProcessGroup, log_tail

SUPERVISION_FILE = "supervision.json"


@dataclasses.dataclass
class RestartPolicy:
    """Backoff and budget of the restarts.

    Attributes:
        max_delay_s: cap of the doubling restart delay.
        window_s: the restart budget (each node's respawn_max_retries) counts restarts in this window.
        stable_s: a node that ran this long before it died starts again from its first delay.
        delay_s: overrides every node's respawn_delay when set (None = the NodeSpec's).
        budget: overrides every node's respawn_max_retries when set (None = the NodeSpec's).
    """

    max_delay_s: float = 30.0
    window_s: float = 600.0
    stable_s: float = 60.0
    delay_s: float | None = None
    budget: int | None = None

    def delay(self, first_delay_s: float, crashes_in_a_row: int) -> float:
        """Delay before restart number `crashes_in_a_row` (1 = the first) of a crash series."""
        return min(self.max_delay_s, first_delay_s * 2 ** max(0, crashes_in_a_row - 1))


@dataclasses.dataclass
class _NodeState:
    restarts: collections.deque = dataclasses.field(default_factory=collections.deque)  # monotonic times
    in_a_row: int = 0
    due: float | None = None  # restart time of a dead node
    last_exit: int | None = None


@dataclasses.dataclass
class RobotFailure:
    """A robot the supervisor stopped: `reason` is the one-line cause, `detail` the log tail."""

    robot_id: str
    reason: str
    detail: str


class Supervisor:
    """Applies the rules of the module docstring to a ProcessGroup; call `poll()` periodically.

    Args:
        group: the running nodes.
        policy: backoff and budget.
        out: where the supervisor's lines go (the terminal).
    """

    def __init__(self, group: ProcessGroup, policy: RestartPolicy | None = None, out=None):
        self.group = group
        self.policy = policy or RestartPolicy()
        self.out = out or sys.stderr
        self.failed: dict[str, RobotFailure] = {}
        self._state: dict[int, _NodeState] = collections.defaultdict(_NodeState)
        self._stoppers: list[threading.Thread] = []
        for robot_id in group.robots():
            self._write(robot_id)

    def _say(self, line: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} nestor: {line}", file=self.out, flush=True)

    def _first_delay(self, proc: ManagedProcess) -> float:
        return proc.spec.respawn_delay if self.policy.delay_s is None else self.policy.delay_s

    def _budget(self, proc: ManagedProcess) -> int:
        return proc.spec.respawn_max_retries if self.policy.budget is None else self.policy.budget

    def poll(self, now: float | None = None) -> list[RobotFailure]:
        """Handle the exits since the last call and the restarts now due; returns robots newly stopped."""
        now = time.monotonic() if now is None else now
        failures: list[RobotFailure] = []
        changed = set()
        for proc in self.group.dead():
            if proc.robot_id in self.failed:
                continue
            changed.add(proc.robot_id)
            failure = self._on_exit(proc, now)
            if failure is not None:
                failures.append(failure)
        for proc in self.group.lifecycle_failures():
            if (
                proc.robot_id in self.failed
                or proc.popen.poll() is not None
                or any(f.robot_id == proc.robot_id for f in failures)
            ):
                continue  # a death is handled above; one reason per robot
            changed.add(proc.robot_id)
            failures.append(
                RobotFailure(
                    proc.robot_id,
                    f"{proc.label} ({proc.spec.executable}) {proc.lifecycle_error}",
                    f"last lines of {proc.log_path}:\n{log_tail(proc.log_path, 12)}",
                )
            )
        for proc in self.group.processes:
            state = self._state[id(proc)]
            if state.due is not None and now >= state.due and proc.robot_id not in self.failed:
                state.due = None
                state.restarts.append(now)
                self.group.restart(proc)
                changed.add(proc.robot_id)
                budget = self._budget(proc)
                self._say(
                    f"restarted {proc.label} (pid {proc.popen.pid}; restart {len(state.restarts)}/{budget} "
                    f"within {self.policy.window_s:g} s)"
                )
        for failure in failures:
            self.failed[failure.robot_id] = failure
            self._say(f"error: {failure.reason}; stopping robot {failure.robot_id}\n{failure.detail}")
            # In the background (its uplink may drain for a while): the other robots stay supervised.
            stopper = threading.Thread(
                target=self.group.stop,
                kwargs={"robots": {failure.robot_id}},
                name=f"stop-{failure.robot_id}",
                daemon=True,
            )
            stopper.start()
            self._stoppers.append(stopper)
            changed.add(failure.robot_id)
        for robot_id in changed:
            self._write(robot_id)
        return failures

    def _on_exit(self, proc: ManagedProcess, now: float) -> RobotFailure | None:
        code = proc.popen.returncode
        how = _exit_text(code)
        state = self._state[id(proc)]
        state.last_exit = code
        tail = f"last lines of {proc.log_path}:\n{log_tail(proc.log_path, 12)}"
        if not proc.spec.respawn:
            return RobotFailure(
                proc.robot_id, f"{proc.label} ({proc.spec.executable}) {how}: it is on the control path", tail
            )
        while state.restarts and now - state.restarts[0] > self.policy.window_s:
            state.restarts.popleft()
        budget = self._budget(proc)
        if len(state.restarts) >= budget:
            return RobotFailure(
                proc.robot_id,
                f"{proc.label} ({proc.spec.executable}) {how}; restart budget spent "
                f"({len(state.restarts)} restarts within {self.policy.window_s:g} s)",
                tail,
            )
        state.in_a_row = 1 if now - proc.started_at >= self.policy.stable_s else state.in_a_row + 1
        delay = self.policy.delay(self._first_delay(proc), state.in_a_row)
        state.due = now + delay
        self._say(
            f"warning: {proc.label} ({proc.spec.executable}) {how}; the robot keeps running, restart in {delay:g} s"
        )
        return None

    def status(self, robot_id: str) -> dict:
        """What supervision.json holds for one robot."""
        nodes = {}
        for proc in self.group.processes:
            if proc.robot_id != robot_id:
                continue
            state = self._state[id(proc)]
            nodes[proc.spec.name] = {
                "pid": proc.popen.pid,
                "running": proc.popen.poll() is None,
                "respawn": proc.spec.respawn,
                "restarts": proc.restarts,
                "last_exit": state.last_exit,
                "restart_pending": state.due is not None,
            }
        failure = self.failed.get(robot_id)
        return {
            "robot_id": robot_id,
            "wall_time": time.time(),
            "stopped": failure is not None,
            "reason": failure.reason if failure else "",
            "restarts": sum(n["restarts"] for n in nodes.values()),
            "down": sorted(name for name, n in nodes.items() if not n["running"]),
            "nodes": nodes,
        }

    def _write(self, robot_id: str) -> None:
        path = Path(self.group.run_dir) / "robots" / robot_id / SUPERVISION_FILE
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(path, self.status(robot_id), indent=1, sort_keys=True)
        except OSError as err:
            self._say(f"warning: cannot write {path}: {err}")

    def alive_robots(self) -> list[str]:
        return [r for r in self.group.robots() if r not in self.failed]

    def stopping(self) -> bool:
        """Whether the stop of a failed robot is still under way."""
        return any(t.is_alive() for t in self._stoppers)


def _exit_text(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name} (exit code {code})"
        except ValueError:
            pass
    return f"exited with code {code}"


class StopSignals:
    """SIGINT, SIGTERM and SIGHUP stop the run.

    The first raises KeyboardInterrupt in the main thread (once); a later one, or any during the
    stop, sets `group.hurry` (stop now, no more waiting).

    Use as a context manager around the run; set `stopping` before stopping for another reason.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self, group: ProcessGroup):
        self.group = group
        self.stopping = False
        self.received: int | None = None
        self._previous = {}

    def _handle(self, signum, frame):
        if self.received is None:
            self.received = signum
        if self.stopping:
            self.group.hurry.set()
            return
        self.stopping = True
        raise KeyboardInterrupt

    def __enter__(self) -> "StopSignals":
        self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
