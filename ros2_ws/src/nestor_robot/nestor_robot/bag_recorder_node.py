"""ROS node `bag_recorder`: records the robot's own topics to an MCAP bag while it runs.

What ``ros2 bag record`` would do for this robot, in its own process (the ``record`` option of
the bringup adds it), so the control loop never waits for it: subscriptions take the serialized
bytes (``raw=True``, no deserialisation), the callback only queues them, and a writer thread
fills the file (``nestor_robot.bag``). Each topic is recorded under its full name
(``/robot0/joint_states``) with the publisher's reliability and durability, and a deeper queue.
On shutdown the queue is drained and the bag's summary written; the counts go to the log and
``<path>.json``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import ClassVar

from diagnostic_msgs.msg import DiagnosticArray
from nestor_core import diagnostics, qos, topics
from nestor_core.diagnostics import Diagnostics
from nestor_core.params import declare_config, refuse_undeclared
from rclpy.node import Node
from rclpy.qos import QoSProfile
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64, Float64MultiArray, String

from nestor_robot.bag import Bag
from nestor_robot.spin import run_node

# Relative topic -> (message type, the publisher's QoS profile).
TOPICS = {
    topics.JOINT_STATES: (JointState, qos.SENSOR_QOS),
    topics.TARGET: (JointState, qos.SENSOR_QOS),
    topics.COMMANDS: (Float64MultiArray, qos.COMMAND_QOS),
    topics.COST: (Float64, qos.COMMAND_QOS),
    topics.SIM_EVENTS: (String, qos.EVENT_QOS),
    topics.MODEL_UPDATE: (String, qos.EVENT_QOS),
    topics.POLICY_STATUS: (DiagnosticArray, qos.STATUS_QOS),
    topics.POLICY_ROLLBACK: (String, qos.EVENT_QOS),
    "uplink/status": (DiagnosticArray, qos.STATUS_QOS),
}
IMAGE_TOPICS = {topics.IMAGE: (Image, qos.IMAGE_QOS)}


@dataclasses.dataclass
class BagRecorderConfig:
    """Parameters of the `bag_recorder` node.

    Attributes:
        robot_id: this robot (the diagnostics' hardware id).
        path: MCAP file to write (required; the bringup sets <run_dir>/robots/<id>/recording.mcap).
        record_images: also record camera/image_raw (about 18 KB per frame at 96x64).
        queue_capacity: messages queued between two writes at most; more are dropped and counted.
        depth: history depth of every subscription (publishers keep 1-20).
    """

    robot_id: str = "robot0"
    path: str = ""
    record_images: bool = False
    queue_capacity: int = 100000
    depth: int = 1000

    RANGES: ClassVar[dict] = {"queue_capacity": (1, 10_000_000), "depth": (1, 100_000)}

    def validate(self) -> BagRecorderConfig:
        if not self.path:
            raise ValueError("path: required (the MCAP file to write)")
        if self.queue_capacity < 1:
            raise ValueError(f"queue_capacity: must be >= 1, got {self.queue_capacity}")
        if self.depth < 1:
            raise ValueError(f"depth: must be >= 1, got {self.depth}")
        return self


def free_path(path: str) -> str:
    """`path` when nothing is there yet, else the first free `<stem>.<n><suffix>` (n = 1, 2, ...)."""
    if not os.path.exists(path):
        return path
    stem, suffix = os.path.splitext(path)
    n = 1
    while os.path.exists(f"{stem}.{n}{suffix}"):
        n += 1
    return f"{stem}.{n}{suffix}"


def _datatype(msg_type) -> str:
    return f"{msg_type.__module__.split('.')[0]}/msg/{msg_type.__name__}"


class BagRecorderNode(Node):
    def __init__(self):
        super().__init__("bag_recorder")
        self.config = declare_config(self, BagRecorderConfig)
        refuse_undeclared(self)
        # Respawned by the supervisor (its death does not stop the robot): the bag of the process
        # before is kept, and this one records into the next free <name>.<n>.mcap, as rosbag2 splits.
        self.path = free_path(self.config.path)
        self.bag = Bag(self.path, capacity=self.config.queue_capacity)
        self._subs = []
        wanted = {**TOPICS, **(IMAGE_TOPICS if self.config.record_images else {})}
        for topic, (msg_type, profile) in wanted.items():
            depth_qos = QoSProfile(
                depth=self.config.depth,
                reliability=profile.reliability,
                durability=profile.durability,
                history=profile.history,
            )
            # The channel needs the full topic name, which the subscription resolves; no callback
            # runs before the executor spins, so the holder is filled in time.
            holder = []
            sub = self.create_subscription(
                msg_type, topic, lambda data, h=holder: self.bag.put(h[0], data), depth_qos, raw=True
            )
            holder.append(self.bag.add_topic(sub.topic_name, _datatype(msg_type)))
            self._subs.append(sub)
        self.diagnostics = Diagnostics(self, self.config.robot_id, qos.STATUS_QOS, self.diagnostic_status)
        self.get_logger().info(f"recording {len(wanted)} topics to {self.path}")

    def diagnostic_status(self) -> tuple:
        """(level, message, values) for /diagnostics: messages written and dropped."""
        stats = dict(self.bag.stats, path=self.path)
        if stats["dropped"]:
            return diagnostics.WARN, f"{stats['dropped']} messages dropped (queue full)", stats
        return diagnostics.OK, "recording", stats

    def shutdown(self) -> None:
        stats = self.bag.close()
        with open(f"{self.path}.json", "w") as f:
            json.dump(stats, f, indent=1, sort_keys=True)
        self.get_logger().info(f"bag {self.path}: {stats}")


def main(args=None):
    run_node(BagRecorderNode, args)


if __name__ == "__main__":
    main()
