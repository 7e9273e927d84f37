"""The gymnasium ids: made through gymnasium's registry, checked by gymnasium's own checker."""

import warnings
from importlib.metadata import entry_points

import gymnasium
import nestor_sim  # noqa: F401  (registers the ids)
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from nestor_sim.register import TASK_IDS, TRACK_ID, task_dir

ALL_TASK_FILES = sorted(task_dir().glob("*.yaml"))


def _check(env) -> None:
    # The passive checker that gymnasium.make wraps around the env must not warn either.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        env.reset(seed=0)
        env.step(env.action_space.sample())
    check_env(env.unwrapped, skip_render_check=True)


@pytest.mark.parametrize("env_id", sorted(TASK_IDS))
def test_fixed_ids_pass_the_checker(env_id):
    assert env_id in gymnasium.registry
    env = gymnasium.make(env_id)
    try:
        assert env.unwrapped.task.name == TASK_IDS[env_id].removesuffix(".yaml")
        assert env.spec.id == env_id
        _check(env)
    finally:
        env.close()


@pytest.mark.parametrize("task_file", ALL_TASK_FILES, ids=lambda p: p.name)
def test_track_id_takes_every_task_file(task_file):
    env = gymnasium.make(TRACK_ID, task_file=str(task_file))
    try:
        assert env.unwrapped.task.name == task_file.stem
        assert env.observation_space.shape == (env.unwrapped.task.obs_dim,)
        _check(env)
    finally:
        env.close()


def test_module_prefix_form_and_the_entry_point_group():
    env = gymnasium.make("nestor_sim:nestor/Crane-v0")
    env.close()
    group = {ep.name: ep.value for ep in entry_points(group="gymnasium.envs")}
    assert group.get("nestor") == "nestor_sim.register:register_envs"


def test_shifts_as_reset_options_fire_and_reset_reverts():
    env = gymnasium.make("nestor/Crane-v0")
    try:
        _, info = env.reset(seed=1, options={"shifts": ["payload:2.0@0.05#pole"]})
        fired = []
        for _ in range(10):
            *_, info = env.step(np.zeros(1, np.float32))
            fired += info["shift_events"]
        assert [(e["type"], e["tick"]) for e in fired] == [("payload", 5)]
        _, info = env.reset(options={"shifts": []})
        for _ in range(10):
            *_, info = env.step(np.zeros(1, np.float32))
            assert info["shift_events"] == []
        assert info["shifts_active"] == []
    finally:
        env.close()


def test_make_time_shift_schedule_is_the_default_for_every_reset():
    env = gymnasium.make("nestor/KukaTrack-v0", shifts=["damping:1.0@0#lbr_iiwa_joint_2"])
    try:
        _, info = env.reset(seed=0)
        assert [s["type"] for s in info["shifts_active"]] == ["damping"]
    finally:
        env.close()


def test_bad_arguments_name_the_field(tmp_path):
    with pytest.raises(ValueError, match="task_file: required"):
        gymnasium.make(TRACK_ID)
    with pytest.raises(ValueError, match="task_file: no such file"):
        gymnasium.make(TRACK_ID, task_file=str(tmp_path / "missing.yaml"))
    with pytest.raises(ValueError, match="unknown shift .nope."):
        gymnasium.make("nestor/Crane-v0", shifts=["nope:1"])
