"""The policy node: runs the ONNX policy on every joint-state message and records experience.

Wiring and short callbacks over plain, tested classes: `ObservationBuilder` (observation.py),
`ModelLoader` (model_loader.py: announcement rules, verification, pending slot), `TickStats`
(tick_stats.py), `InputGuard`, `RollbackMonitor`, `ExperienceSink` (spool and ring), and
policy_status.py (the stats and the DiagnosticStatus); its process (signals, executor, shutdown order) is
policy_process.py. Parameters: `PolicyNodeConfig`.
A lifecycle node (nestor_core.lifecycle): configure opens the spool and loads the initial model,
activate starts the tick and the threads, deactivate stops them and flushes, cleanup releases.

Threads: the tick (joint_states callback; target, cost and model_update callbacks in the same
executor) builds the observation, swaps in a pending model, steps the runtime, publishes the
command and records: no disk or network I/O, no model loading. The model loader thread verifies
announcements (`ModelLoader.offer`). The flusher thread drains the recorder into the spool every
flush_period_s and, every status_period_s, writes `<run_dir>/policy_stats.json`; a timer publishes
the newest stats on topics.POLICY_STATUS between two ticks.
"""

import collections
import math
import os
import queue
import threading
import time

from diagnostic_msgs.msg import DiagnosticArray
from nestor_core import topics
from nestor_core.announcements import RollbackReport
from nestor_core.diagnostics import Diagnostics
from nestor_core.executors import check_kind
from nestor_core.lifecycle import ManagedNode
from nestor_core.manifest import ManifestRejected, load_public_key
from nestor_core.params import ConfigError, declare_parameters, refuse_undeclared
from nestor_core.policy_model import ModelRejected, PolicyModel
from nestor_core.policy_runtime import PolicyRuntime, RuntimeConfig
from nestor_core.qos import COMMAND_QOS, EVENT_QOS, SENSOR_QOS, STATUS_QOS
from nestor_core.realtime import set_sched_priority
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64, Float64MultiArray, String

from nestor_robot.experience_sink import ExperienceSink
from nestor_robot.input_guard import InputGuard, observation_layout
from nestor_robot.model_loader import ModelLoader
from nestor_robot.observation import ObservationBuilder
from nestor_robot.policy_config import RUNTIME_DYNAMIC, RUNTIME_RANGES, PolicyNodeConfig
from nestor_robot.policy_process import run_policy_process
from nestor_robot.policy_status import collect_stats, policy_status, write_stats
from nestor_robot.robot_metrics import PolicyMetrics
from nestor_robot.rollback import RollbackMonitor, Verdict
from nestor_robot.tick_stats import TickStats

SWAP_LOG_LEN = 200


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
        self.recorder = self.sink = self._metrics_http = self._status_timer = self._diagnostics = None
        self._pubs: list = []
        self._subs: list = []
        self._active = False

    # ------------------------------------------------------------------ lifecycle

    def configure(self) -> None:
        """Read the parameters, open the spool and load the initial model.

        Opening the spool commits a crashed predecessor's ring; the model is verified; then the
        publishers, subscriptions and the metrics server are created.
        """
        self.config = cfg = self._bindings[0].read()
        self.runtime_config = self._bindings[1].read()
        self.runtime = self.recorder = self.guard = self._previous_model = self._last_stats = None
        self.model_version = self.model_sha256 = None
        self.ticks = self.bad_inputs = self.no_target_ticks = self.swaps = self.rollbacks = 0
        self.bad_ticks_at_last_stats, self.last_bad_input = 0, ""
        self.swap_log: collections.deque[dict] = collections.deque(maxlen=SWAP_LOG_LEN)  # newest; `swaps` counts all
        self.rollback_log: list[dict] = []  # newest 20
        self.tick_stats = TickStats(cfg.control_rate_hz, cfg.tick_samples)
        self._rollback = RollbackMonitor(cfg.rollback_window_ticks, cfg.rollback_margin)
        self._cost, self._cmd = 0.0, Float64MultiArray()
        self._updates: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        public_key = None
        if cfg.public_key_path:
            try:
                public_key = load_public_key(cfg.public_key_path)
            except ValueError as err:
                raise ConfigError(f"parameter public_key_path: {err}") from None
        self.loader = ModelLoader(cfg.task, public_key, self._log)
        if cfg.spool_path:
            self.sink = ExperienceSink(
                cfg.spool_path, cfg.robot_id, cfg.spool_capacity, cfg.spool_full_policy, cfg.ring_dir, self._log
            )
        else:
            self._log.warning("spool_path is empty: experience is not recorded")
        if cfg.initial_model:
            try:
                self._activate(self.loader.load_initial(cfg.initial_model, cfg.initial_model_version))
            except (ModelRejected, ManifestRejected) as err:
                raise ConfigError(f"parameter initial_model: {cfg.initial_model}: {err}") from None
        if cfg.run_dir:
            os.makedirs(cfg.run_dir, exist_ok=True)
        self._cmd_pub = self.create_lifecycle_publisher(Float64MultiArray, topics.COMMANDS, COMMAND_QOS)
        # Reliable and latched: a weight_sync that (re)starts later still forwards the report.
        self._rollback_pub = self.create_lifecycle_publisher(String, topics.POLICY_ROLLBACK, EVENT_QOS)
        self._status_pub = self.create_lifecycle_publisher(DiagnosticArray, topics.POLICY_STATUS, STATUS_QOS)
        self._pubs = [self._cmd_pub, self._rollback_pub, self._status_pub]
        self._metrics = PolicyMetrics()
        self._metrics_http = self._metrics.serve(cfg.metrics_port)
        self._diagnostics = Diagnostics(self, cfg.robot_id, STATUS_QOS)
        self._subs = [
            self.create_subscription(JointState, topics.JOINT_STATES, self._on_joint_states, SENSOR_QOS),
            self.create_subscription(JointState, topics.TARGET, self._on_target, SENSOR_QOS),
            self.create_subscription(Float64, topics.COST, self._on_cost, COMMAND_QOS),
            # Announcements that arrive while inactive wait in the queue for the loader.
            self.create_subscription(String, topics.MODEL_UPDATE, self._on_model_update, EVENT_QOS),
        ]

    def activate(self) -> None:
        """Start the tick, the model loader, the flusher and the status timer."""
        cfg = self.config
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._load_loop, name="model_loader", daemon=True),
            threading.Thread(target=self._flush_loop, name="spool_flusher", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        self._status_timer = self.create_timer(cfg.status_period_s, self.publish_status)
        self.tick_stats.pause()  # the pause since the last activation is no missed tick
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
        for thread in self._threads:
            thread.join(timeout=5.0)
        self.flush()
        self._write_stats(self.stats())

    def cleanup(self) -> None:
        """Release the spool, the ring (when everything reached the spool), the model and the metrics server."""
        if self._metrics_http is not None:
            self._metrics_http[0].shutdown()
            self._metrics_http[0].server_close()
            self._metrics_http = None
        if self.sink is not None:
            self.sink.close(self.recorder)
            self.sink = None
        for sub in self._subs:
            self.destroy_subscription(sub)
        for pub in self._pubs:
            self.destroy_lifecycle_publisher(pub)
        self._subs, self._pubs = [], []
        if self._diagnostics is not None:
            self._diagnostics.destroy()
            self._diagnostics = None
        self.runtime = self.recorder = self._previous_model = None
        self.model_version = None

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
        if self.loader.pending is not None:
            self._activate(self.loader.take())
        runtime = self.runtime
        if runtime is None:
            return
        stamp = msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec
        self.tick_stats.started(start, stamp, self.ticks)
        if not self._observation.have_target:
            self.no_target_ticks += 1
            self._log.warning("no target received yet: no command", throttle_duration_sec=2.0)
            return
        model = runtime.model
        obs = self._observation.obs
        reason = self._observation.fill(
            msg.name, msg.position, msg.velocity, model.controlled_joints, model.passive_joints
        ) or self.guard.check(obs)
        if reason is not None:
            # Neither L0 nor L1 sees this tick and nothing is recorded; the actuators get the safe command.
            self._bad_input(reason)
            self._cmd.data = self.guard.bad(reason).tolist()
            self._cmd_pub.publish(self._cmd)
            return
        out = runtime.step(obs)
        self.guard.good(out.action)
        self._cmd.data = out.action.tolist()
        self._cmd_pub.publish(self._cmd)
        if self.recorder is not None:
            self.recorder.record(obs, out, self._cost, stamp or time.time(), self.model_version, runtime.l1.state)
        verdict = self._rollback.observe(self._cost)
        if verdict is not None:
            self._roll_back(verdict)
        self.ticks += 1
        self.tick_stats.computed(time.perf_counter() - start)

    def _bad_input(self, reason: str) -> None:
        self.bad_inputs += 1
        self.last_bad_input = reason
        self._log.error(f"bad input ({reason}): safe command, not learned from", throttle_duration_sec=2.0)

    def _on_target(self, msg: JointState) -> None:
        if self.runtime is not None:
            reason = self._observation.set_target(
                msg.name, msg.position, msg.velocity, self.runtime.model.controlled_joints
            )
            if reason is not None:
                self._bad_input(reason)

    def _on_cost(self, msg: Float64) -> None:
        if not math.isfinite(msg.data):
            self._bad_input(f"cost: {msg.data} is not finite (the previous cost is kept)")
            return
        self._cost = msg.data

    # ------------------------------------------------------------------ models

    def _activate(self, model: PolicyModel) -> None:
        """Make `model` the running one; on the tick thread only (or in configure)."""
        tick = self.runtime.ticks if self.runtime is not None else 0
        previous = self.model_version
        if self.runtime is None:
            cfg = self.config
            self.runtime = PolicyRuntime(model, self.runtime_config)
            self._observation = ObservationBuilder(model.obs_dim, model.act_dim)
            self._make_guard(model)
            if self.sink is not None:
                self.recorder = self.sink.recorder(
                    model.task, model.obs_dim, model.act_dim, cfg.recorder_capacity, self.runtime.l1.state.size
                )
        else:
            previous_model = self._previous_model = self.runtime.model
            self.runtime.swap(model)
            if (model.controlled_joints, model.passive_joints) != (
                previous_model.controlled_joints,
                previous_model.passive_joints,
            ):
                self._make_guard(model)
            self.swaps += 1
            self._rollback.on_swap(previous, model.version)
        self.model_version, self.model_sha256 = model.version, model.sha256
        self.loader.adopted(model.version)
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
        old = self.guard
        self.guard = InputGuard(labels, limits, model.act_dim, cfg.input_hold_ticks)
        if old is not None:
            self.guard.good(old.safe_command())

    def _roll_back(self, verdict: Verdict) -> None:
        """Return to the previous model (tick thread), never adopt `verdict.version` again, report it."""
        model = self._previous_model
        if model is None or model.version != verdict.previous:
            return
        self.loader.mark_bad(verdict.version)
        self.runtime.swap(model)
        self._previous_model = None
        self._rollback.on_swap(None, model.version)  # the old model is not judged again
        self.model_version, self.model_sha256 = model.version, model.sha256
        self.rollbacks += 1
        report = RollbackReport(
            robot_id=self.config.robot_id,
            task=self.config.task,
            version=verdict.version,
            reverted_to=model.version,
            reason=verdict.reason,
            pre_cost=verdict.pre_cost,
            post_cost=verdict.post_cost,
            window_ticks=verdict.window_ticks,
            tick=self.runtime.ticks,
            wall_time=time.time(),
        )
        self.rollback_log = [*self.rollback_log[-19:], report.to_dict()]
        self.swap_log.append(
            {
                "tick": report.tick,
                "wall_time": report.wall_time,
                "from_version": verdict.version,
                "to_version": model.version,
                "rollback": True,
            }
        )
        self._log.warning(f"rolled back model {verdict.version} -> {model.version}: {verdict.reason}")
        # A local DDS write; weight_sync forwards it to the cloud off this thread.
        self._rollback_pub.publish(String(data=report.encode()))

    def _on_model_update(self, msg: String) -> None:
        self._updates.put(msg.data)  # verified on the loader thread

    def _load_loop(self) -> None:
        while not self._stop.is_set():
            try:
                raw = self._updates.get(timeout=0.2)
            except queue.Empty:
                continue
            self.loader.offer(raw, self.runtime.model if self.runtime is not None else None)

    # ------------------------------------------------------------------ experience flush and status

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
        """Drain the recorder into the spool (flusher thread, or once at deactivate)."""
        if self.sink is not None:
            self.sink.flush(self.recorder)

    def stats(self) -> dict:
        return collect_stats(self)  # policy_stats.json, policy/status, /metrics; the stats thread

    def publish_status(self) -> None:
        """Publish the newest stats computed by the background thread (timer callback)."""
        if self._last_stats is not None:
            array = DiagnosticArray(
                status=[policy_status(self._last_stats, self.get_fully_qualified_name(), self.config.robot_id)]
            )
            array.header.stamp = self.get_clock().now().to_msg()
            self._status_pub.publish(array)
            self._diagnostics.publish(array)

    def _write_stats(self, stats: dict) -> None:
        write_stats(self.config.run_dir, stats, self._log)


def main(args=None) -> None:
    run_policy_process(PolicyNode, args)


if __name__ == "__main__":
    main()
