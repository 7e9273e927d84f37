"""Summary rows over magnitudes and seeds, and issue 10's targets judged on them (method ``full``)."""

from __future__ import annotations

import numpy as np

from bench_learning.cases import METHODS

# Issue 10's targets, judged on the paired-control yardsticks (issue 9).
TARGETS = {
    "recovery_ticks_paired_max": 50,
    "late_ratio_paired_max": 1.2,
    "first_contact_vs_nominal_max": 2.0,
    "first_contact_ratio_max": 0.5,
    "forgetting_full_max": 0.05,
    "full_vs_rls_cost_0_2s_max": 0.8,
}


def _rec(value, cap):
    return cap if value is None else value


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def summarise(records: list[dict], methods=METHODS) -> tuple[list[dict], dict]:
    """Per (task, shift, method) rows over magnitudes and seeds, and the target verdicts.

    Blown-up runs are counted, not averaged in. Recovery is the median with "not recovered" counted
    as the ticks observed after the shift (so a median at that cap means most runs never recovered).
    """
    rows = []
    keys = sorted({(r["task"], r["shift"]) for r in records})
    windows = [w[0] for w in learning_metrics_windows()]
    for task, shift in keys:
        for m in methods:
            every = [r for r in records if (r["task"], r["shift"], r["method"]) == (task, shift, m)]
            sel = [r for r in every if not r.get("blew_up")]
            if not every:
                continue
            rec = [_rec(r["recovery_ticks_paired"], r["post_shift_ticks"]) for r in sel]
            old = [_rec(r["recovery_ticks"], r["post_shift_ticks"]) for r in sel]
            rows.append(
                {
                    "task": task,
                    "shift": shift,
                    "method": m,
                    "n": len(every),
                    "blew_up": len(every) - len(sel),
                    "broken_on_nominal": sum(bool(r.get("broken_on_nominal")) for r in every),
                    "pre_shift_cost": _mean(r["pre_shift_cost"] for r in sel),
                    "recovery_ticks_paired_median": float(np.median(rec)) if rec else None,
                    "recovered_paired": f"{sum(r['recovery_ticks_paired'] is not None for r in sel)}/{len(sel)}",
                    "recovery_ticks_median": float(np.median(old)) if old else None,
                    "post_ratio_paired": {w: _mean(r["post_ratio_paired"].get(w) for r in sel) for w in windows},
                    "late_ratio_paired": _mean(r["late_ratio_paired"] for r in sel),
                    "cost_0_2s": _mean(r["cost_0_2s"] for r in sel),
                    "first_contact_ratio": _mean(r["first_contact_ratio"] for r in sel),
                    "first_contact_vs_nominal": _mean(r["first_contact_vs_nominal"] for r in sel),
                    "forgetting": _mean(r["forgetting"] for r in sel),
                    "forgetting_slow_only": _mean(r["forgetting_slow_only"] for r in sel),
                }
            )
    return rows, verdicts(records, rows)


def learning_metrics_windows():
    from nestor_core import learning_metrics

    return learning_metrics.PAIRED_WINDOWS_S


def _ablation(records: list[dict], variant: str) -> dict:
    """Does cutting a level (the `variant`) cost at least 5 % over the first 2 s after the shift?"""
    full = {
        (r["task"], r["shift"], r["magnitude"], r["seed"]): r["cost_0_2s"] for r in records if r["method"] == "full"
    }
    pairs = [
        (full[k], r["cost_0_2s"])
        for r in records
        if r["method"] == variant and (k := (r["task"], r["shift"], r["magnitude"], r["seed"])) in full
    ]
    if not pairs:
        return {"met": False, "measured": None, "note": f"{variant} not in this run"}
    ratio = float(np.mean([b for _, b in pairs]) / max(np.mean([a for a, _ in pairs]), 1e-12))
    return {"met": ratio >= 1.05, "measured_variant_over_full_cost_0_2s": ratio, "cases": len(pairs)}


def verdicts(records: list[dict], rows: list[dict]) -> dict:
    """Issue 10's targets for the `full` method, each with the measured figure."""
    full_rows = [r for r in rows if r["method"] == "full"]
    full = [r for r in records if r["method"] == "full" and not r.get("blew_up")]
    rls = {(r["task"], r["shift"], r["magnitude"], r["seed"]): r for r in records if r["method"] == "rls"}
    per_case = {f"{r['task']}/{r['shift']}": r["recovery_ticks_paired_median"] for r in full_rows}
    late = {f"{r['task']}/{r['shift']}": r["late_ratio_paired"] for r in full_rows}
    fc_nom = [r["first_contact_vs_nominal"] for r in full]
    fc_init = [r["first_contact_ratio"] for r in full]
    pairs = [
        (r["cost_0_2s"], rls[k]["cost_0_2s"])
        for r in full
        if (k := (r["task"], r["shift"], r["magnitude"], r["seed"])) in rls
    ]
    vs_rls = float(np.mean([a for a, _ in pairs]) / max(np.mean([b for _, b in pairs]), 1e-12)) if pairs else None
    fg = _mean(r["forgetting"] for r in full)
    t = TARGETS
    return {
        "recovery_paired_le_50_ticks_every_case": {
            "met": bool(per_case)
            and all(v is not None and v <= t["recovery_ticks_paired_max"] for v in per_case.values()),
            "measured_full_median_per_case": per_case,
        },
        "late_ratio_paired_le_1.2": {
            "met": bool(late) and all(v is not None and v <= t["late_ratio_paired_max"] for v in late.values()),
            "measured_full_mean_per_case": late,
        },
        "first_contact_le_2x_own_nominal_every_case": {
            "met": bool(fc_nom) and max(fc_nom) <= t["first_contact_vs_nominal_max"],
            "measured_full_max": max(fc_nom) if fc_nom else None,
            "measured_full_mean": _mean(fc_nom),
        },
        "first_contact_le_0.5x_initial_every_case": {
            "met": bool(fc_init) and max(fc_init) <= t["first_contact_ratio_max"],
            "measured_full_max": max(fc_init) if fc_init else None,
            "measured_full_mean": _mean(fc_init),
        },
        "forgetting_full_le_5pct": {"met": fg is not None and fg <= t["forgetting_full_max"], "measured_full_mean": fg},
        "full_cost_0_2s_20pct_below_rls": {
            "met": vs_rls is not None and vs_rls <= t["full_vs_rls_cost_0_2s_max"],
            "measured_full_over_rls": vs_rls,
        },
        "window_matters_horizon2_worse": _ablation(records, "full_horizon2"),
        "blown_up_runs": {
            "met": not any(r.get("blew_up") for r in records),
            "count_by_method": {
                m: sum(1 for r in records if r["method"] == m and r.get("blew_up"))
                for m in sorted({r["method"] for r in records})
            },
        },
    }
