"""ROS node `weight_sync`: follows the cloud's model versions and announces each verified one.

Each verified model is published as a ModelAnnouncement (nestor_core.announcements: std_msgs/String
JSON {"version", "path", "sha256", "task", "parent"}, plus "downgrade" on one) on MODEL_UPDATE with
EVENT_QOS (reliable, transient local), so a policy node that starts later still receives the newest.

Rollbacks the policy node publishes on POLICY_ROLLBACK are marked bad locally and forwarded to the
cloud as Models.ReportBad, from a short-lived thread (never from the executor).
"""

import dataclasses
import threading
import typing

from nestor_core import diagnostics, qos, topics
from nestor_core.announcements import AnnouncementError, ModelAnnouncement, RollbackReport
from nestor_core.diagnostics import Diagnostics
from nestor_core.lifecycle import ManagedNode
from nestor_core.params import INF, nested
from nestor_core.validation import non_empty
from std_msgs.msg import String

from nestor_robot.channel import TlsFiles
from nestor_robot.spin import run_node
from nestor_robot.weight_sync import WeightSync, WeightSyncConfig


@dataclasses.dataclass
class WeightSyncNodeConfig:
    """Parameters of the `weight_sync` node; `sync` nests the WeightSync's own config.

    Attributes:
        robot_id: this robot.
        task: model lineage to follow, e.g. "kuka_track".
        cloud_address: host:port of the cloud's Models service; several replicas comma-separated (fail over).
        model_dir: directory of verified models (<task>-v<version>.onnx plus a .json sidecar).
        sync: the WeightSyncConfig whose backoff_min_s, backoff_max_s, stream_deadline_s and
            public_key_path are parameters of these names (nestor_robot.weight_sync).
        tls: the TlsFiles whose tls_ca, tls_cert and tls_key are parameters of these names
            (nestor_robot.channel).
    """

    robot_id: str = "robot0"
    task: str = "kuka_track"
    cloud_address: str = "127.0.0.1:50051"
    model_dir: str = "/tmp/nestor_models"
    sync: WeightSyncConfig = nested(
        WeightSyncConfig, "backoff_min_s", "backoff_max_s", "stream_deadline_s", "public_key_path"
    )
    tls: TlsFiles = nested(TlsFiles, "tls_ca", "tls_cert", "tls_key")

    RANGES: typing.ClassVar[dict] = {
        "backoff_min_s": (0.0, 3600.0),
        "backoff_max_s": (0.0, 3600.0),
        "stream_deadline_s": (0.0, INF),
    }

    def validate(self) -> "WeightSyncNodeConfig":
        non_empty(self, "robot_id", "task", "model_dir")
        self.sync_config()
        return self

    def sync_config(self) -> WeightSyncConfig:
        """The nested WeightSyncConfig with the channel credentials of the tls_* files."""
        return self.tls.apply(self.sync)


class WeightSyncNode(ManagedNode):
    """Lifecycle node `weight_sync`: the cloud's model versions, verified and announced.

    Configure checks the key and credentials and creates the model directory and the publisher,
    activate adopts the newest local model and starts the Subscribe thread (which owns the gRPC
    channel), deactivate stops it, cleanup drops the publisher.
    """

    def __init__(self, **kwargs):
        super().__init__("weight_sync", **kwargs)
        self.binding = self.bind(WeightSyncNodeConfig)
        self.config: WeightSyncNodeConfig | None = None
        self.sync: WeightSync | None = None
        self.publisher = self.rollback_sub = self.diagnostics = self.thread = None
        self._reported: set[int] = set()
        self._reporters: list[threading.Thread] = []
        self.stop_event = threading.Event()

    def configure(self) -> None:
        self.config = config = self.binding.read()
        sync_config = config.sync_config()
        if sync_config.channel_credentials is None:
            self.get_logger().warning(
                f"INSECURE: subscribing to {config.cloud_address} without TLS (tls_ca/tls_cert/tls_key empty)"
            )
        if not sync_config.public_key_path:
            self.get_logger().warning("INSECURE: public_key_path is empty: model signatures are NOT verified")
        self.sync = WeightSync(
            config.cloud_address, config.robot_id, config.task, config.model_dir, self.announce, sync_config
        )
        self.publisher = self.create_lifecycle_publisher(String, topics.MODEL_UPDATE, qos.EVENT_QOS)
        self.rollback_sub = self.create_subscription(String, topics.POLICY_ROLLBACK, self.on_rollback, qos.EVENT_QOS)
        self.diagnostics = Diagnostics(self, config.robot_id, qos.STATUS_QOS, self.diagnostic_status)

    def activate(self) -> None:
        local = self.sync.load_local()
        if local is not None:
            self.get_logger().info(f"local model {local['task']} v{local['version']} at {local['path']}")
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self.sync.run, args=(self.stop_event,), name="weight_sync", daemon=True)
        self.thread.start()

    def deactivate(self) -> None:
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(timeout=5.0)
            self.thread = None
        for thread in self._reporters:
            thread.join(timeout=2.0)
        self._reporters = []

    def cleanup(self) -> None:
        self.release("diagnostics", "rollback_sub", "publisher")
        self.sync = None

    def diagnostic_status(self) -> tuple:
        """(level, message, values) for /diagnostics: the verified version and the stream's health."""
        stats = self.sync.stats()
        rejected = stats.pop("rejected_by_reason")
        values = {**stats, **{f"rejected.{k}": v for k, v in rejected.items()}}
        if stats["connected"]:
            return diagnostics.OK, f"subscribed, model v{stats['current_version']}", values
        return diagnostics.WARN, stats["last_error"] or "connecting", values

    def announce(self, info: dict) -> None:
        self.get_logger().info(f"model {info['task']} v{info['version']} verified: {info['path']}")
        self.publisher.publish(String(data=ModelAnnouncement.from_info(info).encode()))

    def on_rollback(self, msg: String) -> None:
        try:
            report = RollbackReport.decode(msg.data)
        except AnnouncementError as err:
            self.get_logger().error(f"policy/rollback: bad message {msg.data[:200]!r}: {err}")
            return
        version, reason = report.version, report.reason
        if version in self._reported:
            return  # a latched replay
        self._reported.add(version)
        self.get_logger().warning(f"policy rolled back model v{version}: {reason}; reporting it to the cloud")
        thread = threading.Thread(target=self.sync.report_bad, args=(version, reason), daemon=True)
        thread.start()
        self._reporters = [t for t in self._reporters if t.is_alive()] + [thread]


def main(args=None):
    run_node(WeightSyncNode, args)


if __name__ == "__main__":
    main()
