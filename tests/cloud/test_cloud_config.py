"""CloudConfig loading and validation; task files."""

import pathlib

import pytest
from cloud_brain.config import CloudConfig, ConfigError, config_from_dict, load_config
from cloud_brain.tasks import load_task, load_tasks

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_repo_defaults_load_and_match_the_dataclass():
    config = load_config(REPO / "config" / "cloud.yaml")
    assert config == CloudConfig().validate()
    assert config.address == "127.0.0.1:50051"


def test_overrides_replace_fields(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("address: 127.0.0.1:7000\nschedule: {every_transitions: 10}\n")
    config = load_config(path, address="127.0.0.1:0", db_path=None)
    assert config.address == "127.0.0.1:0"
    assert config.schedule.every_transitions == 10
    assert config.schedule.every_seconds == 600.0


@pytest.mark.parametrize(
    "values, field",
    [
        ({"adress": "x"}, "adress: unknown field"),
        ({"address": "nope"}, "address:"),
        ({"max_workers": 8}, "max_workers:"),
        ({"max_workers": "many"}, "max_workers: expected int"),
        ({"schedule": {"every_seconds": 0}}, "schedule.every_seconds:"),
        ({"schedule": {"bogus": 1}}, "schedule.bogus: unknown field"),
        ({"task_files": "a.yaml"}, "task_files:"),
        ({"consolidate": "no_colon"}, "consolidate:"),
        ({"consolidation": {"steps": "many"}}, "consolidation.steps: expected int"),
        ({"consolidation": {"replay_fraction": 1.5}}, "consolidation.replay_fraction:"),
        ({"consolidation": {"meta_window": 99}}, "consolidation.meta_window:"),
        ({"consolidation": {"blend_steps": "1.0"}}, "consolidation.blend_steps: expected a list of numbers"),
        ({"consolidation": {"gate_shifts": [1]}}, "consolidation.gate_shifts: expected a list of strings"),
        ({"consolidation": {"stepz": 1}}, "consolidation.stepz: unknown field"),
    ],
)
def test_errors_name_the_field(values, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        config_from_dict(values)


def test_unreadable_config_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="config: cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_repo_task_files_give_policy_dims():
    tasks = load_tasks([str(REPO / "config/tasks/kuka_track.yaml"), str(REPO / "config/tasks/crane.yaml")])
    assert (tasks["kuka_track"].obs_dim, tasks["kuka_track"].act_dim) == (28, 7)
    assert (tasks["crane"].obs_dim, tasks["crane"].act_dim) == (6, 1)


def test_explicit_dims_and_duplicates(tmp_path):
    a = tmp_path / "a.yaml"
    a.write_text("name: t\nobs_dim: 4\nact_dim: 2\n")
    assert load_task(a).obs_dim == 4
    with pytest.raises(ConfigError, match="defined twice"):
        load_tasks([str(a), str(a)])
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: t\nobs_dim: -1\n")
    with pytest.raises(ConfigError, match="obs_dim"):
        load_task(bad)
