"""The demo report's live figures, on synthetic series whose figures are known by construction.

A unit test of the report logic: the series is built here instead of read from a run's store
(the e2e demo test reads a real one). Costs are piecewise constant per window and exact in binary
floating point, so every ratio is checked with ==.
"""

import types

import numpy as np
import pytest
from nestor_core import learning_metrics
from nestor_demo import demo_report, live_figures, report_markdown
from nestor_demo.demo_plot import log_limits, plot_cost

RATE = 100.0
T0 = 1000.0  # first stamp (a robot clock, not 0)
SHIFT_K = 3000  # the shift at 30 s
N = 6000  # 60 s
# Mean cost per window after the shift (pre-shift mean = 1.0), then 1.125 from 20 s on.
WINDOW_COST = {"0-0.5s": 8.0, "0.5-1s": 4.0, "1-2s": 3.0, "2-5s": 2.0, "5-10s": 1.5, "10-20s": 1.25}
LATE_COST = 1.125
SWAPS_K = ((1500, 1, 2), (5000, 2, 3))  # (tick, from, to)


def _series(n: int = N, post: dict | None = None) -> dict:
    """100 Hz, shift at tick 3000; 15-20 s before it cost 3 (0-15 s: 6); the 10 s before: 1."""
    post = WINDOW_COST if post is None else post
    k = np.arange(n)
    cost = np.full(n, LATE_COST)
    cost[k < SHIFT_K] = 1.0
    cost[k < SHIFT_K - 1000] = 3.0
    cost[k < SHIFT_K - 1500] = 6.0
    for name, lo, hi in learning_metrics.LIVE_WINDOWS_S:
        cost[(k >= SHIFT_K + round(lo * RATE)) & (k < SHIFT_K + round(hi * RATE))] = post[name]
    version = np.ones(n, np.int64)
    for tick, _, to in SWAPS_K:
        version[k >= tick] = to
    return {"seq": k + 1, "stamp": T0 + k / RATE, "cost": cost, "version": version}


def _drop(series: dict, *ranges) -> dict:
    keep = np.ones(len(series["stamp"]), bool)
    for lo, hi in ranges:
        keep[lo:hi] = False
    return {key: value[keep] for key, value in series.items()}


SHIFT_STAMP = T0 + SHIFT_K / RATE - 0.004  # the event is stamped a little before the tick's transition


def test_live_ratios_and_swaps_exact_on_a_regular_series():
    live = live_figures.robot_live(_series(), SHIFT_STAMP, RATE)
    assert live["indexing"].startswith("ticks") and live["gaps"] == 0
    assert live["pre_shift_cost"] == 1.0
    assert live["shift_s"] == pytest.approx(SHIFT_K / RATE)
    expected = {**WINDOW_COST, "last20s": (1.25 + LATE_COST) / 2}  # last 20 s = 10-20 s and 20-30 s
    assert live["post_pre_ratio"] == expected
    assert live["last20s"] == expected["last20s"]
    # v1 -> v2 at 15 s: 5 s at 6 before, 5 s at 3 after; v2 -> v3 at 50 s: 1.25 before, 1.125 after.
    assert [(s["from"], s["to"], s["ratio"]) for s in live["swaps"]] == [(1, 2, 0.5), (2, 3, LATE_COST / 1.25)]
    assert [s["t_s"] for s in live["swaps"]] == pytest.approx([15.0, 50.0])
    assert not any(s["rollback"] for s in live["swaps"])


def test_live_windows_follow_time_stamps_when_ticks_are_missing():
    # Missed ticks inside the first swap's window, the pre-shift window, the 1-2 s and 2-5 s windows,
    # and stamps that jitter by up to 2 ms as a real clock's do.
    gappy = _drop(_series(), (1200, 1210), (2500, 2530), (SHIFT_K + 120, SHIFT_K + 150), (SHIFT_K + 300, SHIFT_K + 380))
    gappy["stamp"] = gappy["stamp"] + np.random.default_rng(0).uniform(-0.002, 0.002, len(gappy["stamp"]))
    live = live_figures.robot_live(gappy, SHIFT_STAMP, RATE)
    assert live["indexing"] == "time stamps" and live["gaps"] == 4
    assert live["post_pre_ratio"] == {**WINDOW_COST, "last20s": (1.25 + LATE_COST) / 2}
    assert [w["ratio"] for w in live["swaps"]] == [0.5, LATE_COST / 1.25]
    # Counting ticks instead of seconds would have slid the later windows into the next ones.
    k = int(np.searchsorted(gappy["stamp"], SHIFT_STAMP))
    by_index = learning_metrics.window_ratios(gappy["cost"], 1.0, k, RATE, learning_metrics.LIVE_WINDOWS_S)
    assert by_index["5-10s"] != WINDOW_COST["5-10s"]


def test_live_windows_the_run_does_not_cover_are_not_measured():
    short = _series(n=SHIFT_K + 1500)  # ends 15 s after the shift
    live = live_figures.robot_live(short, SHIFT_STAMP, RATE)
    assert live["post_pre_ratio"]["5-10s"] == WINDOW_COST["5-10s"]
    assert live["post_pre_ratio"]["10-20s"] is None
    assert live["last20s"] is None  # the last 20 s would reach back before the shift
    assert live["swaps"][1:] == []  # the second swap is after the end
    no_shift = live_figures.robot_live(_series(), None, RATE)
    assert set(no_shift["post_pre_ratio"].values()) == {None} and len(no_shift["swaps"]) == 2
    assert live_figures.robot_live(None, SHIFT_STAMP, RATE)["swaps"] == []


def test_rollbacks_are_flagged_from_the_swap_log():
    s = _series()
    s["version"][s["version"] == 3] = 1  # v2 -> v1 at 50 s: a rollback
    log = [
        {"from_version": None, "to_version": 1},
        {"from_version": 1, "to_version": 2},
        {"from_version": 2, "to_version": 1, "rollback": True},
    ]
    live = live_figures.robot_live(s, SHIFT_STAMP, RATE, log)
    assert [(w["from"], w["to"], w["rollback"]) for w in live["swaps"]] == [(1, 2, False), (2, 1, True)]


def test_targets_of_issue_10_met_and_not_met():
    bad = live_figures.robot_live(_series(), SHIFT_STAMP, RATE)
    flat = dict.fromkeys(WINDOW_COST, 1.0)
    good = live_figures.robot_live(_series(post=flat), SHIFT_STAMP, RATE)
    targets = live_figures.targets({"robot0": bad, "robot1": good})
    assert targets["0.5-1s"]["met"] == {"robot0": False, "robot1": True}  # 4x vs <= 3x
    assert targets["2-5s"]["met"] == {"robot0": False, "robot1": True}  # 2x vs <= 1.3x
    assert targets["last20s"]["met"] == {"robot0": False, "robot1": True}  # 1.1875x / 1.0625x vs <= 1.1x
    assert targets["last20s"]["value"]["robot1"] == (1.0 + LATE_COST) / 2
    # The worst swap: robot0's v2 -> v3 went 1.25 -> 1.125 (0.9x), robot1's went 1.0 -> 1.125.
    assert targets["swaps"]["value"] == {"robot0": LATE_COST / 1.25, "robot1": LATE_COST}
    assert targets["swaps"]["met"] == {"robot0": True, "robot1": False}
    summary = {
        "live": {"robot0": {"shift": "payload:4@30", **bad}, "robot1": {"shift": "damping:5@30", **good}},
        "live_targets": targets,
        "live_note": "note",
    }
    text = "\n".join(report_markdown.live_markdown(summary))
    assert "| robot0 | payload:4@30 | 1 | 8x | 4x | 3x | 2x | 1.5x | 1.25x | 1.19x |" in text
    assert "| robot0 | v2 -> v3 | 50.0 | 0.9x | no |" in text
    assert "4x (not met) | 1x (met) | not met |" in text


def test_level_norms_recover_the_slow_read():
    kp, kd = (2.0, 3.0), (0.5, 0.25)
    obs = np.array([[0.1, -0.2, 0.0, 1.0, 0.5, 0.3, 0.2, 0.0]], np.float32)  # q, qd, q_ref, qd_ref
    prior = np.array([2.0 * 0.4 + 0.5 * 0.2, 3.0 * 0.5 + 0.25 * -1.0])
    slow, fast, l1 = np.array([3.0, 4.0]), np.array([0.6, 0.8]), np.array([0.0, -2.0])
    batch = types.SimpleNamespace(
        obs=obs,
        action=(prior + slow + fast + l1)[None].astype(np.float32),
        fast_read=fast[None].astype(np.float32),
        slow_read=l1[None].astype(np.float32),
    )
    norms = demo_report._level_norms(batch, kp, kd)
    assert norms["slow_norm"] == pytest.approx([5.0], rel=1e-6)
    assert norms["l0_norm"] == pytest.approx([1.0], rel=1e-6)
    assert norms["l1_norm"] == pytest.approx([2.0], rel=1e-6)
    # A window graph: action = feedforward (slow) + L0, the L1 read being a share of L0's.
    feedforward, l0, l1_share = np.array([6.0, 8.0]), np.array([0.0, -3.0]), np.array([0.0, -1.0])
    window = types.SimpleNamespace(
        obs=np.vstack([obs, obs]),
        action=np.vstack([batch.action, feedforward + l0]),
        fast_read=np.vstack([batch.fast_read, l0]),
        slow_read=np.vstack([batch.slow_read, l1_share]),
    )
    norms = demo_report._level_norms(window, kp, kd, np.array([False, True]))
    assert norms["slow_norm"] == pytest.approx([5.0, 10.0], rel=1e-6)
    assert norms["l0_norm"] == pytest.approx([1.0, 3.0], rel=1e-6)
    assert norms["l1_norm"] == pytest.approx([2.0, 1.0], rel=1e-6)


def test_rejected_and_failed_rounds_are_read_from_the_store(tmp_path):
    from cloud_brain.experience.store import ExperienceStore

    store = ExperienceStore(str(tmp_path / "nestor.db"))
    store.record_round("kuka_track", 1.0, 1, 0, 10, version=2, accepted=True, reason="ok")
    store.record_round("kuka_track", 2.0, 2, 10, 20, version=3, accepted=False, reason="regression on nominal")
    store.record_round("kuka_track", 3.0, 2, 20, 30, error="timeout")
    store.record_round("crane", 4.0, 1, 0, 5, version=4, accepted=False)
    store.close()
    rounds = demo_report._rounds(tmp_path / "nestor.db", "kuka_track")
    assert [(r["version"], r["accepted"], r["error"]) for r in rounds] == [(2, 1, ""), (3, 0, ""), (0, 0, "timeout")]


def test_paired_recovery_is_not_censored():
    assert demo_report._paired_mean([10, 30]) == 20.0
    assert demo_report._paired_mean([10, None]) is None  # one shift type never recovered
    assert demo_report._paired_mean([]) is None


def test_cost_plot_limits_come_from_the_data(tmp_path):
    s = _series()
    s["cost"][5] = 1e6  # one spike is clipped, not given the axis
    low, high = log_limits([s["cost"]])
    assert log_limits([s["cost"]], max_decades=0.5)[0] == pytest.approx(high / 1.3 / 10**0.5 / 1.3)
    assert 0.5 < low < 1.0 and 8.0 < high < 20.0
    zero_read = np.r_[np.full(100, 1e-7), np.full(100, 30.0)]
    assert log_limits([zero_read], lo_pct=0.5, hi_pct=100.0, max_decades=3.0)[0] == pytest.approx(30.0 / 1e3 / 1.3)
    n = len(s["stamp"])
    s.update(slow_norm=np.full(n, 30.0), l0_norm=np.full(n, 2.0), l1_norm=np.full(n, 0.1))
    live = {"robot0": live_figures.robot_live(s, SHIFT_STAMP, RATE)}
    events = {"robot0": [{"type": "payload", "magnitude": 4.0, "stamp": SHIFT_STAMP}]}
    rounds = [{"finished_unix": T0 + 40.0, "version": 4, "accepted": 0, "error": ""}]
    plot_cost(tmp_path / "cost.png", {"robot0": s}, events, live, rounds, RATE)
    assert (tmp_path / "cost.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missed_ticks_verdict_is_relative_to_the_stall_probe():
    robots = {"robot0": {"missed_ticks": 5}, "robot1": {"missed_ticks": 6}}
    verdict = demo_report.missed_ticks_verdict(robots, 3)
    assert verdict["bound"] == 5
    assert verdict["per_robot"]["robot0"]["met"] is True
    assert verdict["per_robot"]["robot1"]["met"] is False
    assert verdict["met"] is False
    assert demo_report.missed_ticks_verdict({"robot0": {"missed_ticks": 0}}, 0)["met"] is True
    undecided = demo_report.missed_ticks_verdict(robots, None)
    assert undecided["met"] is None and undecided["bound"] is None
