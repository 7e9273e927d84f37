"""The bringup's side of the lifecycle nodes: configure + activate after start, deactivate + cleanup at stop.

`nestor robot`, `nestor fleet` and `nestor demo` start every node as its own process
(nestor_bringup.process_group). The lifecycle nodes (nodes.LIFECYCLE_NODES, started with
`autostart:=false`) then wait, unconfigured, for their transitions. `LifecycleManager` sends them
over the nodes' standard lifecycle services (lifecycle_msgs ChangeState / GetState), the same
services `ros2 lifecycle set` and launch_ros use, from one plain rclpy node in the CLI's process:

* after a node process starts (and again after every respawn): configure, then activate, in a
  thread of its own per node, so the robots come up side by side and the supervisor keeps polling;
* before a node gets SIGINT at stop: deactivate (the policy flushes its recorder into the spool,
  the uplink drains the spool), then cleanup.

A refused configure leaves the node unconfigured; the reason is the node's own log line
(`configure refused: parameter ...`), which the supervisor reports when it stops the robot.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

# Seconds a started process gets to bring up its lifecycle services (imports, DDS discovery).
SERVICE_WAIT_S = 60.0
REFUSAL_MARK = "configure refused: "


def _state_or_none(client) -> str | None:
    """The node's lifecycle state, or None when its services do not answer within 2 s."""
    from nestor_core.lifecycle import TransitionRefused

    try:
        return client.state(timeout_s=2.0)
    except TransitionRefused:
        return None


def refusal_from_log(log_path: Path) -> str:
    """The reason of the newest `configure refused: ...` line in a node's log ("" when none)."""
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        if REFUSAL_MARK in line:
            return line.split(REFUSAL_MARK, 1)[1].strip()
    return ""


class LifecycleManager:
    """One rclpy node (own context, the group's domain id) and an executor thread, in the CLI process.

    Args:
        env: the environment the node processes get (its ROS_DOMAIN_ID is used here too).
    """

    def __init__(self, env: dict):
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.signals import SignalHandlerOptions

        # Discovery as the nodes': on loopback unless the environment says otherwise.
        os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", env.get("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST"))
        domain = env.get("ROS_DOMAIN_ID", "").strip()
        self.context = Context()
        # No rclpy signal handlers: the CLI's own (supervisor.StopSignals) decide how a run stops.
        rclpy.init(
            context=self.context,
            domain_id=int(domain) if domain.isdigit() else None,
            signal_handler_options=SignalHandlerOptions.NO,
        )
        self.node = rclpy.create_node(
            f"nestor_bringup_{os.getpid()}", context=self.context, start_parameter_services=False, enable_rosout=False
        )
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._clients: dict = {}
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._spin, name="lifecycle", daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.1)
            except Exception:  # noqa: BLE001 - the context shut down under us (close())
                if not self.context.ok():
                    return
                raise

    def client(self, full_name: str):
        """The LifecycleClient of the node named `full_name` (one per name, reused after respawns)."""
        from nestor_core.lifecycle import LifecycleClient

        with self._lock:
            if full_name not in self._clients:
                self._clients[full_name] = LifecycleClient(self.node, full_name)
            return self._clients[full_name]

    def bring_up(self, full_name: str, log_path: Path, timeout_s: float, cancelled) -> str:
        """Wait for the node's services, configure, activate; "" on success, else the reason.

        `cancelled()` true (the process died, or the run stops) ends the wait quietly ("").
        """
        from nestor_core.lifecycle import TransitionRefused

        client = self.client(full_name)
        deadline = time.monotonic() + SERVICE_WAIT_S
        if not client.wait(SERVICE_WAIT_S, cancelled):
            return "" if cancelled() else f"no lifecycle services after {SERVICE_WAIT_S:g} s"
        # After a respawn the dead process's services can linger in the graph until their lease
        # ends: a get_state that is answered comes from the live process.
        state = None
        while state is None:
            if cancelled():
                return ""
            state = _state_or_none(client)
            if state is None and time.monotonic() >= deadline:
                return f"no answer from its lifecycle services after {SERVICE_WAIT_S:g} s"
        for transition, goal in (("configure", "inactive"), ("activate", "active")):
            if cancelled():
                return ""
            if state == goal or (goal == "inactive" and state == "active"):
                continue
            try:
                client.change(transition, timeout_s)
                state = goal
            except TransitionRefused as err:
                if cancelled():
                    return ""
                state = _state_or_none(client)
                if state == goal:
                    continue  # answered late, but done
                time.sleep(0.2)  # the node's log line may trail its answer
                reason = refusal_from_log(log_path) if transition == "configure" else ""
                return f"{transition} refused: {reason}" if reason else str(err)
        return ""

    def bring_down(self, full_name: str, timeout_s: float, hurry: threading.Event) -> None:
        """Deactivate (when active) and clean up (when inactive); best effort, bounded by timeout_s."""
        from nestor_core.lifecycle import TransitionRefused

        client = self.client(full_name)
        deadline = time.monotonic() + timeout_s
        try:
            state = client.state(timeout_s=min(2.0, timeout_s))
            for transition, when in (("deactivate", "active"), ("cleanup", "inactive")):
                left = deadline - time.monotonic()
                if state != when or hurry.is_set() or left <= 0:
                    continue
                client.change(transition, left)
                state = "inactive" if transition == "deactivate" else "unconfigured"
        except TransitionRefused:
            pass  # SIGINT follows; the node tears itself down as it exits

    def close(self) -> None:
        import rclpy

        rclpy.try_shutdown(context=self.context)
        self._thread.join(timeout=2.0)
