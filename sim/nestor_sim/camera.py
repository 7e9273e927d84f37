"""A fixed side camera rendered with the TinyRenderer, and a visual-only target marker.

The camera looks along +y at the plane y = marker_y, so on that plane x maps linearly to the
image column. ``calibration`` gives that map; ``nestor_robot.perception`` implements the same
formula (it must not import pybullet) and a test checks they agree.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from nestor_sim.task_spec import CameraSpec

# Pure red is unambiguous in HSV; nothing else in the scenes is red.
MARKER_RGBA = (1.0, 0.0, 0.0, 1.0)


def calibration(camera: CameraSpec) -> dict[str, float]:
    """Pixel column -> x (m) on the marker plane: ``x = center_x + (col - width/2) * mpp``.

    ``col`` is a column index as in OpenCV moments. The TinyRenderer samples pixel i at NDC
    column i (not i + 0.5), hence no half-pixel offset; measured on rendered images.

    Returns:
        {"center_x": m, "metres_per_px": m, "width": px}.
    """
    # computeProjectionMatrixFOV takes the vertical FOV; square pixels give the horizontal one.
    metres_per_px = 2.0 * camera.distance * math.tan(math.radians(camera.fov_deg) / 2.0)
    return {
        "center_x": camera.center_x,
        "metres_per_px": metres_per_px / camera.height,
        "width": float(camera.width),
    }


def x_to_column(x: float, camera: CameraSpec) -> float:
    """Inverse of ``calibration``: the (fractional) column where x appears."""
    cal = calibration(camera)
    return (x - cal["center_x"]) / cal["metres_per_px"] + cal["width"] / 2.0


class Camera:
    """Renders RGB images of one bullet client from the fixed camera of a ``CameraSpec``.

    Args:
        client: The env's ``BulletClient``.
        spec: Camera configuration.
    """

    def __init__(self, client: Any, spec: CameraSpec):
        self._p, self.spec = client, spec
        eye = (spec.center_x, spec.marker_y - spec.distance, spec.center_z)
        target = (spec.center_x, spec.marker_y, spec.center_z)
        self._view = client.computeViewMatrix(eye, target, (0.0, 0.0, 1.0))
        self._proj = client.computeProjectionMatrixFOV(
            spec.fov_deg, spec.width / spec.height, 0.05, spec.distance * 4.0
        )
        self._marker = None
        if spec.marker != "none":
            shape = client.createVisualShape(
                client.GEOM_BOX,
                # Thin along y: a flat face towards the camera renders as a uniform rectangle.
                halfExtents=(spec.marker_half_width, 0.005, spec.marker_half_height),
                rgbaColor=MARKER_RGBA,
            )
            # Visual only (no collision shape, zero mass): it never touches the dynamics.
            self._marker = client.createMultiBody(
                baseMass=0.0,
                baseCollisionShapeIndex=-1,
                baseVisualShapeIndex=shape,
                basePosition=(spec.center_x, spec.marker_y, spec.marker_z),
            )

    def render(self, marker_x: float | None = None) -> np.ndarray:
        """Moves the marker to ``marker_x`` (if given) and returns an (H, W, 3) uint8 RGB image."""
        if self._marker is not None and marker_x is not None:
            self._p.resetBasePositionAndOrientation(
                self._marker,
                (float(marker_x), self.spec.marker_y, self.spec.marker_z),
                (0.0, 0.0, 0.0, 1.0),
            )
        _, _, rgba, _, _ = self._p.getCameraImage(
            self.spec.width,
            self.spec.height,
            self._view,
            self._proj,
            renderer=self._p.ER_TINY_RENDERER,
        )
        rgba = np.asarray(rgba, dtype=np.uint8).reshape(self.spec.height, self.spec.width, 4)
        return np.ascontiguousarray(rgba[:, :, :3])
