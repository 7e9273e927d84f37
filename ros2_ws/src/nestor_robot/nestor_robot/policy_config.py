"""The policy node's parameters: `PolicyNodeConfig`, plus the ROS ranges of nestor_core's RuntimeConfig."""

import dataclasses
import os
import typing

from nestor_core.executors import check_kind
from nestor_core.params import INF
from nestor_core.validation import at_least, non_empty, positive, require, tcp_port

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
        non_empty(self, "robot_id", "task")
        at_least(self, 1, "spool_capacity")
        policy = self.spool_full_policy
        require(policy in SPOOL_FULL_POLICIES, "spool_full_policy", f"{policy!r} not in {SPOOL_FULL_POLICIES}")
        at_least(self, 1, "recorder_capacity")
        positive(self, "flush_period_s", "control_rate_hz", "status_period_s")
        check_kind(self.executor)
        at_least(self, 1, "tick_samples")
        model, ring, key = self.initial_model, self.ring_dir, self.public_key_path
        require(not model or os.path.isfile(model), "initial_model", f"no such file {model!r}")
        require(not (ring and self.spool_path) or os.path.isdir(ring), "ring_dir", f"no such directory {ring!r}")
        require(not key or os.path.isfile(key), "public_key_path", f"no such file {key!r}")
        at_least(self, 0, "rollback_window_ticks", "rollback_margin")
        tcp_port(self, "metrics_port")
        at_least(self, 0, "input_hold_ticks")
        positive(self, "max_abs_position", "max_abs_velocity")
        return self
