"""The ROS loop bench's probe: a node in the bench process that records stamps and command arrivals.

Round-trip latency = command arrival time minus the header stamp of the newest JointState stamped
before it (see bench.ros_loop).
"""

from __future__ import annotations

import bisect
import struct
import threading
import time

MATCH_S = 0.5


class Probe:
    """Subscribes joint_states and commands of some namespaces; records stamps and arrivals (ns)."""

    def __init__(self, namespaces: list[str]):
        import rclpy
        from nestor_core import topics
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Float64MultiArray

        self.context = rclpy.Context()
        rclpy.init(context=self.context, signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
        self.node = Node("bench_probe", context=self.context)
        # Deep queues so a probe that lags behind loses nothing (it catches up after the window);
        # best effort to match the sensor publisher.
        state_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5000, reliability=ReliabilityPolicy.BEST_EFFORT)
        cmd_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5000, reliability=ReliabilityPolicy.RELIABLE)
        self.stamps: dict[str, list[int]] = {}
        self.unmatched: dict[str, int] = {}
        self.arrivals: dict[str, list[int]] = {}
        self.lock = threading.Lock()
        for ns in namespaces:
            self.stamps[ns], self.arrivals[ns] = [], []
            # raw=True: no Python message conversion, so the probe keeps up at 500 Hz x 2 topics.
            self.node.create_subscription(
                JointState, f"{ns}/{topics.JOINT_STATES}", self._state_cb(ns), state_qos, raw=True
            )
            self.node.create_subscription(
                Float64MultiArray, f"{ns}/{topics.COMMANDS}", self._cmd_cb(ns), cmd_qos, raw=True
            )
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        while not self._stop.is_set() and self.context.ok():
            self.executor.spin_once(timeout_sec=0.1)

    def _state_cb(self, ns: str):
        stamps = self.stamps[ns]

        def on_state(data: bytes, info) -> None:
            # CDR: 4-byte encapsulation header, then header.stamp (int32 sec, uint32 nanosec), little endian.
            sec, nanosec = struct.unpack_from("<iI", data, 4)
            with self.lock:
                stamps.append(sec * 1_000_000_000 + nanosec)

        return on_state

    def _cmd_cb(self, ns: str):
        arrivals = self.arrivals[ns]

        def on_cmd(data: bytes, info) -> None:
            # The middleware's reception time: independent of when this probe gets to run the callback.
            with self.lock:
                arrivals.append(int(info["received_timestamp"]))

        return on_cmd

    def stamps_between(self, ns: str, start: float, end: float) -> int:
        lo, hi = int(start * 1e9), int(end * 1e9)
        with self.lock:
            return sum(1 for s in self.stamps[ns] if lo <= s <= hi)

    def catch_up(self, ns: str, end: float, timeout_s: float = 10.0) -> bool:
        """Wait until the probe has processed joint states stamped after `end` (True) or timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                if self.stamps[ns] and self.stamps[ns][-1] >= end * 1e9:
                    return True
            time.sleep(0.05)
        return False

    def latencies_ms(self, ns: str, start: float, end: float) -> list[float]:
        """Per command received in [start, end] (wall s): reception - newest stamp before it."""
        self.catch_up(ns, end)
        with self.lock:
            stamps = sorted(self.stamps[ns])
            arrivals = list(self.arrivals[ns])
        lo, hi = int(start * 1e9), int(end * 1e9)
        out = []
        self.unmatched[ns] = 0
        for a in arrivals:
            if lo <= a <= hi:
                i = bisect.bisect_right(stamps, a)
                # A stamp older than MATCH_S means the probe never saw the joint state behind this
                # command (best-effort sample lost at the probe): counted, not turned into a latency.
                if i and a - stamps[i - 1] < MATCH_S * 1e9:
                    out.append((a - stamps[i - 1]) / 1e6)
                else:
                    self.unmatched[ns] += 1
        return out

    def close(self) -> None:
        self._stop.set()
        self.thread.join(timeout=2.0)
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        self.context.try_shutdown()
