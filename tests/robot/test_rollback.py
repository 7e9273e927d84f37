"""Automatic rollback, plain logic: the moving-average judge and the weight-sync side of a report."""

import json
import sys
from pathlib import Path

import pytest
from nestor_robot.rollback import RollbackMonitor

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cloud"))


def feed(monitor, costs):
    verdicts = [monitor.observe(c) for c in costs]
    return [v for v in verdicts if v is not None]


def test_worse_model_is_rolled_back_after_one_window():
    m = RollbackMonitor(window_ticks=10, margin=0.5)
    assert feed(m, [1.0] * 25) == []
    m.on_swap(1, 2)
    assert m.judging == 2
    assert feed(m, [1.6] * 9) == []  # not judged before the window is full
    [verdict] = feed(m, [1.6])
    assert (verdict.version, verdict.previous) == (2, 1)
    assert verdict.pre_cost == pytest.approx(1.0) and verdict.post_cost == pytest.approx(1.6)
    assert "after the swap" in verdict.reason
    assert m.judging is None and feed(m, [9.0] * 30) == []  # judged once


@pytest.mark.parametrize("post, rolled_back", [(1.49, False), (1.51, True), (0.2, False)])
def test_margin_is_relative_to_the_pre_swap_average(post, rolled_back):
    m = RollbackMonitor(window_ticks=5, margin=0.5)
    feed(m, [1.0] * 5)
    m.on_swap(3, 4)
    assert bool(feed(m, [post] * 5)) is rolled_back


def test_pre_swap_average_is_the_moving_window():
    m = RollbackMonitor(window_ticks=4, margin=0.1)
    feed(m, [100.0] * 10 + [1.0] * 4)  # only the last 4 count
    m.on_swap(1, 2)
    [verdict] = feed(m, [2.0] * 4)
    assert verdict.pre_cost == pytest.approx(1.0)


def test_no_judgement_without_a_baseline_or_when_off():
    m = RollbackMonitor(window_ticks=10, margin=0.1)
    feed(m, [1.0] * 3)
    m.on_swap(1, 2)  # only 3 pre-swap ticks
    assert feed(m, [50.0] * 20) == []
    m.on_swap(None, 1)  # the initial model
    assert feed(m, [50.0] * 20) == []
    for window, margin in ((0, 0.5), (10, 0.0)):
        off = RollbackMonitor(window, margin)
        feed(off, [1.0] * 20)
        off.on_swap(1, 2)
        assert not off.enabled and feed(off, [99.0] * 20) == []


def test_bad_parameters_name_themselves():
    with pytest.raises(ValueError, match="rollback_window_ticks"):
        RollbackMonitor(-1, 0.1)
    with pytest.raises(ValueError, match="rollback_margin"):
        RollbackMonitor(10, -0.1)


def test_weight_sync_reports_bad_to_the_cloud_and_never_adopts_it_again(tmp_path, task_files_arm):
    from cloud_brain.config import CloudConfig, ScheduleConfig
    from cloud_brain.service.server import CloudServer
    from cloud_testlib import initial_model
    from nestor_core import nestor_pb2
    from nestor_robot.weight_sync import WeightSync

    config = CloudConfig(
        address="127.0.0.1:0",
        db_path=str(tmp_path / "c.db"),
        model_dir="",
        task_files=[task_files_arm],
        schedule=ScheduleConfig(enabled=False),
        max_workers=256,
        initial_model="cloud_testlib:initial_model",
    ).validate()
    server = CloudServer(config, initial_model_fn=initial_model)
    server.start()
    try:
        active = server.registry.active("arm")

        def weight_sync() -> WeightSync:
            return WeightSync(
                server.address,
                "r7",
                "arm",
                str(tmp_path / "models"),
                lambda info: None,
                loader=lambda data, expected_sha256, version: None,
            )

        sync = weight_sync()
        assert sync.report_bad(active.version, "mean cost 3 vs 1 before") is True
        assert server.registry.bad_versions("r7") == {active.version}
        assert sync.stats()["bad_reports"] == 1
        # Persisted: a restarted weight sync refuses it too.
        again = weight_sync()
        assert again.bad_versions == {active.version}
        update = nestor_pb2.ModelUpdate(version=active.version, task="arm", sha256=active.sha256, onnx=active.onnx)
        assert again.handle_update(update) is None
        assert again.stats()["rejected_by_reason"] == {"marked_bad": 1}
        assert json.loads((tmp_path / "models" / "bad_versions.json").read_text()) == [active.version]
        # An unknown version is refused by the cloud without endless retries.
        assert sync.report_bad(999, "x", attempts=3) is False
        assert sync.stats()["bad_report_errors"] == 1
    finally:
        server.stop(0.5)


@pytest.fixture
def task_files_arm(tmp_path):
    path = tmp_path / "arm.yaml"
    path.write_text("name: arm\nobs_dim: 3\nact_dim: 2\n")
    return str(path)


def test_weight_sync_flags_a_version_the_cloud_took_back_as_a_downgrade(tmp_path):
    import hashlib

    from nestor_core import nestor_pb2
    from nestor_robot.weight_sync import WeightSync

    announced = []
    sync = WeightSync(
        "127.0.0.1:1",
        "r1",
        "arm",
        str(tmp_path / "models"),
        announced.append,
        loader=lambda data, expected_sha256, version: None,
    )

    def update(version):
        onnx = f"model-{version}".encode()
        return nestor_pb2.ModelUpdate(version=version, task="arm", sha256=hashlib.sha256(onnx).hexdigest(), onnx=onnx)

    sync.handle_update(update(1))
    sync.handle_update(update(2))
    sync.handle_update(update(1))  # a rejected canary: the cloud sends the previous version back
    assert [(a["version"], a.get("downgrade", False)) for a in announced] == [(1, False), (2, False), (1, True)]
