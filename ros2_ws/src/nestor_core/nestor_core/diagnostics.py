"""Standard diagnostics: every node's status also goes to the absolute ``/diagnostics`` topic.

``diagnostic_aggregator`` and rqt_robot_monitor read ``/diagnostics`` (diagnostic_msgs/
DiagnosticArray). On it, a status is named after the node's fully qualified name
(``/robot0/policy``), so robots that share node names stay apart, and its ``hardware_id`` is the
robot id. A node with its own status topic (``policy/status``, ``uplink/status``) publishes the
same array on both. The others publish a small status every ``period_s`` from a timer.

This module imports no rclpy: the node and the QoS profile are handed in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from nestor_core import topics

OK, WARN, ERROR, STALE = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR, DiagnosticStatus.STALE


def format_value(value) -> str:
    """KeyValue text of a value: floats with 4 significant digits, None as ""."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def make_status(name: str, hardware_id: str, level, message: str, values: Mapping) -> DiagnosticStatus:
    """One DiagnosticStatus with ``values`` as KeyValues (see ``format_value``)."""
    return DiagnosticStatus(
        level=level,
        name=name,
        hardware_id=hardware_id,
        message=message,
        values=[KeyValue(key=str(k), value=format_value(v)) for k, v in values.items()],
    )


def robot_of(node) -> str:
    """The robot id a node without a robot_id parameter belongs to: its namespace's last part."""
    return node.get_namespace().rstrip("/").rsplit("/", 1)[-1]


class Diagnostics:
    """The ``/diagnostics`` publisher of one node.

    Args:
        node: the rclpy node.
        hardware_id: the robot id.
        qos_profile: the QoS of the publisher (``nestor_core.qos.STATUS_QOS``).
        status_fn: for nodes without a status topic: returns (level, message, values), published
            every ``period_s`` from a timer of the node.
        period_s: period of that timer (diagnostic_updater's default is 1 s).
    """

    def __init__(self, node, hardware_id: str, qos_profile, status_fn: Callable | None = None, period_s: float = 1.0):
        self._node = node
        self.hardware_id = hardware_id
        self.name = node.get_fully_qualified_name()
        self._pub = node.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, qos_profile)
        self._status_fn = status_fn
        self.timer = node.create_timer(period_s, self._on_timer) if status_fn is not None else None

    def destroy(self) -> None:
        """Destroys the publisher and the timer (a lifecycle node's cleanup)."""
        if self.timer is not None:
            self._node.destroy_timer(self.timer)
            self.timer = None
        self._node.destroy_publisher(self._pub)

    def publish(self, array: DiagnosticArray) -> None:
        """Publishes a node's own status array on /diagnostics, under the node's full name."""
        out = DiagnosticArray(header=array.header)
        for status in array.status:
            name = self.name if status.name in ("", self.name, self._node.get_name()) else f"{self.name}: {status.name}"
            out.status.append(
                DiagnosticStatus(
                    level=status.level,
                    name=name,
                    message=status.message,
                    hardware_id=self.hardware_id,
                    values=status.values,
                )
            )
        if not out.header.stamp.sec and not out.header.stamp.nanosec:
            out.header.stamp = self._node.get_clock().now().to_msg()
        self._pub.publish(out)

    def _on_timer(self) -> None:
        level, message, values = self._status_fn()
        array = DiagnosticArray(status=[make_status(self.name, self.hardware_id, level, message, values)])
        array.header.stamp = self._node.get_clock().now().to_msg()
        self._pub.publish(array)
