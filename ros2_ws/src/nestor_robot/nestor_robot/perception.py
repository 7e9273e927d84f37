"""Find the red target marker in an RGB image and convert its column to metres.

Pure numpy + OpenCV; no ROS and no pybullet, so it is tested on plain arrays.

Calibration: the sim's side camera looks along +y at the marker plane from ``depth`` metres with
vertical field of view ``fov_deg``; on that plane x maps linearly to the column::

    x = center_x + (col - width / 2) * metres_per_px,
    metres_per_px = 2 * depth * tan(fov_deg / 2) / height

(the same formula as ``nestor_sim.camera.calibration``; a sim test checks they agree).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np

# OpenCV hue runs 0..179 and red wraps around 0, hence two bands.
_RED_BANDS = (((0, 120, 70), (10, 255, 255)), ((170, 120, 70), (179, 255, 255)))


@dataclasses.dataclass(frozen=True)
class CameraCalibration:
    """Linear map from image column to x (m) on the marker plane.

    Attributes:
        center_x: x on the optical axis (m).
        metres_per_px: Width of one pixel on the marker plane (m).
        width: Image width (px).
        min_area_px: Blobs smaller than this are ignored as noise.
    """

    center_x: float
    metres_per_px: float
    width: int
    min_area_px: float = 2.0

    @classmethod
    def from_camera(
        cls, width: int, height: int, fov_deg: float, depth: float, center_x: float = 0.0
    ) -> CameraCalibration:
        """Builds the calibration from the camera geometry (as in the task YAML ``camera``)."""
        if width <= 0 or height <= 0 or not 0 < fov_deg < 180 or depth <= 0:
            raise ValueError(f"camera: invalid geometry width={width} height={height} fov_deg={fov_deg} depth={depth}")
        mpp = 2.0 * depth * math.tan(math.radians(fov_deg) / 2.0) / height
        return cls(center_x=center_x, metres_per_px=mpp, width=width)

    @classmethod
    def from_task_camera(cls, camera: Mapping[str, Any]) -> CameraCalibration:
        """Builds it from the ``camera`` mapping of a task YAML (defaults as in nestor_sim)."""
        return cls.from_camera(
            width=int(camera.get("width", 96)),
            height=int(camera.get("height", 64)),
            fov_deg=float(camera.get("fov_deg", 60.0)),
            depth=float(camera.get("distance", 3.0)),
            center_x=float(camera.get("center_x", 0.0)),
        )

    def column_to_x(self, column: float) -> float:
        """Converts a (fractional) column index to x (m)."""
        return self.center_x + (column - self.width / 2.0) * self.metres_per_px


def red_mask(image_rgb: np.ndarray) -> np.ndarray:
    """Returns the uint8 mask (0/255) of saturated red pixels of an (H, W, 3) RGB image."""
    hsv = cv2.cvtColor(np.ascontiguousarray(image_rgb, dtype=np.uint8), cv2.COLOR_RGB2HSV)
    mask = np.zeros(hsv.shape[:2], dtype=np.uint8)
    for low, high in _RED_BANDS:
        mask |= cv2.inRange(hsv, np.array(low, np.uint8), np.array(high, np.uint8))
    return mask


def find_target(image_rgb: np.ndarray, calib: CameraCalibration) -> float | None:
    """Returns the x (m) of the red marker in ``image_rgb``, or None if there is none.

    Takes the largest red contour and its centroid from image moments, then the calibration.

    Args:
        image_rgb: (H, W, 3) uint8 RGB image.
        calib: Column -> x calibration of the camera that took it.
    """
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
        raise ValueError(f"image_rgb: expected shape (H, W, 3), got {image_rgb.shape}")
    contours, _ = cv2.findContours(red_mask(image_rgb), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return None
    blob = max(contours, key=cv2.contourArea)
    # Filled-blob moments: contour moments of a few-pixel blob are biased by the outline.
    mask = np.zeros(image_rgb.shape[:2], dtype=np.uint8)
    cv2.drawContours(mask, [blob], -1, 255, thickness=cv2.FILLED)
    moments = cv2.moments(mask, binaryImage=True)
    if moments["m00"] < calib.min_area_px:
        return None
    return calib.column_to_x(moments["m10"] / moments["m00"])
