"""`make bench-learning QUICK=1` as a test: real sim, real rounds, relaxed but real assertions."""

import json

import pytest

from bench_learning.run import METHODS, main

# Record keys that outside tools read (issue 9): keep them stable.
RECORD_KEYS = (
    "task",
    "shift",
    "magnitude",
    "seed",
    "method",
    "recovery_ticks",
    "recovery_ticks_paired",
    "post_ratio_paired",
    "late_ratio_paired",
    "cost_0_2s",
    "first_contact_ratio",
    "first_contact_vs_nominal",
    "forgetting",
)
WINDOWS = ("0-0.5s", "0.5-1s", "1-2s", "2-5s", "5-10s")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_quick_benchmark(tmp_path):
    assert main(["--quick", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "results.json").read_text())
    records = result["records"]
    cases = {(r["task"], r["shift"], r["magnitude"], r["seed"]) for r in records}
    assert {r["task"] for r in records} == {"kuka_track", "crane"}
    for case in cases:
        by_method = {r["method"]: r for r in records if (r["task"], r["shift"], r["magnitude"], r["seed"]) == case}
        assert set(METHODS) <= set(by_method), case
        for record in by_method.values():
            assert all(name in record for name in RECORD_KEYS), record["method"]
            assert set(record["post_ratio_paired"]) == set(WINDOWS), record["method"]
            assert not record["blew_up"], record["method"]
        full, frozen = by_method["full"], by_method["frozen"]
        # The learning system beats doing nothing right after the shift (absolute cost: a paired
        # ratio is relative to each model's own control, so a better model has a smaller base).
        assert full["cost_0_2s"] < frozen["cost_0_2s"], case
        # The classic baseline is in the same run, on the same episode.
        assert by_method["rls"]["seed"] == full["seed"] and by_method["rls"]["shift_tick"] == full["shift_tick"]
        # A shift hurts: no method's first half second after it is below its own paired control.
        for record in by_method.values():
            assert record["post_ratio_paired"]["0-0.5s"] > 1.0, record["method"]
    assert set(result["targets"]) >= {
        "recovery_paired_le_50_ticks_every_case",
        "late_ratio_paired_le_1.2",
        "first_contact_le_2x_own_nominal_every_case",
        "forgetting_full_le_5pct",
        "full_cost_0_2s_20pct_below_rls",
    }
    assert (tmp_path / "summary.md").read_text().startswith("# Learning benchmark")
    assert (tmp_path / "metrics.png").stat().st_size > 0
