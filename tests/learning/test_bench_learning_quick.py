"""`make bench-learning QUICK=1` as a test: real sim, real rounds, relaxed but real assertions."""

import json

import pytest

from bench_learning.run import METHODS, main

METRICS = ("pre_shift_cost", "recovery_ticks", "post_shift_cost_100", "first_contact_cost", "first_contact_ratio",
           "forgetting", "forgetting_slow_only")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_quick_benchmark(tmp_path):
    assert main(["--quick", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "results.json").read_text())
    records = result["records"]
    cases = {(r["task"], r["shift"], r["magnitude"], r["seed"]) for r in records}
    assert {r["task"] for r in records} == {"kuka_track", "crane"}
    for case in cases:
        by_method = {r["method"]: r for r in records if (r["task"], r["shift"], r["magnitude"], r["seed"]) == case}
        assert set(by_method) == set(METHODS), case
        for record in by_method.values():
            assert all(name in record for name in METRICS), record["method"]
        full, frozen = by_method["full"], by_method["frozen"]
        # The learning system beats doing nothing right after the shift, and recovers no later.
        assert full["post_shift_cost_100"] < frozen["post_shift_cost_100"], case
        never = full["post_shift_ticks"] + 1
        assert (full["recovery_ticks"] or never) <= (frozen["recovery_ticks"] or never), case
        # L3 replay + the gate forget less than naive fine-tuning.
        assert by_method["naive"]["forgetting"] >= full["forgetting"], case
    assert set(result["targets"]) >= {"recovery_le_50_ticks_every_shift_type", "first_contact_le_50pct_of_initial",
                                      "forgetting_full_le_5pct", "forgetting_naive_ge_20pct"}
    assert (tmp_path / "summary.md").read_text().startswith("# Learning benchmark")
    assert (tmp_path / "metrics.png").stat().st_size > 0
