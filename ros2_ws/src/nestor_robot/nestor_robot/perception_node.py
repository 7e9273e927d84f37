"""ROS node ``perception``: camera image -> target position and velocity of the controlled joint.

Subscribes ``topics.IMAGE`` (sensor_msgs/Image rgb8) and publishes ``topics.TARGET``
(sensor_msgs/JointState, name=[controlled_joint], position=[x], velocity=[filtered dx/dt]).
The image work is ``perception.find_target``; this file only converts messages.
"""

from __future__ import annotations

import dataclasses
import typing

import numpy as np
from nestor_core import diagnostics, qos, topics
from nestor_core.diagnostics import Diagnostics, robot_of
from nestor_core.params import INF, declare_config, refuse_undeclared
from nestor_core.validation import non_empty, positive, require
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState

from nestor_robot.perception import CameraCalibration, find_target
from nestor_robot.spin import run_node


@dataclasses.dataclass
class PerceptionConfig:
    """Parameters of the perception node (each is a ROS parameter of the same name).

    Attributes:
        controlled_joint: Joint name written into the published target.
        image_width: Image width (px) of the camera.
        image_height: Image height (px) of the camera.
        fov_deg: Vertical field of view of the camera (degrees).
        distance: Distance from the camera to the marker plane (m).
        center_x: x on the camera's optical axis (m).
        velocity_alpha: Low-pass factor of the finite-difference velocity (1 = no filtering).
    """

    controlled_joint: str = "slider_to_cart"
    image_width: int = 96
    image_height: int = 64
    fov_deg: float = 60.0
    distance: float = 3.0
    center_x: float = 0.0
    velocity_alpha: float = 0.3

    RANGES: typing.ClassVar[dict] = {
        "image_width": (1, 100_000),
        "image_height": (1, 100_000),
        "fov_deg": (0.0, 180.0),
        "distance": (0.0, INF),
        "center_x": (-INF, INF),
        "velocity_alpha": (0.0, 1.0),
    }

    def validate(self) -> PerceptionConfig:
        non_empty(self, "controlled_joint")
        alpha, fov = self.velocity_alpha, self.fov_deg
        require(0.0 < alpha <= 1.0, "velocity_alpha", f"must be in (0, 1], got {alpha}")
        require(0.0 < fov < 180.0, "fov_deg", f"must be in (0, 180), got {fov}")
        positive(self, "distance")
        return self

    def calibration(self) -> CameraCalibration:
        """The calibration of the camera parameters (bringup copies them from the task file)."""
        return CameraCalibration.from_camera(
            self.image_width, self.image_height, self.fov_deg, self.distance, self.center_x
        )


class PerceptionNode(Node):
    """Finds the red marker in each image and publishes it as the target."""

    def __init__(self):
        super().__init__("perception")
        self.config = declare_config(self, PerceptionConfig)
        refuse_undeclared(self)
        self.calib = self.config.calibration()
        self._last: tuple[float, float] | None = None  # (stamp s, x m)
        self._velocity = 0.0
        self._pub = self.create_publisher(JointState, topics.TARGET, qos.SENSOR_QOS)
        self.create_subscription(Image, topics.IMAGE, self._on_image, qos.IMAGE_QOS)
        self._found = self._missed = 0
        self._diagnostics = Diagnostics(self, robot_of(self), qos.STATUS_QOS, self._diagnostic_status)

    def _diagnostic_status(self) -> tuple:
        """(level, message, values) for /diagnostics: images with and without the marker."""
        values = {
            "images_with_marker": self._found,
            "images_without_marker": self._missed,
            "target_x": self._last[1] if self._last else None,
            "target_velocity": self._velocity,
        }
        if self._found == 0:
            return diagnostics.WARN, "no marker seen yet", values
        return diagnostics.OK, "tracking the marker", values

    def _on_image(self, msg: Image) -> None:
        if msg.encoding != "rgb8":
            self.get_logger().warn(f"image: expected rgb8, got {msg.encoding}", throttle_duration_sec=5.0)
            return
        image = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.step)
        x = find_target(image[:, : msg.width * 3].reshape(msg.height, msg.width, 3), self.calib)
        if x is None:
            self._missed += 1
            return
        self._found += 1
        self._publish(x, msg.header)

    def _publish(self, x: float, header) -> None:
        stamp = header.stamp.sec + header.stamp.nanosec * 1e-9
        if self._last is not None and stamp > self._last[0]:
            raw = (x - self._last[1]) / (stamp - self._last[0])
            self._velocity += self.config.velocity_alpha * (raw - self._velocity)
        self._last = (stamp, x)
        out = JointState(header=header, name=[self.config.controlled_joint])
        out.position, out.velocity = [x], [self._velocity]
        self._pub.publish(out)


def main(args=None):
    """Runs the perception node until shutdown."""
    run_node(PerceptionNode, args)


if __name__ == "__main__":
    main()
