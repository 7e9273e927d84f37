"""The policy node: runs the ONNX policy on every joint-state message and records experience.

Threads and what they may do:
  * tick (joint_states callback, plus target/cost/model_update callbacks in the same mutually
    exclusive group): build the observation, swap in a pending model, `runtime.step`, publish the
    command, `recorder.record`. No disk or network I/O, no model loading.
  * model loader (background thread): reads announced model files and verifies them (the signed
    manifest in the weight_sync sidecar when `public_key_path` is set, then `load_model`, which
    re-checks the announced sha256); a verified model waits in the pending slot until the next
    tick starts.
  * flusher (background thread): every flush_period_s drains the recorder into the spool.
  * the same background thread, every status_period_s: computes the stats (tick-time percentiles)
    and writes `<run_dir>/policy_stats.json` atomically; a timer then publishes the newest stats as
    a DiagnosticArray on topics.POLICY_STATUS (cheap, between two ticks).
One single-threaded executor runs the callbacks, so a tick never overlaps another callback.
"""

import collections
import dataclasses
import json
import math
import os
import queue
import signal
import sys
import threading
import time
import typing

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from nestor_core import topics
from nestor_core.diagnostics import Diagnostics
from nestor_core.executors import check_kind, make_executor, spin
from nestor_core.lifecycle import ManagedNode
from nestor_core.manifest import ManifestRejected, load_public_key, verify_stored
from nestor_core.policy_model import ModelRejected, PolicyModel, load_model
from nestor_core.policy_runtime import PolicyRuntime, RuntimeConfig
from nestor_core.qos import COMMAND_QOS, EVENT_QOS, SENSOR_QOS, STATUS_QOS
from nestor_core.realtime import freeze_heap, set_sched_priority
from rclpy.executors import ExternalShutdownException
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64, Float64MultiArray, String

from nestor_robot.experience_ring import RingFile, recover, ring_path
from nestor_robot.input_guard import InputGuard, observation_layout
from nestor_robot.params import INF, ConfigError, declare_parameters, refuse_undeclared
from nestor_robot.recorder import ExperienceRecorder
from nestor_robot.robot_metrics import PolicyMetrics
from nestor_robot.rollback import RollbackMonitor, Verdict

SPOOL_FULL_POLICIES = ("drop_oldest", "reject_newest")

# RuntimeConfig's parameter ranges (the dataclass lives in nestor_core and knows nothing of ROS).
RUNTIME_RANGES = {
    "horizon": (2, 1_000_000),
    "l0_step_scale": (0.0, 1.0),
    "l1_period": (1, INF),
    "l1_step_scale": (0.0, INF),
    "l1_max_abs": (0.0, INF),
}
# Changed at run time with `ros2 param set` (takes effect on the next tick); every other one is read-only.
RUNTIME_DYNAMIC = ("l0_step_scale",)


@dataclasses.dataclass
class PolicyNodeConfig:
    """Parameters of the policy node (RuntimeConfig's fields are declared next to these).

    Attributes:
        robot_id: this robot's id; owns the spool's sequence numbers.
        task: task name; models for another task are refused.
        initial_model: path of a local .onnx to start with; empty waits for a model_update.
        initial_model_version: version recorded for the initial model.
        spool_path: SQLite spool file shared with the uplink node; empty disables recording.
        spool_capacity: most unacked transitions kept in the spool.
        spool_full_policy: drop_oldest or reject_newest when the spool is full.
        recorder_capacity: transitions buffered in memory between two flushes (more is overflow).
        flush_period_s: period of the recorder-to-spool flush (one fsync'd commit each). With a
            ring_dir a crash of this process loses nothing (the restarted node commits the ring);
            a power loss loses at most this much unflushed experience.
        run_dir: directory for policy_stats.json; empty writes no stats file.
        control_rate_hz: nominal tick rate; a tick later than 1.5 periods counts as missed.
        status_period_s: period of the status topic and the stats file.
        tick_samples: compute-time samples kept for the percentiles.
        sched_priority: SCHED_FIFO priority of the node's threads (1-99; 0 = default scheduling).
            Without the privilege the node logs it and runs at default priority.
        executor: "events" (rclpy's EventsExecutor, C++ dispatch: about half the CPU per tick of
            "single") or "single" (SingleThreadedExecutor).
        public_key_path: PEM ed25519 public key of the model signer; when set, a model (the initial
            one included) is loaded only if the .json sidecar next to it holds a manifest signed by
            this key that names the file's sha256 and version. Empty = not checked.
        rollback_window_ticks: ticks of the moving-average cost compared before and after a swap;
            0 = no automatic rollback.
        rollback_margin: roll back when the post-swap average exceeds the pre-swap one by more than
            this fraction of it (0.2 = 20 % worse); 0 = no automatic rollback.
        metrics_port: Prometheus /metrics port on 127.0.0.1 (model version, swaps, rollbacks, missed
            ticks, spool depth); 0 = off.
        input_hold_ticks: on a bad sensor tick (non-finite or out-of-range joint state or target) the
            last good command is held for at most this many ticks, then zero effort is sent.
        max_abs_position: largest believable |position| of a joint or reference (rad or m); beyond
            it a joint state is refused as physically impossible.
        max_abs_velocity: largest believable |velocity| of a joint or reference (rad/s or m/s).
        ring_dir: directory of the memory-mapped recorder ring (tmpfs: /dev/shm). What the tick
            records survives a kill -9 of this process there, and the restarted node commits it to
            the spool; empty = the ring lives in process memory (a crash loses up to flush_period_s).
    """

    robot_id: str = "robot0"
    task: str = "kuka_track"
    initial_model: str = ""
    initial_model_version: int = 0
    spool_path: str = ""
    spool_capacity: int = 200_000
    spool_full_policy: str = "drop_oldest"
    recorder_capacity: int = 4096
    flush_period_s: float = 1.0
    run_dir: str = ""
    control_rate_hz: float = 100.0
    status_period_s: float = 1.0
    tick_samples: int = 10_000
    sched_priority: int = 0
    executor: str = "events"
    public_key_path: str = ""
    rollback_window_ticks: int = 0
    rollback_margin: float = 0.0
    metrics_port: int = 0
    input_hold_ticks: int = 10
    max_abs_position: float = 100.0
    max_abs_velocity: float = 100.0
    ring_dir: str = "/dev/shm"

    RANGES: typing.ClassVar[dict] = {
        "initial_model_version": (0, INF),
        "spool_capacity": (1, INF),
        "recorder_capacity": (1, INF),
        "flush_period_s": (0.0, 3600.0),
        "control_rate_hz": (0.0, 100_000.0),
        "status_period_s": (0.0, 3600.0),
        "tick_samples": (1, 100_000_000),
        "sched_priority": (0, 99),
        "rollback_window_ticks": (0, INF),
        "rollback_margin": (0.0, INF),
        "metrics_port": (0, 65535),
        "input_hold_ticks": (0, INF),
        "max_abs_position": (0.0, INF),
        "max_abs_velocity": (0.0, INF),
    }

    def validate(self) -> "PolicyNodeConfig":
        if not self.robot_id:
            raise ValueError("robot_id: must not be empty")
        if not self.task:
            raise ValueError("task: must not be empty")
        if self.spool_capacity < 1:
            raise ValueError(f"spool_capacity: must be >= 1, got {self.spool_capacity}")
        if self.spool_full_policy not in SPOOL_FULL_POLICIES:
            raise ValueError(f"spool_full_policy: {self.spool_full_policy!r} not in {SPOOL_FULL_POLICIES}")
        if self.recorder_capacity < 1:
            raise ValueError(f"recorder_capacity: must be >= 1, got {self.recorder_capacity}")
        for name in ("flush_period_s", "control_rate_hz", "status_period_s"):
            if not getattr(self, name) > 0.0:
                raise ValueError(f"{name}: must be > 0, got {getattr(self, name)}")
        check_kind(self.executor)
        if self.tick_samples < 1:
            raise ValueError(f"tick_samples: must be >= 1, got {self.tick_samples}")
        if self.initial_model and not os.path.isfile(self.initial_model):
            raise ValueError(f"initial_model: no such file {self.initial_model!r}")
        if self.ring_dir and self.spool_path and not os.path.isdir(self.ring_dir):
            raise ValueError(f"ring_dir: no such directory {self.ring_dir!r}")
        if self.public_key_path and not os.path.isfile(self.public_key_path):
            raise ValueError(f"public_key_path: no such file {self.public_key_path!r}")
        if self.rollback_window_ticks < 0:
            raise ValueError(f"rollback_window_ticks: must be >= 0, got {self.rollback_window_ticks}")
        if self.rollback_margin < 0:
            raise ValueError(f"rollback_margin: must be >= 0, got {self.rollback_margin}")
        if not 0 <= self.metrics_port <= 65535:
            raise ValueError(f"metrics_port: must be in 0..65535, got {self.metrics_port}")
        if self.input_hold_ticks < 0:
            raise ValueError(f"input_hold_ticks: must be >= 0, got {self.input_hold_ticks}")
        for name in ("max_abs_position", "max_abs_velocity"):
            if not getattr(self, name) > 0.0:
                raise ValueError(f"{name}: must be > 0, got {getattr(self, name)}")
        return self


def write_json_atomic(path: str, data: dict) -> None:
    """Write JSON to path via a temporary file and os.replace (readers never see half a file)."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


SWAP_LOG_LEN = 200
SUPERVISION_FILE = "supervision.json"  # written by nestor_bringup.supervisor into the robot's run dir


def read_supervision(run_dir: str) -> dict:
    """The supervisor's view of this robot's nodes (restarts, nodes down); {} without one."""
    if not run_dir:
        return {}
    try:
        with open(os.path.join(run_dir, SUPERVISION_FILE)) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return {k: data.get(k) for k in ("restarts", "down", "stopped")} if isinstance(data, dict) else {}


class _JointIndex:
    """Cached mapping of a JointState name list to the indices of the joints we need."""

    def __init__(self):
        self.names: list[str] | None = None
        self.wanted: tuple[str, ...] = ()
        self.idx: np.ndarray | None = None
        self.missing: str | None = None

    def lookup(self, names, wanted: tuple[str, ...]) -> np.ndarray | None:
        """Indices of `wanted` in `names` (None when one is missing: see `.missing`)."""
        if names != self.names or wanted is not self.wanted:
            self.names = list(names)
            self.wanted = wanted
            where = {name: i for i, name in enumerate(self.names)}
            self.missing = next((j for j in wanted if j not in where), None)
            self.idx = None if self.missing else np.array([where[j] for j in wanted], np.intp)
        return self.idx


class PolicyNode(ManagedNode):
    """Node `policy`: see the module docstring."""

    def __init__(self, **kwargs):
        super().__init__("policy", **kwargs)
        self._log = self.get_logger()
        self._bindings = (
            declare_parameters(self, PolicyNodeConfig),
            declare_parameters(
                self, RuntimeConfig, ranges=RUNTIME_RANGES, dynamic=RUNTIME_DYNAMIC, on_change=self._on_runtime_change
            ),
        )
        refuse_undeclared(self)
        # Read when the process starts: the executor and the scheduling class are the process's.
        try:
            self.executor_kind = check_kind(str(self.get_parameter("executor").value))
        except ValueError as err:
            raise ConfigError(f"parameter {err}") from None
        self._log.info(set_sched_priority(int(self.get_parameter("sched_priority").value)))
        self.config: PolicyNodeConfig | None = None
        self.runtime_config: RuntimeConfig | None = None
        self.runtime: PolicyRuntime | None = None
        self.recorder: ExperienceRecorder | None = None
        self._spool = self._metrics_http = self._status_timer = None
        self._entities: list = []
        self._active = False

    # ------------------------------------------------------------------ lifecycle

    def configure(self) -> None:
        """Read the parameters, open the spool (committing a crashed predecessor's ring), load and
        verify the initial model, create the publishers, subscriptions and the metrics server."""
        self.config = cfg = self._bindings[0].read()
        self.runtime_config = self._bindings[1].read()

        self.runtime: PolicyRuntime | None = None
        self.recorder: ExperienceRecorder | None = None
        self.model_version: int | None = None
        self._pending: PolicyModel | None = None
        self._pending_lock = threading.Lock()
        self._newest_seen = -1  # newest model version announced or running: older ones are ignored

        # Tick state; written only on the tick thread.
        self.ticks = 0
        self.missed_ticks = 0
        self.missed_log: list[dict] = []  # the first 100 missed ticks, to find their cause
        self.max_gap_s = 0.0
        self.bad_inputs = 0
        self.last_bad_input = ""
        self._guard: InputGuard | None = None
        self._bad_ticks_at_last_stats = 0
        self.no_target_ticks = 0
        self._last_tick_start: float | None = None
        self._period = 1.0 / cfg.control_rate_hz
        self._joint_index = _JointIndex()
        self._target_index = _JointIndex()
        self._obs: np.ndarray | None = None
        self._q_ref: np.ndarray | None = None
        self._qd_ref: np.ndarray | None = None
        self._have_target = False
        self._cost = 0.0
        self._cmd = Float64MultiArray()
        self._tick_us = np.zeros(cfg.tick_samples, np.float64)
        self._tick_n = 0

        self.swaps = 0
        self.swap_log: collections.deque[dict] = collections.deque(maxlen=SWAP_LOG_LEN)  # newest; `swaps` counts all
        self.rollbacks = 0
        self.rollback_log: list[dict] = []  # newest 20
        self._rollback = RollbackMonitor(cfg.rollback_window_ticks, cfg.rollback_margin)
        self._bad_versions: set[int] = set()  # rolled back here: never adopted again
        self._previous_model: PolicyModel | None = None  # kept loaded for a rollback
        self.rejected_models = 0
        self.reject_log: list[dict] = []  # newest 20
        self.spool_errors = 0
        self._spool = None
        self._ring_path = ""
        self.ring_recovery: dict = {}
        self._unsent_mark = None
        self._spool_stats: dict = {}
        self._unsent = None  # a drained batch the spool refused to take; retried on the next flush

        self._public_key = None
        if cfg.public_key_path:
            try:
                self._public_key = load_public_key(cfg.public_key_path)
            except ValueError as err:
                raise ConfigError(f"parameter public_key_path: {err}") from None

        if cfg.spool_path:
            from nestor_robot.spool import Spool  # imported here: the tick path never touches it

            os.makedirs(os.path.dirname(os.path.abspath(cfg.spool_path)), exist_ok=True)
            self._spool = Spool(cfg.spool_path, cfg.robot_id, cfg.spool_capacity, cfg.spool_full_policy)
            if cfg.ring_dir:
                self._ring_path = ring_path(cfg.ring_dir, cfg.spool_path, cfg.robot_id)
                self.ring_recovery = recover(self._ring_path, self._spool)
                if self.ring_recovery["recovered"] or self.ring_recovery["lost"]:
                    self._log.warning(
                        f"recorder ring of the previous policy process: {self.ring_recovery['recovered']} transitions "
                        f"committed to the spool, {self.ring_recovery['lost']} had been overwritten"
                    )
            self._spool_stats = self._spool.stats()
        else:
            self._log.warning("spool_path is empty: experience is not recorded")
        if cfg.initial_model:
            with open(cfg.initial_model, "rb") as f:
                data = f.read()
            try:
                self._verify_signed(cfg.initial_model, data, cfg.initial_model_version or None)
                model = load_model(data, None, cfg.initial_model_version)
                self._check_task(model)
            except (ModelRejected, ManifestRejected) as err:
                raise ConfigError(f"parameter initial_model: {cfg.initial_model}: {err}") from None
            self._activate(model)

        if cfg.run_dir:
            os.makedirs(cfg.run_dir, exist_ok=True)

        self._cmd_pub = self.create_lifecycle_publisher(Float64MultiArray, topics.COMMANDS, COMMAND_QOS)
        # Reliable and latched: a weight_sync that (re)starts later still forwards the report.
        self._rollback_pub = self.create_lifecycle_publisher(String, topics.POLICY_ROLLBACK, EVENT_QOS)
        self._metrics = PolicyMetrics()
        self._metrics_http = self._metrics.serve(cfg.metrics_port)
        self._status_pub = self.create_lifecycle_publisher(DiagnosticArray, topics.POLICY_STATUS, STATUS_QOS)
        self._diagnostics = Diagnostics(self, self.config.robot_id, STATUS_QOS)
        self._entities = [
            self.create_subscription(JointState, topics.JOINT_STATES, self._on_joint_states, SENSOR_QOS),
            self.create_subscription(JointState, topics.TARGET, self._on_target, SENSOR_QOS),
            self.create_subscription(Float64, topics.COST, self._on_cost, COMMAND_QOS),
            # Announcements that arrive while inactive wait in the queue for the loader.
            self.create_subscription(String, topics.MODEL_UPDATE, self._on_model_update, EVENT_QOS),
        ]
        self._last_stats: dict | None = None
        self._stop = threading.Event()
        self._updates: queue.Queue = queue.Queue()

    def activate(self) -> None:
        """Start the tick, the model loader, the flusher and the status timer."""
        cfg = self.config
        self._stop = threading.Event()
        self._loader = threading.Thread(target=self._load_loop, name="model_loader", daemon=True)
        self._flusher = threading.Thread(target=self._flush_loop, name="spool_flusher", daemon=True)
        self._loader.start()
        self._flusher.start()
        self._status_timer = self.create_timer(cfg.status_period_s, self.publish_status)
        self._last_tick_start = None  # the pause since the last activation is no missed tick
        self._active = True
        self._log.info(
            f"policy ready: robot {cfg.robot_id}, task {cfg.task}, model version {self.model_version}, "
            f"spool {cfg.spool_path or '(none)'}"
        )

    def deactivate(self) -> None:
        """Stop the tick (no more commands) and the threads, flush the recorder, write the stats."""
        self._active = False
        if self._status_timer is not None:
            self.destroy_timer(self._status_timer)
            self._status_timer = None
        self._stop.set()
        self._flusher.join(timeout=5.0)
        self._loader.join(timeout=5.0)
        self.flush()
        self._write_stats(self.stats())

    def cleanup(self) -> None:
        """Release the spool, the ring (when everything reached the spool), the model and the metrics server."""
        if self._metrics_http is not None:
            self._metrics_http[0].shutdown()
            self._metrics_http[0].server_close()
            self._metrics_http = None
        ring = self.recorder.ring if self.recorder is not None else None
        if ring is not None and self._unsent is None and self.recorder.stats()["pending"] == 0:
            try:
                os.unlink(ring.path)  # everything is in the spool; a stopped node leaves no ring behind
            except OSError:
                pass
        if self._spool is not None:
            self._spool.close()
            self._spool = None
        for entity in self._entities:
            self.destroy_subscription(entity)
        self._entities = []
        for name in ("_cmd_pub", "_rollback_pub", "_status_pub"):
            if getattr(self, name, None) is not None:
                self.destroy_lifecycle_publisher(getattr(self, name))
                setattr(self, name, None)
        if getattr(self, "_diagnostics", None) is not None:
            self._diagnostics.destroy()
            self._diagnostics = None
        self.runtime = self.recorder = self._pending = self._previous_model = None
        self.model_version = None

    def close(self) -> None:
        """Deactivate and clean up, whatever the state (at exit). Idempotent."""
        self.teardown()

    def _on_runtime_change(self, changes: dict) -> None:
        """An accepted `ros2 param set` of a RuntimeConfig field (executor thread, between two ticks)."""
        if "l0_step_scale" in changes and self.runtime is not None:
            self.runtime.set_l0_step_scale(changes["l0_step_scale"])
        self._log.info(f"parameters changed: {changes}")

    # ------------------------------------------------------------------ the tick

    def _on_joint_states(self, msg: JointState) -> None:
        if not self._active:
            return
        start = time.perf_counter()
        if self._pending is not None:
            self._swap_pending()
        runtime = self.runtime
        if runtime is None:
            return
        stamp = msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec
        if self._last_tick_start is not None:
            gap = start - self._last_tick_start
            if gap > 1.5 * self._period:
                self.missed_ticks += 1
                if len(self.missed_log) < 100:
                    self.missed_log.append({
                        "tick": self.ticks, "gap_ms": round(gap * 1e3, 2), "unix": time.time(),
                        # the sim's own tick interval: large = the sim was late, normal = delivery or this process
                        "stamp_gap_ms": round((stamp - self._last_stamp) * 1e3, 2),
                    })
            if gap > self.max_gap_s:
                self.max_gap_s = gap
        self._last_tick_start = start
        self._last_stamp = stamp
        if not self._have_target:
            self.no_target_ticks += 1
            self._log.warning("no target received yet: no command", throttle_duration_sec=2.0)
            return
        reason = self._fill_obs(msg, runtime.model) or self._guard.check(self._obs)
        if reason is not None:
            # Neither L0 nor L1 sees this tick and nothing is recorded; the actuators get the safe command.
            self._bad_input(reason)
            self._cmd.data = self._guard.bad(reason).tolist()
            self._cmd_pub.publish(self._cmd)
            return
        out = runtime.step(self._obs)
        self._guard.good(out.action)
        self._cmd.data = out.action.tolist()
        self._cmd_pub.publish(self._cmd)
        if self.recorder is not None:
            stamp = msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec or time.time()
            self.recorder.record(self._obs, out, self._cost, stamp, self.model_version, runtime.l1.state)
        verdict = self._rollback.observe(self._cost)
        if verdict is not None:
            self._roll_back(verdict)
        self.ticks += 1
        self._tick_us[self._tick_n % self._tick_us.shape[0]] = (time.perf_counter() - start) * 1e6
        self._tick_n += 1

    def _fill_obs(self, msg: JointState, model: PolicyModel) -> str | None:
        """obs = concat(q_c, qd_c, q_ref, qd_ref, q_p, qd_p); the reason when the message is unusable."""
        n, p = model.act_dim, len(model.passive_joints)
        ctrl = self._joint_index.lookup(msg.name, model.controlled_joints)
        if ctrl is None:
            return f"joint_states: joint {self._joint_index.missing!r} missing"
        passive = None
        if p:
            passive = self._passive_index.lookup(msg.name, model.passive_joints)
            if passive is None:
                return f"joint_states: joint {self._passive_index.missing!r} missing"
        count = len(msg.name)
        if len(msg.position) != count or len(msg.velocity) != count:
            return f"joint_states: {count} names but {len(msg.position)} positions, {len(msg.velocity)} velocities"
        q = np.frombuffer(msg.position, np.float64) if len(msg.position) else np.zeros(0)
        qd = np.frombuffer(msg.velocity, np.float64) if len(msg.velocity) else np.zeros(0)
        obs = self._obs
        obs[0:n] = q[ctrl]
        obs[n : 2 * n] = qd[ctrl]
        obs[2 * n : 3 * n] = self._q_ref
        obs[3 * n : 4 * n] = self._qd_ref
        if p:
            obs[4 * n : 4 * n + p] = q[passive]
            obs[4 * n + p :] = qd[passive]
        return None

    def _bad_input(self, reason: str) -> None:
        self.bad_inputs += 1
        self.last_bad_input = reason
        self._log.error(f"bad input ({reason}): safe command, not learned from", throttle_duration_sec=2.0)

    def _on_target(self, msg: JointState) -> None:
        runtime = self.runtime
        if runtime is None:
            return
        idx = self._target_index.lookup(msg.name, runtime.model.controlled_joints)
        if idx is None:
            self._bad_input(f"target: joint {self._target_index.missing!r} missing")
            return
        count = len(msg.name)
        if len(msg.position) != count or len(msg.velocity) != count:
            self._bad_input(f"target: {count} names but {len(msg.position)} positions, {len(msg.velocity)} velocities")
            return
        self._q_ref[:] = np.frombuffer(msg.position, np.float64)[idx]
        self._qd_ref[:] = np.frombuffer(msg.velocity, np.float64)[idx]
        self._have_target = True

    def _on_cost(self, msg: Float64) -> None:
        if not math.isfinite(msg.data):
            self._bad_input(f"cost: {msg.data} is not finite (the previous cost is kept)")
            return
        self._cost = msg.data

    # ------------------------------------------------------------------ models

    def _verify_signed(self, path: str, data: bytes, version: int | None) -> None:
        """With a public key: the sidecar's signed manifest must name these bytes (and version)."""
        if self._public_key is not None:
            verify_stored(path, data, self._public_key, version=version)

    def _check_task(self, model: PolicyModel) -> None:
        if model.task != self.config.task:
            raise ModelRejected("task_mismatch", f"model task {model.task!r}, robot task {self.config.task!r}")

    def _activate(self, model: PolicyModel) -> None:
        """Make `model` the running one; on the tick thread only (or before spinning)."""
        tick = self.runtime.ticks if self.runtime is not None else 0
        previous = self.model_version
        if self.runtime is None:
            self.runtime = PolicyRuntime(model, self.runtime_config)
            self._obs = np.zeros(model.obs_dim, np.float32)
            self._q_ref = np.zeros(model.act_dim, np.float32)
            self._qd_ref = np.zeros(model.act_dim, np.float32)
            self._passive_index = _JointIndex()
            self._make_guard(model)
            ring = None
            if self._ring_path and self._spool is not None:
                # Once, at the first model: a tmpfs file of a few hundred KB, every page touched now.
                ring = RingFile.create(self._ring_path, self._spool.spool_id, self.config.robot_id, model.task,
                                       model.obs_dim, model.act_dim, self.config.recorder_capacity,
                                       self.runtime.l1.state.size)
            self.recorder = ExperienceRecorder(
                self.config.robot_id, model.task, model.obs_dim, model.act_dim, self.config.recorder_capacity, ring
            )
        else:
            previous_model = self._previous_model = self.runtime.model
            self.runtime.swap(model)
            if (model.controlled_joints, model.passive_joints) != (previous_model.controlled_joints,
                                                                   previous_model.passive_joints):
                self._make_guard(model)
            self.swaps += 1
            self._rollback.on_swap(previous, model.version)
        self.model_version = model.version
        self.model_sha256 = model.sha256
        self._newest_seen = max(self._newest_seen, model.version)
        self.swap_log.append(
            {"tick": tick, "wall_time": time.time(), "from_version": previous, "to_version": model.version}
        )
        if previous is None:
            self._log.info(f"model version {model.version} active (sha256 {model.sha256[:12]})")
        else:
            self._log.info(f"swapped model {previous} -> {model.version} at tick {tick}")

    def _make_guard(self, model: PolicyModel) -> None:
        cfg = self.config
        labels, limits = observation_layout(
            model.controlled_joints, model.passive_joints, cfg.max_abs_position, cfg.max_abs_velocity
        )
        old = self._guard
        self._guard = InputGuard(labels, limits, model.act_dim, cfg.input_hold_ticks)
        if old is not None:
            self._guard.good(old.safe_command())

    def _roll_back(self, verdict: Verdict) -> None:
        """Return to the previous model (tick thread), never adopt `verdict.version` again, report it."""
        model = self._previous_model
        if model is None or model.version != verdict.previous:
            return
        self._bad_versions.add(verdict.version)
        self.runtime.swap(model)
        self._previous_model = None
        self._rollback.on_swap(None, model.version)  # the old model is not judged again
        self.model_version = model.version
        self.model_sha256 = model.sha256
        self.rollbacks += 1
        tick = self.runtime.ticks
        event = {
            "robot_id": self.config.robot_id,
            "task": self.config.task,
            "version": verdict.version,
            "reverted_to": model.version,
            "reason": verdict.reason,
            "pre_cost": verdict.pre_cost,
            "post_cost": verdict.post_cost,
            "window_ticks": verdict.window_ticks,
            "tick": tick,
            "wall_time": time.time(),
        }
        self.rollback_log = [*self.rollback_log[-19:], event]
        self.swap_log.append({"tick": tick, "wall_time": event["wall_time"], "from_version": verdict.version,
                              "to_version": model.version, "rollback": True})
        self._log.warning(f"rolled back model {verdict.version} -> {model.version}: {verdict.reason}")
        # A local DDS write; weight_sync forwards it to the cloud off this thread.
        self._rollback_pub.publish(String(data=json.dumps(event, sort_keys=True)))

    def _swap_pending(self) -> None:
        with self._pending_lock:
            model, self._pending = self._pending, None
        if model is not None:
            self._activate(model)

    def _on_model_update(self, msg: String) -> None:
        self._updates.put(msg.data)

    def _load_loop(self) -> None:
        while not self._stop.is_set():
            try:
                raw = self._updates.get(timeout=0.2)
            except queue.Empty:
                continue
            self._handle_update(raw)

    def _handle_update(self, raw: str) -> None:
        """Verify one announced model (loader thread); on success it waits in the pending slot."""
        try:
            update = json.loads(raw)
            version = int(update["version"])
            path, sha256 = str(update["path"]), str(update["sha256"])
        except (ValueError, KeyError, TypeError) as err:
            self._reject(None, "bad_announcement", f"model_update {raw[:200]!r}: {err}")
            return
        task = update.get("task")
        if task and task != self.config.task:
            self._log.debug(f"model_update for task {task!r} ignored")
            return
        if version in self._bad_versions:
            self._log.info(f"model_update version {version} was rolled back here: ignored")
            return
        # A downgrade is the cloud taking a version back (rejected canary, admin rollback).
        if version <= self._newest_seen and not update.get("downgrade"):
            self._log.debug(f"model_update version {version} not newer than {self._newest_seen}: ignored")
            return
        try:
            with open(path, "rb") as f:
                data = f.read()
            self._verify_signed(path, data, version)
            model = load_model(data, sha256, version)
            self._check_task(model)
            running = self.runtime.model if self.runtime is not None else None
            if running is not None and (model.obs_dim, model.act_dim) != (running.obs_dim, running.act_dim):
                raise ModelRejected(
                    "dims_mismatch",
                    f"obs/act {model.obs_dim}/{model.act_dim}, running {running.obs_dim}/{running.act_dim}",
                )
        except OSError as err:
            self._reject(version, "unreadable", f"{path}: {err}")
            return
        except (ModelRejected, ManifestRejected) as err:
            self._reject(version, err.reason, str(err))
            return
        with self._pending_lock:
            self._pending = model
            self._newest_seen = max(self._newest_seen, version)
        self._log.info(f"model version {version} verified, swapping in on the next tick")

    def _reject(self, version, reason: str, message: str) -> None:
        self.rejected_models += 1
        self.reject_log = [*self.reject_log[-19:], {"version": version, "reason": reason, "wall_time": time.time()}]
        self._log.error(f"model {version} refused ({reason}): {message}; keeping version {self.model_version}")

    # ------------------------------------------------------------------ experience flush

    def _flush_loop(self) -> None:
        next_status = time.monotonic()
        while not self._stop.wait(self.config.flush_period_s):
            self.flush()
            if time.monotonic() >= next_status:
                next_status += self.config.status_period_s
                stats = self.stats()
                self._write_stats(stats)
                self._metrics.update(stats)
                self._last_stats = stats

    def flush(self) -> None:
        """Drain the recorder into the spool (flusher thread, or once at shutdown)."""
        if self._spool is None or self.recorder is None:
            return
        ring = self.recorder.ring
        try:
            if self._unsent is not None:
                self._unsent = dataclasses.replace(self._unsent, first_seq=self._spool.next_seq())
                self._spool.append(self._unsent, ring_mark=self._unsent_mark)
                self._unsent = None
            batch, through = self.recorder.drain_marked(self._spool.next_seq())
            if batch is not None:
                self._unsent, self._unsent_mark = batch, (ring.epoch, through) if ring is not None else None
                self._spool.append(batch, ring_mark=self._unsent_mark)
                self._unsent = None
            self._spool_stats = self._spool.stats()
        except Exception as err:  # sqlite errors and ValueError: keep the batch, report, retry
            self.spool_errors += 1
            self._log.error(f"spool append failed ({err}); retrying", throttle_duration_sec=5.0)

    # ------------------------------------------------------------------ status

    def tick_percentiles(self) -> dict:
        n = min(self._tick_n, self._tick_us.shape[0])
        if n == 0:
            return {"n": 0, "p50": None, "p90": None, "p99": None, "max": None}
        samples = self._tick_us[:n].copy()
        p50, p90, p99 = np.percentile(samples, [50, 90, 99])
        return {"n": int(n), "p50": float(p50), "p90": float(p90), "p99": float(p99), "max": float(samples.max())}

    def stats(self) -> dict:
        recorder = self.recorder.stats() if self.recorder is not None else {}
        guard, runtime = self._guard, self.runtime
        bad_ticks = guard.bad_ticks if guard is not None else 0
        previous_bad, self._bad_ticks_at_last_stats = self._bad_ticks_at_last_stats, bad_ticks
        return {
            "robot_id": self.config.robot_id,
            "task": self.config.task,
            "model_version": self.model_version,
            "model_sha256": getattr(self, "model_sha256", None),
            "ticks": self.ticks,
            "missed_ticks": self.missed_ticks,
            "missed_log": list(self.missed_log),
            "max_gap_ms": self.max_gap_s * 1e3,
            "bad_inputs": self.bad_inputs,
            "bad_input_ticks": bad_ticks,
            "bad_input_ticks_recent": bad_ticks - previous_bad,
            "bad_input_streak": guard.streak if guard is not None else 0,
            "bad_input_longest_streak": guard.longest_streak if guard is not None else 0,
            "holding_zero_effort": bool(guard is not None and guard.holding_zero),
            "last_bad_input": self.last_bad_input,
            "last_bad_tick": guard.last_reason if guard is not None else "",
            "no_target_ticks": self.no_target_ticks,
            "swaps": self.swaps,
            "swap_log": list(self.swap_log),
            "rejected_models": self.rejected_models,
            "reject_log": list(self.reject_log),
            "rollbacks": self.rollbacks,
            "rollback_log": list(self.rollback_log),
            "bad_versions": sorted(self._bad_versions),
            "recorder": recorder,
            "ring": {"path": self._ring_path, **self.ring_recovery},
            "recorder_overflow": recorder.get("overflow", 0),
            "spool": dict(self._spool_stats),
            "spool_depth": self._spool_stats.get("depth_transitions", 0),
            "spool_errors": self.spool_errors,
            "tick_us": self.tick_percentiles(),
            "l0_step_scale": self.runtime_config.l0_step_scale,
            "l0_fast_state_norm": float(np.linalg.norm(runtime.fast_state)) if runtime is not None else None,
            "control_rate_hz": self.config.control_rate_hz,
            "supervision": read_supervision(self.config.run_dir),
            "wall_time": time.time(),
        }

    def publish_status(self) -> None:
        """Publish the newest stats computed by the background thread (timer callback)."""
        stats = self._last_stats
        if stats is None:
            return
        tick = stats["tick_us"]
        values = {
            "model_version": stats["model_version"],
            "ticks": stats["ticks"],
            "missed_ticks": stats["missed_ticks"],
            "swaps": stats["swaps"],
            "rollbacks": stats["rollbacks"],
            "rejected_models": stats["rejected_models"],
            "spool_depth": stats["spool_depth"],
            "recorder_overflow": stats["recorder_overflow"],
            "tick_p50_us": tick["p50"],
            "tick_p99_us": tick["p99"],
            "bad_inputs": stats["bad_inputs"],
            "bad_input_ticks": stats["bad_input_ticks"],
            "bad_input_ticks_recent": stats["bad_input_ticks_recent"],
            "bad_input_streak": stats["bad_input_streak"],
            "last_bad_input": stats["last_bad_input"],
            "last_bad_tick": stats["last_bad_tick"],
        }
        supervision = stats.get("supervision") or {}
        down = supervision.get("down") or []
        values["node_restarts"] = supervision.get("restarts", 0)  # by the supervisor, all nodes of this robot
        values["nodes_down"] = ",".join(down)
        level, message = status_level(stats)
        if down:
            level = max(level, DiagnosticStatus.WARN)
            message += f"; down, restarting: {', '.join(down)}"
        status = DiagnosticStatus(
            level=level,
            name=self.get_fully_qualified_name(),
            hardware_id=self.config.robot_id,
            message=message,
            values=[
                KeyValue(key=k, value="" if v is None else (f"{v:.1f}" if isinstance(v, float) else str(v)))
                for k, v in values.items()
            ],
        )
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._status_pub.publish(array)
        self._diagnostics.publish(array)

    def _write_stats(self, stats: dict) -> None:
        if not self.config.run_dir:
            return
        try:
            write_json_atomic(os.path.join(self.config.run_dir, "policy_stats.json"), stats)
        except OSError as err:
            self._log.error(f"writing policy_stats.json failed: {err}", throttle_duration_sec=10.0)

    # ------------------------------------------------------------------ shutdown


def status_level(stats: dict) -> tuple[bytes, str]:
    """(DiagnosticStatus level, message) of the policy/status topic, from one stats snapshot.

    ERROR while a bad-input streak outlasts input_hold_ticks (the actuators get zero effort),
    WARN when bad input arrived since the previous status or no model is loaded yet, else OK.
    """
    if stats["holding_zero_effort"]:
        return DiagnosticStatus.ERROR, (
            f"bad input for {stats['bad_input_streak']} ticks, zero effort: {stats['last_bad_tick']}"
        )
    if stats["bad_input_ticks_recent"] or stats["bad_input_streak"]:
        return DiagnosticStatus.WARN, (
            f"bad input on {stats['bad_input_ticks_recent']} ticks, last good command held: {stats['last_bad_tick']}"
        )
    if stats["model_version"] is None:
        return DiagnosticStatus.WARN, "waiting for a model"
    return DiagnosticStatus.OK, f"model {stats['model_version']}"


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(args=None) -> None:
    # Our own SIGINT/SIGTERM handling: the executor stops and finishes its in-flight tick while the
    # context is still valid; then the recorder is flushed into the spool and rclpy shuts down.
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    node = None
    executor = None
    code = 0
    try:
        node = PolicyNode()
        executor = make_executor(node.executor_kind)
        node.start_alone()  # with autostart (the default); else it waits for `configure`
        freeze_heap()
        executor.add_node(node)
        spin(executor)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (ValueError, OSError) as err:  # ConfigError among them
        if node is not None and node.stage != "unconfigured":
            raise
        print(f"policy_node: error: {err}", file=sys.stderr, flush=True)
        code = 2
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if executor is not None:
            executor.shutdown(timeout_sec=2.0)
        if node is not None:
            node.teardown()
            node.destroy_node()
        rclpy.try_shutdown()
    if code:
        sys.exit(code)


if __name__ == "__main__":
    main()
