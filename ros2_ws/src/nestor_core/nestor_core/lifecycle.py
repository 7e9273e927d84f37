"""Lifecycle (managed) nodes, as in ros2/demos ``lifecycle_py``, and a plain client that drives them.

The nodes that own a resource (the sim bridge's physics client, the uplink's and weight_sync's
gRPC channel, the policy's model) subclass ``ManagedNode`` and implement four hooks:

* ``configure()``: read the parameters, acquire the resources (open the spool, load the model,
  create the physics client, the publishers and subscriptions). A refusal raises ValueError or
  OSError (``ConfigError`` among them) with a message naming the parameter; the node stays
  ``unconfigured`` and whatever was acquired half-way is released.
* ``activate()``: start the work (the tick, the streaming thread, the timers).
* ``deactivate()``: stop the work (the policy flushes its recorder, the uplink drains the spool).
* ``cleanup()``: release what ``configure()`` acquired. The node can be configured again.

The transitions come over the standard lifecycle services (``<node>/change_state``,
``<node>/get_state``, lifecycle_msgs), from ``ros2 lifecycle set``, ``launch_ros`` or
``LifecycleClient`` below, which the ``nestor`` CLI uses. A node started on its own
(``autostart`` true, the default) configures and activates itself at start, so
``ros2 run nestor_robot policy_node`` still just runs; the bringup sets ``autostart:=false`` and
drives the transitions.
"""

from __future__ import annotations

import threading
import time

from lifecycle_msgs.msg import State, Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.lifecycle import LifecycleNode, LifecyclePublisher, LifecycleState, TransitionCallbackReturn
from rclpy.subscription import Subscription
from rclpy.timer import Timer

from nestor_core.params import ConfigBinding, declare_parameters, refuse_undeclared

AUTOSTART = "autostart"
AUTOSTART_HELP = (
    "configure and activate at start (a node started on its own); the bringup and the launch files "
    "set it false and drive the transitions over the lifecycle services"
)
# Transition label -> id, as `ros2 lifecycle set <node> <label>` names them.
TRANSITIONS = {
    "configure": Transition.TRANSITION_CONFIGURE,
    "activate": Transition.TRANSITION_ACTIVATE,
    "deactivate": Transition.TRANSITION_DEACTIVATE,
    "cleanup": Transition.TRANSITION_CLEANUP,
    "shutdown": Transition.TRANSITION_ACTIVE_SHUTDOWN,  # the id only matters from `active`; see below
}
SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE


class TransitionRefused(RuntimeError):
    """A transition the node refused or that could not be requested; the message says why."""


class ManagedNode(LifecycleNode):
    """A LifecycleNode whose transitions call ``configure / activate / deactivate / cleanup``.

    Attributes:
        autostart: the `autostart` parameter (read when the node is built).
        error: why the last transition failed ("" after a success).
        stage: "unconfigured", "inactive" or "active", as the hooks left the node.
    """

    def __init__(self, name: str, **kwargs):
        super().__init__(name, **kwargs)
        descriptor = ParameterDescriptor(description=AUTOSTART_HELP, read_only=True)
        self.autostart = bool(self.declare_parameter(AUTOSTART, True, descriptor).value)
        self.error = ""
        self.stage = "unconfigured"
        self._refusal: BaseException | None = None  # what the last configure() raised
        self._hooks = threading.Lock()  # a transition and the teardown at exit never overlap

    # ------------------------------------------------------------------ hooks (subclasses)

    def configure(self) -> None:
        """Read the parameters and acquire the resources; raise ValueError/OSError to refuse."""

    def activate(self) -> None:
        """Start the work."""

    def deactivate(self) -> None:
        """Stop the work."""

    def cleanup(self) -> None:
        """Release the resources; must cope with a half-done configure()."""

    def bind(self, config_cls, **options) -> ConfigBinding:
        """Declare the parameters of `config_cls` (nestor_core.params) and refuse undeclared ones.

        configure() reads and validates them with the binding's read().
        """
        binding = declare_parameters(self, config_cls, **options)
        refuse_undeclared(self)
        return binding

    def release(self, *attributes: str) -> None:
        """Destroy each named handle that is set, then set it to None (for cleanup()).

        A lifecycle publisher, subscription or timer is destroyed on the node; another object
        (Diagnostics, a spool) by its own destroy() or close().
        """
        for attribute in attributes:
            handle = getattr(self, attribute)
            if isinstance(handle, LifecyclePublisher):
                self.destroy_lifecycle_publisher(handle)
            elif isinstance(handle, Subscription):
                self.destroy_subscription(handle)
            elif isinstance(handle, Timer):
                self.destroy_timer(handle)
            elif handle is not None:
                (handle.destroy if hasattr(handle, "destroy") else handle.close)()
            setattr(self, attribute, None)

    # ------------------------------------------------------------------ rclpy transition callbacks

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        with self._hooks:
            try:
                self.configure()
            except Exception as err:  # noqa: BLE001 - refused: the node stays unconfigured
                self.error = str(err) if isinstance(err, (ValueError, OSError)) else f"{type(err).__name__}: {err}"
                self._refusal = err
                self._release()
                if not self.autostart:  # alone, main() prints the one line instead
                    self.get_logger().error(f"configure refused: {self.error}")
                return FAILURE
            self.error, self.stage = "", "inactive"
            self.get_logger().info("configured (inactive)")
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        super().on_activate(state)  # first: enables the lifecycle publishers activate() may use
        with self._hooks:
            try:
                self.activate()
            except (ValueError, OSError) as err:
                self.error = str(err)
                self.get_logger().error(f"activate refused: {err}")
                self.stage = "active"  # undo what activate() started
                self._stop_work()
                super().on_deactivate(state)
                return FAILURE
            self.error, self.stage = "", "active"
            self.get_logger().info("activated")
        return SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        with self._hooks:
            self._stop_work()
            self.get_logger().info("deactivated (inactive)")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        with self._hooks:
            self._release()
            self.get_logger().info("cleaned up (unconfigured)")
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.teardown()
        return super().on_shutdown(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        # A hook raised something unexpected: release everything; the node is unconfigured again.
        self.get_logger().error(f"transition from {state.label} failed; releasing the resources")
        self.teardown()
        return SUCCESS

    # ------------------------------------------------------------------ without the state machine

    def teardown(self) -> None:
        """Deactivate and clean up, whatever the stage (at exit, after rclpy may have shut down)."""
        with self._hooks:
            self._stop_work()
            self._release()

    def start_alone(self) -> None:
        """With `autostart`: configure and activate now, as the bringup would.

        Raises:
            Exception: what configure() raised (a refusal: ValueError or OSError, naming the
                parameter); TransitionRefused when activate failed.
        """
        if not self.autostart:
            return
        self._refusal = None
        if self.trigger_configure() != SUCCESS:
            raise self._refusal or TransitionRefused(self.error or "configure failed")
        if self.trigger_activate() != SUCCESS:
            raise TransitionRefused(self.error or "activate failed")

    def _stop_work(self) -> None:
        if self.stage == "active":
            self.stage = "inactive"
            self.deactivate()

    def _release(self) -> None:
        self.stage = "unconfigured"
        self.cleanup()


def state_label(state_id: int) -> str:
    """The label of a lifecycle_msgs State id ("unconfigured", "inactive", "active", ...)."""
    labels = {
        State.PRIMARY_STATE_UNKNOWN: "unknown",
        State.PRIMARY_STATE_UNCONFIGURED: "unconfigured",
        State.PRIMARY_STATE_INACTIVE: "inactive",
        State.PRIMARY_STATE_ACTIVE: "active",
        State.PRIMARY_STATE_FINALIZED: "finalized",
    }
    return labels.get(state_id, f"transitioning ({state_id})")


class LifecycleClient:
    """Drives one lifecycle node over its services, from a plain rclpy node (any process).

    Thread-safe as rclpy clients are; the calling thread blocks while another thread spins
    `node` (or, with ``spin=True``, spins the node itself: only when nothing else spins it).

    Args:
        node: the rclpy node that owns the two clients.
        target: the managed node's fully qualified name, e.g. "/robot0/policy".
        spin: spin `node` while waiting (a caller without an executor thread).
    """

    def __init__(self, node, target: str, spin: bool = False):
        self.node = node
        self.target = target.rstrip("/")
        self._executor = None
        if spin:
            from rclpy.executors import SingleThreadedExecutor

            self._executor = SingleThreadedExecutor(context=node.context)
            self._executor.add_node(node)
        self._change = node.create_client(ChangeState, f"{self.target}/change_state")
        self._get = node.create_client(GetState, f"{self.target}/get_state")

    def destroy(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(timeout_sec=1.0)
        self.node.destroy_client(self._change)
        self.node.destroy_client(self._get)

    def wait(self, timeout_s: float, cancelled=None) -> bool:
        """Wait until both services are up; False after timeout_s (or once `cancelled()` is true)."""
        deadline = time.monotonic() + timeout_s
        for client in (self._change, self._get):
            while not client.service_is_ready():
                if time.monotonic() >= deadline or (cancelled is not None and cancelled()):
                    return False
                self._pause(0.05)
        return True

    def state(self, timeout_s: float = 5.0) -> str:
        """The node's current state label."""
        response = self._call(self._get, GetState.Request(), timeout_s, "get_state")
        return response.current_state.label or state_label(response.current_state.id)

    def change(self, transition: str, timeout_s: float = 10.0) -> None:
        """Request `transition` ("configure", "activate", "deactivate", "cleanup", "shutdown").

        Raises:
            TransitionRefused: the node refused it or did not answer within timeout_s.
        """
        if transition not in TRANSITIONS:
            raise ValueError(f"transition: expected one of {', '.join(TRANSITIONS)}, got {transition!r}")
        request = ChangeState.Request()
        if transition == "shutdown":
            request.transition.label = "shutdown"  # the label resolves from any primary state
        else:
            request.transition.id = TRANSITIONS[transition]
        if not self._call(self._change, request, timeout_s, transition).success:
            raise TransitionRefused(f"{self.target}: {transition} refused")

    def _pause(self, seconds: float) -> None:
        if self._executor is not None:
            self._executor.spin_once(timeout_sec=seconds)
        else:
            time.sleep(seconds)

    def _call(self, client, request, timeout_s: float, what: str):
        if not client.wait_for_service(timeout_sec=timeout_s):
            raise TransitionRefused(f"{self.target}: no {client.srv_name} service after {timeout_s:g} s")
        future = client.call_async(request)
        deadline = time.monotonic() + timeout_s
        while not future.done():
            if time.monotonic() >= deadline:
                client.remove_pending_request(future)
                raise TransitionRefused(f"{self.target}: no answer to {what} within {timeout_s:g} s")
            self._pause(0.02)
        return future.result()
