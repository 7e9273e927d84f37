"""Shared fixtures of the sim tests."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TASKS = REPO / "config" / "tasks"


@pytest.fixture(scope="session")
def kuka_yaml() -> Path:
    return TASKS / "kuka_track.yaml"


@pytest.fixture(scope="session")
def crane_yaml() -> Path:
    return TASKS / "crane.yaml"


@pytest.fixture(scope="session")
def xarm_yaml() -> Path:
    return TASKS / "xarm6.yaml"
