"""Tests that import torch (the cloud's learner).

`make test` runs this folder in its own pytest process, so torch and rclpy never share an
interpreter (the house rule for every process).
"""

import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
KUKA = str(REPO / "config" / "tasks" / "kuka_track.yaml")


@pytest.fixture(scope="session")
def kuka_task_file() -> str:
    return KUKA
