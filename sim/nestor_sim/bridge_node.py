"""ROS node ``sim_bridge``: runs a ``TrackingEnv`` in wall-clock time behind ROS topics.

Every control tick (1 / control_rate_hz of wall time) it applies the newest effort command,
advances the env one tick and publishes joint states, the target and the cost; the camera image
at the camera rate; each dynamics shift once on ``sim/events``. All physics is ``TrackingEnv``.

    ros2 run nestor_sim sim_bridge --ros-args -p task_file:=config/tasks/crane.yaml \
        -p shifts:="['payload:2.0@20#pole']" -r __ns:=/robot0
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
import typing
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from nestor_core import diagnostics, qos, topics
from nestor_core.diagnostics import Diagnostics
from nestor_core.executors import check_kind, make_executor
from nestor_core.lifecycle import ManagedNode, TransitionRefused
from nestor_core.params import ConfigError, declare_parameters, refuse_undeclared
from nestor_core.realtime import freeze_heap, set_sched_priority
from rclpy.executors import ExternalShutdownException
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64, Float64MultiArray, String

from nestor_sim.task import load_task, with_shifts
from nestor_sim.tracking_env import TrackingEnv


@dataclasses.dataclass
class BridgeConfig:
    """Parameters of the sim bridge (each is a ROS parameter of the same name).

    Attributes:
        task_file: Path of the task YAML (required).
        robot_id: Id of this robot, written into every sim event.
        seed: Seed passed to ``TrackingEnv.reset``.
        shifts: Shift schedule override, e.g. ["payload:4.0@20"]; empty keeps the task's.
        wait_for_command: Hold the initial pose (physics paused) until the first command
            arrives, so the arm does not fall while the policy loads. State is still published.
        run_dir: If set, shift events are appended as JSON lines to <run_dir>/events.jsonl.
        publish_target: Publish the reference on ``target`` (false when perception does).
        camera_enabled: Publish camera images (only if the task's camera is enabled too).
        sched_priority: SCHED_FIFO priority of the node's threads (1-99; 0 = default). Without
            the privilege the node logs it and runs at default priority.
        executor: "events" (rclpy's EventsExecutor) or "single" (SingleThreadedExecutor).
    """

    task_file: str = ""
    robot_id: str = "robot0"
    seed: int = 0
    shifts: list[str] = dataclasses.field(default_factory=list)
    wait_for_command: bool = True
    run_dir: str = ""
    publish_target: bool = True
    camera_enabled: bool = True
    sched_priority: int = 0
    executor: str = "events"

    RANGES: typing.ClassVar[dict] = {"seed": (0, 2**32 - 1), "sched_priority": (0, 99)}

    def validate(self) -> BridgeConfig:
        if not self.task_file:
            raise ValueError("task_file: required parameter is empty")
        if not self.robot_id:
            raise ValueError("robot_id: must not be empty")
        check_kind(self.executor)
        return self


class SimBridge(ManagedNode):
    """Wall-clock driver of one ``TrackingEnv``; callbacks only convert messages.

    A lifecycle node: configure loads the task and creates the physics client (``TrackingEnv``,
    reset and holding its initial pose), the publishers and the command subscription; activate
    starts the physics clock; deactivate stops it (the env keeps its state; the next activate
    waits for a fresh command when wait_for_command is set); cleanup closes the physics client.
    """

    def __init__(self, **kwargs):
        super().__init__("sim_bridge", **kwargs)
        self.env = None  # a node that fails half-way still closes cleanly
        self.binding = declare_parameters(self, BridgeConfig)
        refuse_undeclared(self)
        # Read when the process starts: the executor and the scheduling class are the process's.
        try:
            self.executor_kind = check_kind(str(self.get_parameter("executor").value))
        except ValueError as err:
            raise ConfigError(f"parameter {err}") from None
        self.get_logger().info(set_sched_priority(int(self.get_parameter("sched_priority").value)))
        self.config: BridgeConfig | None = None
        self._lifecycle_pubs: list = []
        self._entities: list = []
        self._diagnostics = None
        self._active = False

    def configure(self) -> None:
        self.config = self.binding.read()
        self.config.shifts = [s for s in self.config.shifts if s.strip()]
        task = load_task(self.config.task_file)
        if self.config.shifts:
            task = with_shifts(task, self.config.shifts)
        self.env = TrackingEnv(task)
        self.task = task
        self._camera = self.config.camera_enabled and task.camera.enabled
        self._camera_every = max(1, round(task.control_rate_hz / task.camera.rate_hz))
        self._events_file = None
        if self.config.run_dir:
            Path(self.config.run_dir).mkdir(parents=True, exist_ok=True)
            self._events_file = Path(self.config.run_dir) / "events.jsonl"

        self._command: np.ndarray | None = None
        self._pub_state = self.create_lifecycle_publisher(JointState, topics.JOINT_STATES, qos.SENSOR_QOS)
        self._pub_target = self.create_lifecycle_publisher(JointState, topics.TARGET, qos.SENSOR_QOS)
        self._pub_cost = self.create_lifecycle_publisher(Float64, topics.COST, qos.COMMAND_QOS)
        self._pub_image = self.create_lifecycle_publisher(Image, topics.IMAGE, qos.IMAGE_QOS)
        # Shift events are latched (transient local): the ones at reset are published now.
        self._pub_event = self.create_publisher(String, topics.SIM_EVENTS, qos.EVENT_QOS)
        sub = self.create_subscription(Float64MultiArray, topics.COMMANDS, self._on_command, qos.COMMAND_QOS)
        self._lifecycle_pubs = [self._pub_state, self._pub_target, self._pub_cost, self._pub_image]
        self._entities = [self._pub_event, sub]
        self._rejected_commands = self._rejected_reported = 0
        self._diagnostics = Diagnostics(self, self.config.robot_id, qos.STATUS_QOS, self._diagnostic_status)

        _, info = self.env.reset(seed=self.config.seed)
        self._publish_events(info["shift_events"])
        self.get_logger().info(
            f"task {task.name}: {task.act_dim} controlled joints at {task.control_rate_hz} Hz, "
            f"shifts {[s.to_dict() for s in task.shifts]}"
        )

    def activate(self) -> None:
        self._active = True

    def deactivate(self) -> None:
        self._active = False
        self._command = None  # a later activate waits for a fresh command (wait_for_command)

    def cleanup(self) -> None:
        if self._diagnostics is not None:
            self._diagnostics.destroy()
            self._diagnostics = None
        for publisher in self._lifecycle_pubs:
            self.destroy_lifecycle_publisher(publisher)
        for entity in self._entities:
            (self.destroy_subscription if entity in self.subscriptions else self.destroy_publisher)(entity)
        self._lifecycle_pubs, self._entities = [], []
        if self.env is not None:
            self.env.close()
            self.env = None

    def _on_command(self, msg: Float64MultiArray) -> None:
        if len(msg.data) != self.task.act_dim:
            self._rejected_commands += 1
            self.get_logger().warn(
                f"command rejected: expected {self.task.act_dim} efforts, got {len(msg.data)}",
                throttle_duration_sec=2.0,
            )
            return
        self._command = np.asarray(msg.data, dtype=np.float64)

    def _diagnostic_status(self) -> tuple:
        """(level, message, values) for /diagnostics: sim time, the shifts in effect, commands."""
        values = {
            "task": self.task.name,
            "tick": self.env.tick,
            "sim_time_s": self.env.t,
            "shifts_active": json.dumps(self.env.active_shifts()),
            "rejected_commands": self._rejected_commands,
        }
        if self._command is None:
            return diagnostics.OK, "waiting for the first command", values
        if self._rejected_commands > self._rejected_reported:  # WARN for one period after a rejection
            self._rejected_reported = self._rejected_commands
            return diagnostics.WARN, "malformed commands rejected", values
        return diagnostics.OK, "running", values

    def run(self, executor) -> None:
        """The physics clock, in the calling thread, until the context shuts down.

        Absolute deadlines (no drift) while the node is active; unconfigured or inactive, the
        thread only spins the executor (the transitions arrive there). Between two ticks the same
        thread waits in the executor (`spin_once` up to the next deadline), which runs the
        command callbacks. One Python thread does everything. With a separate physics thread next
        to the executor thread, the physics thread now and then woke 3-7 ms late while not
        runnable (schedstat run-queue wait ~0, and a bare loop in another process saw no stall):
        most likely waiting for the GIL.
        """
        deadline = None
        while self.context.ok():
            if not self._active:
                deadline = None
                executor.spin_once(timeout_sec=0.05)
                continue
            if deadline is None:
                deadline = time.monotonic()
            try:
                self._on_tick()
            except Exception:  # a publish after the context shut down (Ctrl-C): stop quietly
                if not self.context.ok():
                    return
                raise
            deadline += self.task.dt
            delay = deadline - time.monotonic()
            if delay <= 0:
                deadline = time.monotonic()  # late ticks are not made up: a real clock moves on
            while delay > 0 and self.context.ok() and self._active:
                executor.spin_once(timeout_sec=delay)
                delay = deadline - time.monotonic()

    def _on_tick(self) -> None:
        stamp = self.get_clock().now().to_msg()
        if self._command is None and self.config.wait_for_command:
            self._publish_state(stamp)
            return
        if self._command is not None:
            self.env.apply_effort(self._command)
        events = self.env.advance()
        # The cost first and the joint states last: the policy's tick runs on the joint states,
        # so by then the cost and target of the same physics tick are already delivered.
        self._pub_cost.publish(Float64(data=self.env.cost()))
        self._publish_state(stamp)
        self._publish_events(events)
        if self._camera and self.env.tick % self._camera_every == 0:
            self._publish_image(stamp)

    def _publish_state(self, stamp) -> None:
        if self.config.publish_target:
            q_ref, qd_ref = self.env.reference()
            target = JointState(name=list(self.task.controlled_joints))
            target.header.stamp = stamp
            target.position, target.velocity = q_ref.tolist(), qd_ref.tolist()
            self._pub_target.publish(target)
        names, position, velocity, effort = self.env.joint_state()
        msg = JointState(name=names)
        msg.header.stamp = stamp
        msg.position, msg.velocity, msg.effort = position.tolist(), velocity.tolist(), effort.tolist()
        self._pub_state.publish(msg)

    def _publish_image(self, stamp) -> None:
        rgb = self.env.render_camera()
        msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding="rgb8")
        msg.header.stamp = stamp
        msg.step, msg.data = rgb.shape[1] * 3, rgb.tobytes()
        self._pub_image.publish(msg)

    def _publish_events(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            # stamp: the ROS clock of the tick, the same clock as the JointState headers (and so
            # as the experience stamps), so reports can place the shift on the robot's timeline.
            now = self.get_clock().now().nanoseconds * 1e-9
            record = {"robot_id": self.config.robot_id, **event, "stamp": now}
            line = json.dumps(record)
            if event.get("refused"):
                self.get_logger().error(f"shift NOT applied: {line}")
                continue
            self._pub_event.publish(String(data=line))
            self.get_logger().info(f"shift applied: {line}")
            if self._events_file is not None:
                with self._events_file.open("a") as f:
                    f.write(line + "\n")


def main(args=None):
    """Runs the sim bridge until shutdown; accepts ``--ros-args`` (params file, remaps)."""
    try:
        with rclpy.init(args=args):
            try:
                node = SimBridge()
                executor = make_executor(node.executor_kind)
                node.start_alone()  # with autostart (the default); else it waits for `configure`
            except (ValueError, OSError, TransitionRefused) as err:  # a bad parameter, task file or shift
                print(f"sim_bridge: error: {err}", file=sys.stderr, flush=True)
                sys.exit(2)
            executor.add_node(node)
            freeze_heap()
            try:
                node.run(executor)
            finally:
                executor.shutdown(timeout_sec=2.0)
                node.teardown()
                node.destroy_node()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass


if __name__ == "__main__":
    main()
