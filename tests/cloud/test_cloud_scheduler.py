"""Consolidation schedule: the rule, one round's bookkeeping, a real spawn child, the thread."""

import dataclasses
import time

import pytest
from cloud_brain.config import ScheduleConfig, config_from_dict
from cloud_brain.experience.store import ExperienceStore
from cloud_brain.learning.round_config import ConsolidationConfig, config_from
from cloud_brain.learning.round_worker import RoundError, run_in_child
from cloud_brain.learning.scheduler import ConsolidationScheduler, round_due
from cloud_brain.models.registry import ModelRegistry
from cloud_testlib import initial_model, make_batch


@pytest.mark.parametrize(
    "new, elapsed, due",
    [(100, 0, True), (99, 0, False), (10, 60, True), (9, 60, False), (10, 59, False), (0, 1e9, False)],
)
def test_round_due(new, elapsed, due):
    schedule = ScheduleConfig(every_transitions=100, min_transitions=10, every_seconds=60)
    assert round_due(new, elapsed, schedule) is due


@pytest.fixture
def parts(tmp_path, tasks):
    store = ExperienceStore(tmp_path / "cloud.db")
    activated = []
    registry = ModelRegistry(store, on_activate=activated.append)
    onnx, io = initial_model(tasks["arm"].file)
    registry.register("arm", onnx, io, status="active")
    yield store, registry, activated
    store.close()


def make_scheduler(parts, tasks, consolidate="cloud_testlib:run_round", in_process=True, options=None, **schedule):
    """A scheduler of task arm; `schedule` overrides ScheduleConfig fields, `options` go to the scheduler."""
    store, registry, _ = parts
    config = ScheduleConfig(
        **{
            "every_transitions": 10,
            "min_transitions": 5,
            "every_seconds": 3600,
            "poll_seconds": 0.05,
            "failure_backoff_seconds": 3600,
            **schedule,
        }
    )
    return ConsolidationScheduler(
        store, registry, {"arm": tasks["arm"]}, config, consolidate, in_process=in_process, **(options or {})
    )


def test_accepted_round_registers_and_activates_a_child(parts, tasks):
    store, registry, activated = parts
    scheduler = make_scheduler(parts, tasks)
    store.append(make_batch(first_seq=1, n=6))
    assert not scheduler.due("arm")
    store.append(make_batch(first_seq=7, n=6))
    assert scheduler.due("arm")
    model = scheduler.run_round("arm")
    assert (model.version, model.parent, model.status) == (2, 1, "active")
    assert (model.experience_from, model.experience_to) == (0, 2)
    assert model.onnx == registry.get(1).onnx + b"+round"
    assert model.metrics["transitions"] == 12
    assert model.io_signature == registry.get(1).io_signature
    assert registry.get(1).status == "retired"
    assert [m.version for m in activated] == [1, 2]
    assert store.round_count() == 1
    assert not scheduler.due("arm")  # the rows are used up
    store.append(make_batch(first_seq=13, n=10))
    assert scheduler.next_range("arm") == (2, 3)


def test_the_consolidation_section_goes_with_every_round_request(parts, tasks):
    store, registry, _ = parts
    round_config = config_from_dict({"consolidation": {"steps": 7, "blend_steps": [1.0, 0.5]}}).consolidation.round
    scheduler = make_scheduler(
        parts,
        tasks,
        consolidate="cloud_testlib:config_round",
        options={"round_config": dataclasses.asdict(round_config)},
        failure_backoff_seconds=ScheduleConfig().failure_backoff_seconds,
    )
    store.append(make_batch(first_seq=1, n=12))
    sent = scheduler.run_round("arm").metrics["config"]
    assert (sent["steps"], sent["blend_steps"], sent["batch_size"]) == (7, [1.0, 0.5], ConsolidationConfig().batch_size)
    assert config_from({"config": sent}) == round_config  # what the worker rebuilds


def test_rejected_round_keeps_the_active_version(parts, tasks):
    store, registry, activated = parts
    scheduler = make_scheduler(parts, tasks, consolidate="cloud_testlib:reject_round")
    store.append(make_batch(first_seq=1, n=12))
    model = scheduler.run_round("arm")
    assert (model.status, model.reason, model.parent) == ("rejected", "fake: worse", 1)
    assert registry.active("arm").version == 1
    assert [m.version for m in activated] == [1]
    assert store.round_count() == 1


def test_failed_round_is_recorded_and_backs_off(parts, tasks):
    store, registry, _ = parts
    scheduler = make_scheduler(parts, tasks, consolidate="cloud_testlib:crash_round", in_process=False)
    store.append(make_batch(first_seq=1, n=12))
    assert scheduler.run_round("arm") is None
    assert store.round_count() == 0 and store.round_count(include_failed=True) == 1
    error = store.query("SELECT error FROM rounds")[0][0]
    assert "fake consolidation crashed" in error
    assert not scheduler.due("arm")  # backing off
    assert [m.version for m in registry.list("arm")] == [1]


def test_child_is_spawned_niced_with_one_torch_thread(tmp_path):
    store = ExperienceStore(tmp_path / "x.db")
    store.close()
    request = {
        "db_path": str(tmp_path / "x.db"),
        "task": "arm",
        "parent_onnx": b"p",
        "experience_from": 0,
        "experience_to": 0,
    }
    result = run_in_child("cloud_testlib:run_round", request, timeout=120)
    assert result["onnx"] == b"p+round"
    assert result["metrics"]["nice"] >= 10
    assert result["metrics"]["torch_threads"] == 1
    import os

    assert result["metrics"]["pid"] != os.getpid()
    with pytest.raises(RoundError, match="timed out"):
        run_in_child("time:sleep", 30, timeout=0.5)


def test_thread_runs_rounds_when_due(parts, tasks):
    store, registry, activated = parts
    scheduler = make_scheduler(parts, tasks, in_process=False)
    scheduler.start()
    try:
        store.append(make_batch(first_seq=1, n=12))
        deadline = time.monotonic() + 60
        while len(activated) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        scheduler.stop()
        scheduler.stop()
    assert [m.version for m in activated] == [1, 2]
    assert registry.active("arm").metrics["nice"] >= 10
