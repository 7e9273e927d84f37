"""Shared fixtures of the cloud brain tests: chunks, task files, a live server on 127.0.0.1:0."""

import pathlib
import sys

import pytest

HERE = pathlib.Path(__file__).resolve().parent
# cloud_testlib must be importable by spawn children and server subprocesses too.
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import cloud_testlib  # noqa: E402
from cloud_brain.experience.store import ExperienceStore  # noqa: E402
from cloud_brain.service.server import CloudServer  # noqa: E402
from cloud_brain.tasks import TaskSpec  # noqa: E402
from cloud_testlib import ACT_DIM, OBS_DIM  # noqa: E402


@pytest.fixture
def store(store_target):
    """An ExperienceStore on each backend the run covers (tests/conftest.py store_target)."""
    s = ExperienceStore(store_target)
    yield s
    s.close()


@pytest.fixture
def task_files(tmp_path):
    """Two tiny tasks with explicit dims: arm (3, 2) and crane (6, 1)."""
    arm = tmp_path / "arm.yaml"
    arm.write_text(f"name: arm\nobs_dim: {OBS_DIM}\nact_dim: {ACT_DIM}\n")
    crane = tmp_path / "crane.yaml"
    crane.write_text("name: crane\nobs_dim: 6\nact_dim: 1\n")
    return [str(arm), str(crane)]


@pytest.fixture
def tasks(task_files):
    return {
        "arm": TaskSpec("arm", task_files[0], OBS_DIM, ACT_DIM),
        "crane": TaskSpec("crane", task_files[1], 6, 1),
    }


@pytest.fixture
def cloud_config(tmp_path, task_files):
    return cloud_testlib.base_config(tmp_path, task_files)


@pytest.fixture
def server(cloud_config):
    srv = CloudServer(cloud_config, initial_model_fn=cloud_testlib.initial_model)
    srv.start()
    yield srv
    srv.stop(0.5)
