"""The policy node's plain parts, without DDS.

The model loader, the observation builder, the tick statistics, and the two typed announcements
with their codecs.
"""

import hashlib
import json
import logging

import numpy as np
import pytest
from nestor_core.announcements import AnnouncementError, ModelAnnouncement, RollbackReport
from nestor_robot.model_loader import ModelLoader
from nestor_robot.observation import ObservationBuilder
from nestor_robot.tick_stats import TickStats
from policy_models import JOINTS, export_models


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return export_models(tmp_path_factory.mktemp("models"), count=2)


def _announce(path, version, **extra) -> str:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return ModelAnnouncement(version=version, path=str(path), sha256=digest, task="kuka_track", **extra).encode()


# ---------------------------------------------------------------------- the model loader


def test_loader_verifies_and_holds_the_newest_in_the_pending_slot(models):
    loader = ModelLoader("kuka_track", log=logging.getLogger("test"))
    running = loader.load_initial(str(models[0]), 1)
    assert running.version == 1 and loader.newest_seen == 1
    assert loader.offer(_announce(models[1], 2), running).version == 2
    assert loader.offer(_announce(models[0], 3), running).version == 3  # the newest replaces an older pending one
    assert loader.pending.version == 3
    assert loader.take().version == 3 and loader.pending is None and loader.take() is None
    assert loader.rejected == 0 and loader.reject_log == []


def test_loader_ordering_downgrade_and_rolled_back_versions(models):
    loader = ModelLoader("kuka_track")
    running = loader.load_initial(str(models[0]), 5)
    assert loader.offer(_announce(models[1], 4), running) is None  # not newer than 5: ignored
    assert loader.offer(_announce(models[1], 5), running) is None
    assert loader.offer(_announce(models[1], 4, downgrade=True), running).version == 4  # the cloud took 5 back
    loader.take()
    loader.mark_bad(6)
    assert loader.offer(_announce(models[1], 6), running) is None  # rolled back here: never again
    assert loader.offer(_announce(models[1], 6, downgrade=True), running) is None
    other = ModelAnnouncement(version=9, path=str(models[1]), sha256="0" * 64, task="crane").encode()
    assert loader.offer(other, running) is None  # another task's lineage: ignored, not refused
    assert loader.rejected == 0
    loader.adopted(8)
    assert loader.offer(_announce(models[1], 7), running) is None


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("not json", "bad_announcement"),
        (json.dumps({"version": "x", "path": "p", "sha256": "s"}), "bad_announcement"),
        (json.dumps({"path": "p", "sha256": "s"}), "bad_announcement"),
        (json.dumps({"version": 2, "path": "/nonexistent.onnx", "sha256": "0" * 64}), "unreadable"),
    ],
)
def test_loader_refuses_with_a_reason_and_keeps_the_running_model(models, raw, reason):
    loader = ModelLoader("kuka_track")
    running = loader.load_initial(str(models[0]), 1)
    assert loader.offer(raw, running) is None and loader.pending is None
    assert loader.rejected == 1 and [r["reason"] for r in loader.reject_log] == [reason]


def test_loader_refuses_a_wrong_digest_and_a_wrong_task(models, tmp_path):
    loader = ModelLoader("kuka_track")
    running = loader.load_initial(str(models[0]), 1)
    bad = ModelAnnouncement(version=2, path=str(models[1]), sha256="0" * 64).encode()
    assert loader.offer(bad, running) is None
    assert loader.reject_log[-1]["reason"] == "sha256_mismatch"
    crane = ModelLoader("crane")
    with pytest.raises(Exception, match="task") as err:
        crane.load_initial(str(models[0]), 1)
    assert err.value.reason == "task_mismatch"
    for _ in range(25):
        loader.offer("{", running)
    assert loader.rejected == 26 and len(loader.reject_log) == 20  # the newest 20 are kept


# ---------------------------------------------------------------------- the typed announcements


def test_model_announcement_codec_round_trips_and_keeps_its_wire_format():
    update = ModelAnnouncement(version=7, path="/m/kuka_track-v7.onnx", sha256="ab" * 32, task="kuka_track", parent=6)
    assert json.loads(update.encode()) == {
        "version": 7,
        "path": "/m/kuka_track-v7.onnx",
        "sha256": "ab" * 32,
        "task": "kuka_track",
        "parent": 6,
    }  # no downgrade key unless one
    assert ModelAnnouncement.decode(update.encode()) == update
    down = ModelAnnouncement(version=3, path="p", sha256="s", downgrade=True)
    assert json.loads(down.encode())["downgrade"] is True and ModelAnnouncement.decode(down.encode()) == down
    info = {"version": 2, "path": "p", "sha256": "s", "task": "t", "parent": 1, "extra": "ignored"}
    assert ModelAnnouncement.from_info(info) == ModelAnnouncement(2, "p", "s", "t", 1)
    for raw, field in [
        ("[]", "expected a JSON object"),
        ('{"path": "p", "sha256": "s"}', "version: missing"),
        ('{"version": "two", "path": "p", "sha256": "s"}', "version"),
    ]:
        with pytest.raises(AnnouncementError, match=field):
            ModelAnnouncement.decode(raw)


def test_rollback_report_codec_round_trips():
    report = RollbackReport(
        robot_id="r0",
        task="kuka_track",
        version=3,
        reverted_to=2,
        reason="worse",
        pre_cost=0.1,
        post_cost=0.3,
        window_ticks=200,
        tick=1234,
        wall_time=1.5,
    )
    assert RollbackReport.decode(report.encode()) == report
    assert json.loads(report.encode()) == report.to_dict()
    assert RollbackReport.decode('{"version": 4}') == RollbackReport("", "", 4, 0)
    with pytest.raises(AnnouncementError, match="policy/rollback: version: missing"):
        RollbackReport.decode('{"reason": "x"}')


# ---------------------------------------------------------------------- observation and tick statistics


def _f64(values):
    import array

    return array.array("d", values)


def test_observation_builder_maps_joints_by_name_and_names_a_bad_message():
    controlled, passive = JOINTS[:2], ("cart",)
    builder = ObservationBuilder(obs_dim=4 * 2 + 2, act_dim=2)
    assert not builder.have_target
    assert builder.set_target(["x"], _f64([0.0]), _f64([0.0]), controlled) == f"target: joint {JOINTS[0]!r} missing"
    names = [JOINTS[1], JOINTS[0]]
    assert builder.set_target(names, _f64([2.0, 1.0]), _f64([0.2, 0.1]), controlled) is None and builder.have_target
    state = ["cart", JOINTS[1], "extra", JOINTS[0]]
    assert builder.fill(state, _f64([9.0, 4.0, 0.0, 3.0]), _f64([0.9, 0.4, 0.0, 0.3]), controlled, passive) is None
    assert builder.obs.tolist() == pytest.approx([3.0, 4.0, 0.3, 0.4, 1.0, 2.0, 0.1, 0.2, 9.0, 0.9])
    assert builder.fill(state[:3], _f64([1, 2, 3]), _f64([1, 2, 3]), controlled, passive) == (
        f"joint_states: joint {JOINTS[0]!r} missing"
    )
    assert builder.fill(state, _f64([1, 2, 3, 4]), _f64([1, 2]), controlled, passive) == (
        "joint_states: 4 names but 4 positions, 2 velocities"
    )
    assert builder.set_target(names, _f64([1.0]), _f64([1.0, 2.0]), controlled) == (
        "target: 2 names but 1 positions, 2 velocities"
    )


def test_tick_stats_count_missed_ticks_and_percentiles():
    stats = TickStats(control_rate_hz=100.0, samples=4)
    assert stats.percentiles() == {"n": 0, "p50": None, "p90": None, "p99": None, "max": None}
    stats.started(0.0, 10.00, 0)
    stats.started(0.01, 10.01, 1)
    stats.started(0.05, 10.05, 2)  # 40 ms after the previous: missed
    assert stats.missed_ticks == 1 and stats.max_gap_s == pytest.approx(0.04)
    assert stats.missed_log[0]["tick"] == 2 and stats.missed_log[0]["stamp_gap_ms"] == pytest.approx(40.0)
    stats.pause()
    stats.started(5.0, 15.0, 3)  # after a deactivation: no missed tick
    assert stats.missed_ticks == 1
    for seconds in (1e-3, 2e-3, 3e-3, 4e-3, 5e-3):
        stats.computed(seconds)
    p = stats.percentiles()
    assert p["n"] == 4 and p["max"] == pytest.approx(5000.0)  # a ring of the newest 4 (1 ms was overwritten)
    assert np.isclose(p["p50"], np.percentile([5000.0, 2000.0, 3000.0, 4000.0], 50))
