"""Perception finds the rendered marker: real TinyRenderer images of the crane task."""

import numpy as np
import pytest
from nestor_robot.perception import CameraCalibration, find_target
from nestor_sim.camera import calibration
from nestor_sim.task import load_task
from nestor_sim.tracking_env import TrackingEnv


@pytest.fixture(scope="module")
def crane(crane_yaml):
    env = TrackingEnv(crane_yaml, render_mode="rgb_array")
    yield env
    env.close()


def test_calibrations_agree(crane_yaml):
    import yaml

    spec = load_task(crane_yaml)
    sim = calibration(spec.camera)
    robot = CameraCalibration.from_task_camera(yaml.safe_load(crane_yaml.read_text())["camera"])
    assert robot.metres_per_px == pytest.approx(sim["metres_per_px"])
    assert robot.center_x == sim["center_x"] and robot.width == sim["width"]


@pytest.mark.parametrize("x", [-2.0, -1.0, -0.37, 0.0, 0.5, 1.23, 2.0])
def test_find_target_on_rendered_images(crane, crane_yaml, x):
    calib = CameraCalibration.from_task_camera(load_task(crane_yaml).camera.__dict__)
    image = crane.render_camera(marker_x=x)
    assert image.shape == (64, 96, 3) and image.dtype == np.uint8
    found = find_target(image, calib)
    assert found is not None
    assert found == pytest.approx(x, abs=0.03)  # Rasterisation: within about half a pixel (0.054 m/px).


def test_follows_the_reference_while_the_cart_moves(crane, crane_yaml):
    calib = CameraCalibration.from_task_camera(load_task(crane_yaml).camera.__dict__)
    crane.reset()
    for _ in range(130):
        crane.step(np.array([5.0]))
    assert find_target(crane.render(), calib) == pytest.approx(crane.reference()[0][0], abs=0.03)


def test_no_marker_gives_none(crane, crane_yaml):
    calib = CameraCalibration.from_task_camera(load_task(crane_yaml).camera.__dict__)
    assert find_target(crane.render_camera(marker_x=50.0), calib) is None
    assert find_target(np.zeros((64, 96, 3), np.uint8), calib) is None
