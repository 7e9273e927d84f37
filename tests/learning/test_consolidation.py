"""One real consolidation round: fleet experience in a real SQLite store -> torch -> gated ONNX."""

import numpy as np
import pytest
from cloud_brain.experience.store import ExperienceStore
from cloud_brain.learning.consolidation import run_round
from cloud_brain.learning.evaluation import collect_experience, rollout
from cloud_brain.learning.policy_export import initial_model
from cloud_brain.learning.round_config import ConsolidationConfig
from nestor_core.policy_model import load_model
from nestor_core.policy_runtime import RuntimeConfig
from nestor_sim.tracking_env import TrackingEnv


def _request(tmp_path, task_file, parent, experience_to: int, seed: int) -> dict:
    """A round request over the store in tmp_path, rows 0..experience_to, from parent version 1."""
    return {
        "db_path": str(tmp_path / "nestor.db"),
        "task": "kuka_track",
        "task_file": task_file,
        "parent_version": 1,
        "parent_onnx": parent,
        "experience_from": 0,
        "experience_to": experience_to,
        "seed": seed,
    }


@pytest.mark.slow
def test_round_learns_what_the_fast_memory_learned(tmp_path, kuka_task_file):
    parent, _ = initial_model(kuka_task_file)
    env = TrackingEnv(kuka_task_file)
    store = ExperienceStore(tmp_path / "nestor.db")
    try:
        for i, shift in enumerate(["payload:4.0@8", "actuator_gain:0.5@8"]):
            for batch in collect_experience(parent, env, f"robot{i}", shifts=[shift], seed=i, ticks=2000):
                store.append(batch)
        assert store.count_transitions("kuka_track") == 4000
        request = _request(tmp_path, kuka_task_file, parent, store.max_row_id(), seed=1)
        request["config"] = {"steps": 300, "eval_ticks": 600}
        result = run_round(request)
        assert result["accepted"], result["reason"]
        gate = result["metrics"]["gate"]
        assert set(gate["parent"]) == {"nominal", "payload:4"}
        tried = gate["tried"][-1]["costs"]
        assert all(tried[k] <= gate["parent"][k] * 1.05 for k in tried)
        assert result["metrics"]["training"]["loss_last"] < result["metrics"]["training"]["loss_first"]
        # The slow weights alone (L0 frozen) now carry what the fast memories learned.
        frozen = RuntimeConfig(l0_step_scale=0.0)
        shifted = ["payload:4.0@0"]
        before = rollout(load_model(parent), env, shifted, 0, 600, frozen).cost.mean()
        after = rollout(load_model(result["onnx"]), env, shifted, 0, 600, frozen).cost.mean()
        assert after < 0.7 * before, (before, after)
    finally:
        store.close()
        env.close()


def test_round_with_too_little_data_keeps_the_parent(tmp_path, kuka_task_file):
    parent, _ = initial_model(kuka_task_file)
    store = ExperienceStore(tmp_path / "nestor.db")
    store.close()
    result = run_round(_request(tmp_path, kuka_task_file, parent, 0, seed=0))
    assert not result["accepted"] and "usable transitions" in result["reason"]
    assert result["onnx"] == parent


def test_config_rejects_unknown_fields():
    with pytest.raises(TypeError):
        ConsolidationConfig(**{"stepz": 3})
    assert np.isclose(ConsolidationConfig().gate_tolerance, 0.05)
