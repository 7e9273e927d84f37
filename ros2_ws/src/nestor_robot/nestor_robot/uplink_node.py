"""ROS node `uplink`: runs the experience Uplink in a background thread and reports its state.

Publishes diagnostic_msgs/DiagnosticArray on `uplink/status` every status_period_s (spool depth,
acked seq, drops, stream counters).
"""

import dataclasses
import logging
import os
import threading
import time
import typing

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from nestor_core import qos
from nestor_core.atomic_file import write_json_atomic
from nestor_core.diagnostics import Diagnostics
from nestor_core.lifecycle import ManagedNode
from nestor_core.params import INF, nested
from nestor_core.validation import non_empty, positive

from nestor_robot.channel import TlsFiles
from nestor_robot.robot_metrics import UplinkMetrics, stop_serving
from nestor_robot.spin import run_node
from nestor_robot.spool import Spool
from nestor_robot.uplink import Uplink, UplinkConfig

STATUS_TOPIC = "uplink/status"
log = logging.getLogger(__name__)


@dataclasses.dataclass
class UplinkNodeConfig:
    """Parameters of the `uplink` node; `uplink` nests the Uplink's own config.

    Attributes:
        robot_id: this robot; must match the spool's owner.
        spool_path: SQLite spool file shared with the policy node.
        cloud_address: host:port of the cloud's Experience service; several replicas comma-separated (fail over).
        uplink: the UplinkConfig whose window, backoff_min_s, backoff_max_s, stream_deadline_s,
            ack_timeout_s and poll_period_s are parameters of these names (nestor_robot.uplink).
        status_period_s: period of the uplink/status diagnostics.
        tls: the TlsFiles whose tls_ca, tls_cert and tls_key are parameters of these names
            (nestor_robot.channel).
        metrics_port: Prometheus /metrics port on 127.0.0.1 (spool depth, acked seq, ack latency); 0 = off.
        drain_timeout_s: on SIGINT/SIGTERM, keep sending until the cloud has acked everything the
            spool holds, for at most this long; whatever is left stays for the next start.
        run_dir: directory for uplink_stats.json (link state, last error, acked seq, spool depth), which
            `nestor robot`/`fleet` show live; empty writes no file.
    """

    robot_id: str = "robot0"
    spool_path: str = "/tmp/nestor_spool.sqlite"
    cloud_address: str = "127.0.0.1:50051"
    uplink: UplinkConfig = nested(
        UplinkConfig, "window", "backoff_min_s", "backoff_max_s", "stream_deadline_s", "ack_timeout_s", "poll_period_s"
    )
    status_period_s: float = 1.0
    tls: TlsFiles = nested(TlsFiles, "tls_ca", "tls_cert", "tls_key")
    metrics_port: int = 0
    drain_timeout_s: float = 30.0
    run_dir: str = ""

    RANGES: typing.ClassVar[dict] = {
        "window": (1, 100_000),
        "backoff_min_s": (0.0, 3600.0),
        "backoff_max_s": (0.0, 3600.0),
        "stream_deadline_s": (0.0, INF),
        "ack_timeout_s": (0.0, INF),
        "poll_period_s": (0.0, 60.0),
        "status_period_s": (0.0, 3600.0),
        "metrics_port": (0, 65535),
        "drain_timeout_s": (0.0, INF),
    }

    def validate(self) -> "UplinkNodeConfig":
        non_empty(self, "robot_id")
        positive(self, "status_period_s")
        self.uplink_config()
        return self

    def uplink_config(self) -> UplinkConfig:
        """The nested UplinkConfig with the channel credentials of the tls_* files."""
        return self.tls.apply(self.uplink)


class UplinkNode(ManagedNode):
    """Lifecycle node `uplink`: the spool streamed to the cloud.

    Configure opens the spool and prepares the channel's credentials, activate starts the streaming
    thread (which owns the gRPC channel), deactivate drains the spool (up to drain_timeout_s) and
    stops it, cleanup closes the spool and the metrics server.
    """

    def __init__(self, **kwargs):
        super().__init__("uplink", **kwargs)
        self.binding = self.bind(UplinkNodeConfig)
        self.config: UplinkNodeConfig | None = None
        self.spool: Spool | None = None
        self.metrics_http = None
        self.uplink: Uplink | None = None
        self.status_pub = self.diagnostics = self.timer = self.thread = None
        self.stop_event = threading.Event()

    def configure(self) -> None:
        self.config = config = self.binding.read()
        self.uplink_config = config.uplink_config()
        self.spool = Spool(config.spool_path, config.robot_id)
        self.metrics = UplinkMetrics()
        self.metrics_http = self.metrics.serve(config.metrics_port)
        self.uplink = Uplink(self.spool, config.cloud_address, self.uplink_config)
        self.status_pub = self.create_lifecycle_publisher(DiagnosticArray, STATUS_TOPIC, qos.STATUS_QOS)
        self.diagnostics = Diagnostics(self, config.robot_id, qos.STATUS_QOS)
        self._last_dropped = self.spool.stats()["dropped"]
        self._disconnected_since: float | None = time.time()
        if config.run_dir:
            os.makedirs(config.run_dir, exist_ok=True)
        self.get_logger().info(f"uplink: {config.spool_path} -> {config.cloud_address}")
        if self.uplink.config.channel_credentials is None:
            self.get_logger().warning(
                f"INSECURE: uplink to {config.cloud_address} without TLS (tls_ca/tls_cert/tls_key empty); "
                "experience travels in clear text and the cloud cannot authenticate this robot"
            )

    def activate(self) -> None:
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self.uplink.run, args=(self.stop_event,), name="uplink", daemon=True)
        self.thread.start()
        self.timer = self.create_timer(self.config.status_period_s, self.publish_status)

    def deactivate(self) -> None:
        """Drain the spool (up to drain_timeout_s), then stop the uplink thread."""
        if self.timer is not None:
            self.destroy_timer(self.timer)
            self.timer = None
        if self.thread is None:
            return
        try:
            left = drain(self.spool, self.thread, self.config.drain_timeout_s)
        except KeyboardInterrupt:  # a second Ctrl-C: stop now
            left = self.spool.stats()["depth_transitions"]
        # At exit rclpy's context is shut down by now: these go through `logging` (the node's log file).
        if left:
            log.warning(
                "stop: %d transitions not acknowledged after %g s; they stay in the spool for the next start",
                left,
                self.config.drain_timeout_s,
            )
        else:
            log.info("stop: spool drained, every transition acknowledged by the cloud")
        self.stop_event.set()
        self.thread.join(timeout=5.0)
        self.thread = None

    def cleanup(self) -> None:
        stop_serving(self.metrics_http)
        self.metrics_http = None
        self.release("diagnostics", "status_pub", "spool")
        self.uplink = None

    def publish_status(self) -> None:
        spool = self.spool.stats()
        link = self.uplink.stats()
        self.metrics.update(spool, link, self.uplink.ack_latencies())
        if spool["dropped"] > self._last_dropped:
            self.get_logger().warning(
                f"spool dropped {spool['dropped'] - self._last_dropped} transitions "
                f"(evicted {spool['evicted']}, rejected {spool['rejected']}, quarantined {spool['quarantined']} total)"
            )
            self._last_dropped = spool["dropped"]
        status = DiagnosticStatus(name="uplink", hardware_id=self.config.robot_id)
        if link["connected"]:
            status.level, status.message = DiagnosticStatus.OK, "streaming"
        else:
            status.level, status.message = DiagnosticStatus.WARN, link["last_error"] or "connecting"
        values = {**{f"spool.{k}": v for k, v in spool.items()}, **link}
        status.values = [KeyValue(key=str(k), value=str(v)) for k, v in values.items()]
        self._write_stats(spool, link)
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.status_pub.publish(msg)
        self.diagnostics.publish(msg)

    def _write_stats(self, spool: dict, link: dict) -> None:
        if link["connected"]:
            self._disconnected_since = None
        elif self._disconnected_since is None:
            self._disconnected_since = time.time()
        if not self.config.run_dir:
            return
        stats = {
            "robot_id": self.config.robot_id,
            "cloud_address": self.config.cloud_address,
            "connected": link["connected"],
            "last_error": link["last_error"],
            "disconnected_since": self._disconnected_since,
            "acked_through": spool["acked_through"],
            "spool_depth": spool["depth_transitions"],
            "dropped": spool["dropped"],
            "sent": link["sent"],
            "acked": link["acked"],
            "reconnects": link["reconnects"],
            "wall_time": time.time(),
        }
        path = os.path.join(self.config.run_dir, "uplink_stats.json")
        try:
            write_json_atomic(path, stats, sort_keys=True)
        except OSError as err:
            self.get_logger().error(f"writing {path} failed: {err}", throttle_duration_sec=10.0)


# A writer (the policy node) may flush once more as it stops: the spool must stay empty this long.
DRAIN_SETTLE_S = 0.5


def drain(spool: Spool, uplink_thread: threading.Thread, timeout_s: float, period_s: float = 0.05) -> int:
    """Wait until the spool is empty and no append came for DRAIN_SETTLE_S, or timeout_s passed.

    The uplink thread keeps streaming meanwhile. Returns the transitions still unacknowledged.
    """
    deadline = time.monotonic() + timeout_s
    appended, settled_at, depth = None, 0.0, 0
    while True:
        now = time.monotonic()
        try:
            stats = spool.stats()
        except Exception:  # noqa: BLE001 - a busy spool: look again on the next period
            stats = None
        if stats is not None:
            depth = int(stats["depth_transitions"])
            if depth == 0 and stats["appended"] == appended and now - settled_at >= DRAIN_SETTLE_S:
                return 0
            if depth != 0 or stats["appended"] != appended:
                appended, settled_at = (stats["appended"], now) if depth == 0 else (None, now)
        if now >= deadline or not uplink_thread.is_alive():
            return depth
        time.sleep(period_s)


def main(args=None):
    run_node(UplinkNode, args)


if __name__ == "__main__":
    main()
