"""The learning benchmark (issue 3): four methods, same cases, same seeds, one run.

    python -m bench_learning.run [--quick] [--cases FILE] [--out DIR] [--workers N]

Protocol, per (task, seed) lineage (phase A is shared by every shift case of that lineage):
  A. the initial model drives the robot on the nominal dynamics (L0 + L1 on, as deployed);
     its experience goes to a fresh store and one consolidation round runs (per method);
  B. per (shift, magnitude): the phase-A model drives on the shifted dynamics (shift at t=0),
     then one more round: `naive` trains on the new rows only; `full` also replays L3 and
     meta-learns L0/L1, and the gate checks nominal and the shift;
  then every method is measured on the same seeded episodes:
    * recovery: nominal, shift at `recovery.shift_s` -> pre_shift_cost, recovery_ticks
      (nestor_core.learning_metrics.recovery_ticks), post_shift_cost_100;
    * first contact: shifted from t=0 with L0 and L1 frozen (the slow weights alone), mean
      cost, and its ratio to the initial model's;
    * forgetting: mean nominal cost after the phase-B round vs after the phase-A round, as
      deployed (L0/L1 on) and with the slow weights alone (L0/L1 frozen).
frozen, l0_delta (today's single-step delta rule with its default step sizes, L1 off) and rls
(classic adaptive control: recursive least squares with forgetting on [1, q], nestor_core.rls, in
place of L0/L1) never consolidate: their model is the initial one throughout, so their
forgetting is 0 by construction (recorded as 0.0, not measured).

Yardsticks (issue 9): every shifted episode has a paired control, the same model, seed and
episode without the shift; recovery_ticks_paired, post_ratio_paired (windows after the shift)
and late_ratio_paired compare the two tick by tick. The old self-relative band metric is kept as
recovery_ticks. A run whose cost is non-finite or 1000x its control's peak is flagged blew_up
and left out of the summary means (counted instead). The consolidating methods are
the `methods` of the cases YAML (naive and full are required; more entries are ablation
variants): each entry holds ConsolidationConfig overrides and optionally `runtime:` with
RuntimeConfig fields for the robot side (e.g. l1_step_scale: 0).

Everything runs in-process: real PyBullet, real onnxruntime through the robot's PolicyRuntime,
real torch rounds (cloud_brain.learning.consolidation.run_round) on real SQLite stores. Lineages run in
a pool of `workers` processes (one torch thread each).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import multiprocessing
import pathlib
import shutil
import sys
import tempfile
import time

import numpy as np
import yaml

REPO = pathlib.Path(__file__).resolve().parents[1]
METHODS = ("frozen", "l0_delta", "rls", "naive", "full")  # the required five; cases YAML may add variants
FIXED = ("frozen", "l0_delta", "rls")  # no consolidation: the initial model throughout
# Issue 10's targets, judged on the paired-control yardsticks (issue 9).
TARGETS = {
    "recovery_ticks_paired_max": 50,
    "late_ratio_paired_max": 1.2,
    "first_contact_vs_nominal_max": 2.0,
    "first_contact_ratio_max": 0.5,
    "forgetting_full_max": 0.05,
    "full_vs_rls_cost_0_2s_max": 0.8,
}
RLS_FORGETTING = 0.98  # ~50-tick memory: strong on drift, slow on steps (ANCHORS.md)


@dataclasses.dataclass(frozen=True)
class Case:
    """One (task, shift, magnitude) of the YAML; `target` names the link or joint (optional)."""

    task_file: str
    shift: str
    magnitude: float
    target: str | None = None

    def spec(self, at_s: float) -> str:
        suffix = f"#{self.target}" if self.target else ""
        return f"{self.shift}:{self.magnitude:g}@{at_s:g}{suffix}"

    def gate_spec(self) -> str:
        suffix = f"#{self.target}" if self.target else ""
        return f"{self.shift}:{self.magnitude:g}{suffix}"


def load_cases(path: str | pathlib.Path) -> dict:
    """Read and validate a cases YAML; errors name the file and the field."""
    path = pathlib.Path(path)
    data = yaml.safe_load(path.read_text())
    for key in ("seeds", "protocol", "tasks"):
        if key not in data:
            raise ValueError(f"{path.name}: {key}: missing required field")
    cases = []
    for i, task in enumerate(data["tasks"]):
        task_file = str((REPO / task["task_file"]).resolve())
        if not pathlib.Path(task_file).is_file():
            raise ValueError(f"{path.name}: tasks[{i}].task_file: {task['task_file']!r} not found")
        for j, entry in enumerate(task["cases"]):
            if "shift" not in entry or "magnitudes" not in entry:
                raise ValueError(f"{path.name}: tasks[{i}].cases[{j}]: needs 'shift' and 'magnitudes'")
            for magnitude in entry["magnitudes"]:
                cases.append(Case(task_file, entry["shift"], float(magnitude), entry.get("target")))
    data["cases"] = cases
    data.setdefault("methods", {"naive": {"replay_fraction": 0.0, "meta_lr": 0.0, "gate": False}, "full": {}})
    data.setdefault("consolidation", {})
    data.setdefault("workers", 2)
    for name in ("naive", "full"):
        if name not in data["methods"]:
            raise ValueError(f"{path.name}: methods.{name}: required (the benchmark compares it)")
    data["method_names"] = list(FIXED) + list(data["methods"])
    return data


# --- one lineage (runs in a worker process) -----------------------------------------------------


def _round(db: str, task: str, task_file: str, parent: bytes, after: int, up_to: int, seed: int, config: dict):
    from cloud_brain.learning.consolidation import run_round

    request = {
        "db_path": db,
        "task": task,
        "task_file": task_file,
        "parent_version": 1,
        "parent_onnx": parent,
        "experience_from": after,
        "experience_to": up_to,
        "seed": seed,
        "l3_seed": seed,
        "config": config,
    }
    result = run_round(request)
    metrics = result["metrics"]
    summary = {
        "accepted": result["accepted"],
        "reason": result["reason"],
        "alpha": metrics.get("gate", {}).get("accepted_alpha"),
        "meta_l0": {k: v for k, v in metrics.get("meta", {}).get("l0", {}).items() if k != "values"},
        "meta_window": metrics.get("meta", {}).get("window"),
        "training": {k: v for k, v in metrics.get("training", {}).items() if k != "rmse_per_joint"},
        "meta_l1": metrics.get("meta", {}).get("l1"),
        "replay_windows": metrics.get("l3", {}).get("replay_windows"),
        "l3_items": metrics.get("l3", {}).get("items"),
        "seconds": metrics.get("round_seconds"),
    }
    # A rejected candidate is not pushed: the robot keeps the parent.
    return (result["onnx"] if result["accepted"] else parent), summary


def _collect(model: bytes, env, store, robot: str, shifts: list, seed: int, episodes: int, ticks: int, seq: int):
    from cloud_brain.learning.evaluation import collect_experience

    for episode in range(episodes):
        for batch in collect_experience(
            model, env, robot, shifts=shifts, seed=seed * 100 + episode, ticks=ticks, first_seq=seq
        ):
            store.append(batch)
        seq += ticks
    return seq


def run_lineage(args: tuple) -> list[dict]:
    """Phase A once, then every case of this (task, seed); returns one record per case x method."""
    task_file, seed, cases, plan, workdir = args
    import torch

    torch.set_num_threads(1)
    from cloud_brain.experience.store import ExperienceStore
    from cloud_brain.learning.evaluation import rollout
    from cloud_brain.learning.policy_export import initial_model as delta_initial_model
    from cloud_brain.learning.window_model import initial_model
    from nestor_core import learning_metrics
    from nestor_core.policy_model import load_model
    from nestor_core.policy_runtime import RuntimeConfig
    from nestor_core.rls import RlsAdapter
    from nestor_sim.task import load_task
    from nestor_sim.tracking_env import TrackingEnv

    proto = plan["protocol"]
    task = load_task(task_file)
    env = TrackingEnv(task)
    base = pathlib.Path(workdir) / f"{task.name}_s{seed}"
    base.mkdir(parents=True, exist_ok=True)
    variants = {m: e["model_of"] for m, e in plan["methods"].items() if (e or {}).get("model_of")}
    # methods that consolidate (naive, full and any variants); `model_of` variants reuse that
    # method's consolidated model and change only the robot side (runtime:).
    learners = [m for m in plan["methods"] if m not in variants]
    measured = learners + list(variants)
    runtimes = {
        "frozen": RuntimeConfig(l0_step_scale=0.0, l1_step_scale=0.0),
        "l0_delta": RuntimeConfig(l1_step_scale=0.0),
        **{m: RuntimeConfig(**(plan["methods"][m] or {}).get("runtime", {})) for m in measured},
    }
    still = RuntimeConfig(l0_step_scale=0.0, l1_step_scale=0.0)
    config_of = {
        m: {
            **plan["consolidation"],
            **{k: v for k, v in (plan["methods"][m] or {}).items() if k not in ("runtime", "model_of")},
        }
        for m in learners
    }
    records = []
    try:
        init, _ = initial_model(task_file, seed)
        init_delta, _ = delta_initial_model(task_file, seed)  # today's delta-rule graph, the l0_delta baseline
        # Phase A: nominal experience (the same for both consolidating methods), one round each.
        a_db = base / "phase_a.db"
        store = ExperienceStore(a_db)
        phase_a = proto["phase_a"]
        seq_a = _collect(init, env, store, "robot", [], seed, phase_a["episodes"], phase_a["ticks"], 1)
        rows_a = store.max_row_id(task.name)
        store.close()
        model_a, round_a, db_a = {}, {}, {}
        for m in learners:
            db_a[m] = base / f"a_{m}.db"
            shutil.copy(a_db, db_a[m])
            cfg = {**config_of[m], "gate_shifts": []}
            model_a[m], round_a[m] = _round(str(db_a[m]), task.name, task_file, init, 0, rows_a, seed, cfg)
        for m, ref in variants.items():
            model_a[m], round_a[m] = model_a[ref], round_a[ref]

        def nominal_cost(model, runtime) -> float:
            return float(np.mean(rollout(model, env, [], seed, proto["forgetting_ticks"], runtime).cost))

        nominal_a = {m: (nominal_cost(model_a[m], runtimes[m]), nominal_cost(model_a[m], still)) for m in model_a}
        for case in cases:
            started = time.time()
            model_b, round_b = {**{m: init for m in FIXED}, "l0_delta": init_delta}, {}
            for m in learners:
                db = base / f"{case.shift}_{case.magnitude:g}_{m}.db"
                shutil.copy(db_a[m], db)
                store = ExperienceStore(db)
                _collect(
                    model_a[m],
                    env,
                    store,
                    "robot",
                    [case.spec(0.0)],
                    seed,
                    proto["phase_b"]["episodes"],
                    proto["phase_b"]["ticks"],
                    seq_a,
                )
                rows_b = store.max_row_id(task.name)
                store.close()
                cfg = {**config_of[m], "gate_shifts": [case.gate_spec()]}
                model_b[m], round_b[m] = _round(
                    str(db), task.name, task_file, model_a[m], rows_a, rows_b, seed + 1, cfg
                )
                db.unlink(missing_ok=True)
            fc_ticks = proto["first_contact_ticks"]
            rate = task.control_rate_hz
            first_contact_init = float(np.mean(rollout(init, env, [case.spec(0.0)], seed, fc_ticks, still).cost))
            first_contact_delta = float(np.mean(rollout(init_delta, env, [case.spec(0.0)], seed, fc_ticks, still).cost))
            for m, ref in variants.items():
                model_b[m], round_b[m] = model_b[ref], round_b[ref]
            for m in FIXED + tuple(measured):
                model = load_model(model_b[m])
                runtime = still if m == "rls" else runtimes[m]
                shifted = [case.spec(proto["recovery"]["shift_s"])]

                def episode(shifts, m=m, model=model, runtime=runtime):
                    adapter = RlsAdapter(task.effort_limit, RLS_FORGETTING) if m == "rls" else None
                    return rollout(model, env, shifts, seed, proto["recovery"]["ticks"], runtime, adapter=adapter)

                trace = episode(shifted)
                control = episode([])
                if m == FIXED[0]:
                    init_control_cost = float(np.mean(control.cost))
                control_vs_initial = float(np.mean(control.cost)) / max(init_control_cost, 1e-12)
                s = trace.shift_tick
                rec = learning_metrics.recovery_ticks(trace.cost, s)
                fc_nominal = float(np.mean(rollout(model, env, [], seed, fc_ticks, still).cost))
                if m in FIXED:
                    first_contact = first_contact_delta if m == "l0_delta" else first_contact_init
                    forgetting = forgetting_slow = 0.0
                else:
                    first_contact = float(np.mean(rollout(model, env, [case.spec(0.0)], seed, fc_ticks, still).cost))
                    after, after_slow = nominal_cost(model, runtimes[m]), nominal_cost(model, still)
                    forgetting = learning_metrics.forgetting(nominal_a[m][0], after)
                    forgetting_slow = learning_metrics.forgetting(nominal_a[m][1], after_slow)
                two_s = int(round(2.0 * rate))
                broken = forgetting > 1.0  # its own nominal cost more than doubled by the phase-B round
                records.append(
                    {
                        "task": task.name,
                        "shift": case.shift,
                        "magnitude": case.magnitude,
                        "seed": seed,
                        "method": m,
                        "pre_shift_cost": learning_metrics.pre_shift_cost(trace.cost, s),
                        "recovery_ticks": rec,
                        "recovered": rec is not None,
                        "recovery_ticks_paired": learning_metrics.recovery_ticks_paired(trace.cost, control.cost, s),
                        "post_ratio_paired": learning_metrics.window_ratios(trace.cost, control.cost, s, rate),
                        "late_ratio_paired": learning_metrics.late_ratio(trace.cost, control.cost, s),
                        "cost_0_2s": learning_metrics.window_mean(trace.cost, s, two_s),
                        "control_cost_0_2s": learning_metrics.window_mean(control.cost, s, two_s),
                        # Blown up: non-finite, 1000x its own control's peak, or a model whose own nominal run is
                        # 100x the initial model's (a paired ratio would flatter a model broken everywhere).
                        "blew_up": learning_metrics.blew_up(trace.cost, control.cost) or control_vs_initial > 100.0,
                        "control_vs_initial": control_vs_initial,
                        # Paired ratios compare a model with itself: one made worse everywhere can still
                        # score well on them. Read them with this flag (forgetting > 100 %).
                        "broken_on_nominal": broken,
                        "post_shift_ticks": len(trace.cost) - s,
                        "post_shift_cost_100": learning_metrics.window_mean(trace.cost, s, 100),
                        "first_contact_cost": first_contact,
                        "first_contact_ratio": first_contact
                        / max(first_contact_delta if m == "l0_delta" else first_contact_init, 1e-12),
                        "first_contact_nominal_cost": fc_nominal,
                        "first_contact_vs_nominal": first_contact / max(fc_nominal, 1e-12),
                        "forgetting": forgetting,
                        "forgetting_slow_only": forgetting_slow,
                        "rounds": {"a": round_a.get(m), "b": round_b.get(m)},
                        "cost_trace_ma": learning_metrics.moving_average(trace.cost)[::5].round(7).tolist(),
                        "control_trace_ma": learning_metrics.moving_average(control.cost)[::5].round(7).tolist(),
                        "shift_tick": s,
                    }
                )
            print(
                f"  {task.name} {case.shift}:{case.magnitude:g} seed {seed}: {time.time() - started:.0f} s", flush=True
            )
    finally:
        env.close()
    return records


# --- summary, targets, plots ----------------------------------------------------------------------


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


def _f(value, fmt="{:.2f}") -> str:
    return "-" if value is None else fmt.format(value)


def markdown(rows: list[dict], targets: dict, meta: dict) -> str:
    windows = [w[0] for w in learning_metrics_windows()]
    lines = [
        "# Learning benchmark (issues 9 and 10)",
        "",
        f"cases: `{meta['cases_file']}`, seeds {meta['seeds']}, {meta['records']} records, "
        f"{meta['wall_seconds']:.0f} s on {meta['workers']} workers.",
        "",
        "Paired control: the same model, seed and episode without the shift. recovery (paired): median ticks "
        "until the 20-tick mean stays within 10 % of the control's for 50 ticks (not recovered = ticks "
        "observed); ratios: shifted / control mean cost per window after the shift; late: ticks 300-600. "
        "first contact: slow weights alone (L0/L1 frozen) on the shifted dynamics, vs the initial model and vs "
        "the same model on nominal dynamics. Old band metric (self-relative) kept for comparison.",
        "",
        "| task | shift | method | recovery paired (recovered) | old band | "
        + " | ".join(windows)
        + " | late | cost 0-2 s | first contact vs init / vs nominal | forgetting | blew up / broken on nominal |",
        "|---|---|---|---|---|" + "---|" * len(windows) + "---|---|---|---|---|",
    ]
    for r in rows:
        ratios = " | ".join(_f(r["post_ratio_paired"][w]) for w in windows)
        lines.append(
            f"| {r['task']} | {r['shift']} | {r['method']} | {_f(r['recovery_ticks_paired_median'], '{:.0f}')} "
            f"({r['recovered_paired']}) | {_f(r['recovery_ticks_median'], '{:.0f}')} | {ratios} "
            f"| {_f(r['late_ratio_paired'])} | {_f(r['cost_0_2s'], '{:.2e}')} "
            f"| {_f(r['first_contact_ratio'])} / {_f(r['first_contact_vs_nominal'])} "
            f"| {_f(r['forgetting'], '{:+.1%}')} | {r['blew_up']} / {r['broken_on_nominal']} |"
        )
    lines += ["", "## Targets (issue 10, method `full`)", ""]
    for name, verdict in targets.items():
        detail = {k: v for k, v in verdict.items() if k != "met"}
        lines.append(f"- **{name}**: {'MET' if verdict['met'] else 'NOT MET'} - `{json.dumps(detail, default=str)}`")
    return "\n".join(lines) + "\n"


def plots(records: list[dict], out: pathlib.Path, methods=METHODS) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    shifts = sorted({(r["task"], r["shift"]) for r in records})
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    width = 0.8 / len(methods)
    for i, m in enumerate(methods):
        sel = [[r for r in records if (r["task"], r["shift"], r["method"]) == (t, s, m)] for t, s in shifts]
        rec = [np.median([_rec(r["recovery_ticks_paired"], r["post_shift_ticks"]) for r in g]) if g else 0 for g in sel]
        fc = [np.mean([r["first_contact_vs_nominal"] for r in g]) if g else 0 for g in sel]
        fg = [np.mean([r["forgetting"] for r in g]) if g else 0 for g in sel]
        x = np.arange(len(shifts)) + (i - (len(methods) - 1) / 2) * width
        for ax, vals in zip(axes, (rec, fc, fg), strict=True):
            ax.bar(x, vals, width, label=m)
    labels = [f"{t}\n{s}" for t, s in shifts]
    for ax, title in zip(
        axes,
        ("recovery ticks vs paired control (median)", "first-contact cost / own nominal", "forgetting"),
        strict=True,
    ):
        ax.set_xticks(np.arange(len(shifts)), labels, fontsize=7, rotation=30)
        ax.set_title(title)
    axes[0].axhline(TARGETS["recovery_ticks_paired_max"], color="k", ls="--", lw=0.8)
    axes[1].axhline(TARGETS["first_contact_vs_nominal_max"], color="k", ls="--", lw=0.8)
    axes[1].set_yscale("log")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "metrics.png", dpi=110)
    plt.close(fig)
    written.append("metrics.png")
    fig, axes = plt.subplots(1, len(shifts), figsize=(4 * len(shifts), 3.5), squeeze=False)
    for ax, (t, s) in zip(axes[0], shifts, strict=True):
        for m in methods:
            sel = [r for r in records if (r["task"], r["shift"], r["method"]) == (t, s, m)]
            if sel:
                r = max(sel, key=lambda r: (r["seed"] == 0, r["magnitude"]))
                (line,) = ax.semilogy(np.arange(len(r["cost_trace_ma"])) * 5, r["cost_trace_ma"], label=m, lw=1)
                ax.semilogy(
                    np.arange(len(r["control_trace_ma"])) * 5,
                    r["control_trace_ma"],
                    lw=0.6,
                    ls=":",
                    color=line.get_color(),
                )
                ax.axvline(r["shift_tick"], color="k", lw=0.5)
        ax.set_title(f"{t} {s} (seed 0, largest; dotted: paired control)", fontsize=8)
        ax.set_xlabel("tick")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "traces.png", dpi=110)
    plt.close(fig)
    written.append("traces.png")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="use config/bench_learning/cases_quick.yaml")
    parser.add_argument("--cases", default=None, help="cases YAML (default: cases.yaml or cases_quick.yaml)")
    parser.add_argument("--out", default=str(REPO / "runs" / "bench-learning"), help="output directory")
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default: from the YAML)")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds to run instead of the YAML's (e.g. 0)")
    args = parser.parse_args(argv)
    cases_file = args.cases or str(
        REPO / "config" / "bench_learning" / ("cases_quick.yaml" if args.quick else "cases.yaml")
    )
    plan = load_cases(cases_file)
    if args.seeds is not None:
        try:
            plan["seeds"] = [int(x) for x in args.seeds.split(",") if x.strip()]
        except ValueError:
            parser.error(f"--seeds: expected comma-separated integers, got {args.seeds!r}")
        if not plan["seeds"]:
            parser.error("--seeds: no seed given")
    workers = args.workers or int(plan["workers"])
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    workdir = tempfile.mkdtemp(prefix="bench-learning-")
    jobs = []
    for task_file in dict.fromkeys(c.task_file for c in plan["cases"]):
        for seed in plan["seeds"]:
            cases = [c for c in plan["cases"] if c.task_file == task_file]
            jobs.append(
                (task_file, int(seed), cases, {k: plan[k] for k in ("protocol", "consolidation", "methods")}, workdir)
            )
    # Crane lineages are the slowest; start them first so the pool ends together.
    jobs.sort(key=lambda j: "crane" not in j[0])
    methods = plan["method_names"]
    print(
        f"bench-learning: {len(plan['cases'])} cases x {len(plan['seeds'])} seeds x {len(methods)} methods, "
        f"{len(jobs)} lineages on {workers} workers",
        flush=True,
    )
    try:
        if workers > 1:
            with multiprocessing.get_context("spawn").Pool(workers) as pool:
                results = pool.map(run_lineage, jobs, chunksize=1)
        else:
            results = [run_lineage(job) for job in jobs]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    records = [r for lineage in results for r in lineage]
    rows, targets = summarise(records, methods)
    meta = {
        "cases_file": str(pathlib.Path(cases_file).relative_to(REPO))
        if cases_file.startswith(str(REPO))
        else cases_file,
        "seeds": plan["seeds"],
        "records": len(records),
        "workers": workers,
        "wall_seconds": time.time() - started,
        "targets": TARGETS,
        "methods": methods,
        "protocol": plan["protocol"],
        "consolidation": plan["consolidation"],
        "method_overrides": plan["methods"],
    }
    (out / "results.json").write_text(
        json.dumps(
            {"meta": meta, "targets": targets, "summary": rows, "records": copy.deepcopy(records)},
            indent=1,
            default=str,
        )
    )
    text = markdown(rows, targets, meta)
    (out / "summary.md").write_text(text)
    written = plots(records, out, methods)
    print(text)
    print(f"wrote {out / 'results.json'}, {out / 'summary.md'}, {', '.join(written)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
