"""TensorBoard scalars of consolidation rounds.

Written by the real worker process, read back with tensorboard's own event reader (this process
never imports torch).
"""

import subprocess
import sys

import pytest
from cloud_brain.config import ScheduleConfig
from cloud_brain.experience.store import ExperienceStore
from cloud_brain.learning.scheduler import ConsolidationScheduler
from cloud_brain.learning.tensorboard_log import round_record, scalars
from cloud_brain.models.registry import ModelRegistry
from cloud_testlib import initial_model, make_batch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def _read(run_dir):
    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@pytest.mark.slow
def test_every_round_writes_its_scalars_through_the_worker(tmp_path, tasks):
    store = ExperienceStore(tmp_path / "cloud.db")
    registry = ModelRegistry(store)
    onnx, io = initial_model(tasks["arm"].file)
    registry.register("arm", onnx, io, status="active")
    schedule = ScheduleConfig(every_transitions=5, min_transitions=5, every_seconds=3600, round_timeout_seconds=120)
    scheduler = ConsolidationScheduler(
        store,
        registry,
        {"arm": tasks["arm"]},
        schedule,
        "cloud_testlib:gated_round",
        seed=0,
        tensorboard_dir=str(tmp_path / "tb"),
    )
    try:
        for k in range(3):  # seeds 1, 2, 3: rejected, accepted, rejected
            store.append(make_batch(first_seq=1 + 6 * k, n=6))
            scheduler.run_round("arm")
    finally:
        scheduler.stop()  # closes the worker, which flushed after every round
        store.close()
    tb = _read(tmp_path / "tb" / "arm")
    assert tb["round/accepted"] == [(1, 0.0), (2, 1.0), (3, 0.0)]
    assert tb["round/version"] == [(1, 2.0), (2, 3.0), (3, 4.0)]
    assert tb["round/parent_version"] == [(1, 1.0), (2, 1.0), (3, 3.0)]
    assert [v for _, v in tb["training/loss_last"]] == [1.0, 2.0, 3.0]
    assert [v for _, v in tb["meta/l0/eta"]] == pytest.approx([0.01, 0.02, 0.03])
    # Gate cost per scenario and version: the parent's every round, the accepted candidate's once.
    assert tb["gate/payload/v1"] == [(1, pytest.approx(1.5)), (2, pytest.approx(2.5))]
    # v3 accepted at alpha 0.5 in round 2, then it is round 3's parent.
    assert tb["gate/payload/v3"] == [(2, pytest.approx(2.4)), (3, pytest.approx(3.5))]
    assert tb["gate/nominal/v3"] == [(2, pytest.approx(2.3)), (3, pytest.approx(3.4))]
    assert "gate/nominal/v2" not in tb and "gate/nominal/v4" not in tb  # rejected candidates
    assert [s for s, _ in tb["gate_tried/payload/alpha_1"]] == [1, 2, 3]
    assert "round_seconds" in tb and "note" not in tb


def test_the_server_side_never_imports_torch():
    """The scheduler and the record builder live in the server; only the worker writes with torch."""
    probe = (
        "import sys, cloud_brain.service.server, cloud_brain.learning.scheduler, "
        "cloud_brain.learning.tensorboard_log; print('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_scalars_tolerate_missing_and_unknown_keys():
    bare = scalars(round_record("arm", 1, 1, 2, True, 0, 10, None))
    assert bare == {
        "round/accepted": 1.0,
        "round/failed": 0.0,
        "round/parent_version": 1.0,
        "round/version": 2.0,
        "round/experience_rows": 10.0,
    }
    odd = scalars(
        round_record(
            "arm",
            1,
            1,
            0,
            False,
            0,
            10,
            {"gate": {"parent": "n/a", "tried": "x"}, "new": {"thing": [1, float("nan"), True]}},
            error="crashed",
        )
    )
    assert odd["round/failed"] == 1.0
    assert odd["new/thing/0"] == 1.0 and odd["new/thing/2"] == 1.0 and "new/thing/1" not in odd
    assert not any(tag.startswith("gate/") and tag.count("/") == 2 for tag in odd)
