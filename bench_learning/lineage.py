"""One lineage of the benchmark, in a worker process: phase A once, then every case of a (task, seed).

See ``bench_learning.run`` for the protocol; each case x method gives one record.
"""

from __future__ import annotations

import pathlib
import shutil
import time

import numpy as np

from bench_learning.cases import FIXED

RLS_FORGETTING = 0.98  # ~50-tick memory: strong on drift, slow on steps (ANCHORS.md)


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
