"""Fixtures of the robot tests."""

import pytest
from policy_models import export_models


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two real kuka_track policies (ONNX), exported once per test module."""
    return export_models(tmp_path_factory.mktemp("models"), count=2)
