"""The demo's results: summary.json, report.md and a cost plot, from what the run left on disk.

Sources, all written by the run itself:
  - the cloud's SQLite store: every stored transition (cost, stamp, model version) and the
    model registry (versions, parents, gate metrics);
  - each robot's spool (what it recorded and what the cloud acknowledged), policy_stats.json
    (swaps, missed ticks) and events.jsonl (the dynamics shift);
  - seeded closed-loop evaluations in PyBullet of the models the run produced, with the robot's
    own runtime (cloud_brain.evaluation): the learning figures.
"""

import json
from pathlib import Path

import numpy as np
from nestor_core import learning_metrics

from nestor_bringup.stall_probe import PROBE_FILE as STALL_PROBE_FILE
from nestor_bringup.stall_probe import coinciding

EVAL_TICKS = 2500  # 25 s at 100 Hz per evaluation episode
EVAL_SHIFT_S = 10.0  # the shift inside an evaluation episode
FIRST_CONTACT_TICKS = 1000  # first-contact cost: slow weights alone on the shifted dynamics


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _events(path: Path) -> list[dict]:
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        return []


def _robot_series(db_path: Path, task: str) -> dict[str, dict[str, np.ndarray]]:
    """Per robot: seq, stamp, cost, model version of every stored transition, in seq order."""
    from cloud_brain.store import ExperienceStore

    parts: dict[str, dict[str, list]] = {}
    store = ExperienceStore(str(db_path))
    try:
        for batch in store.read_batches(task):
            p = parts.setdefault(batch.robot_id, {"seq": [], "stamp": [], "cost": [], "version": []})
            p["seq"].append(np.arange(batch.first_seq, batch.first_seq + len(batch)))
            p["stamp"].append(batch.stamp)
            p["cost"].append(batch.cost)
            p["version"].append(batch.model_versions)
    finally:
        store.close()
    out = {}
    for robot_id, p in parts.items():
        arrays = {k: np.concatenate(v) for k, v in p.items()}
        order = np.argsort(arrays["seq"])
        out[robot_id] = {k: v[order] for k, v in arrays.items()}
    return out


def _models(db_path: Path, task: str) -> list:
    from cloud_brain.registry import ModelRegistry

    return ModelRegistry(str(db_path)).list(task, with_onnx=True)


def evaluate_learning(initial_onnx: bytes, final_onnx: bytes, task_file: str, shift: str, seed: int) -> dict:
    """Seeded sim evaluations of one shift: fast vs frozen L0, initial vs consolidated model."""
    from cloud_brain.evaluation import rollout
    from nestor_core.policy_model import load_model
    from nestor_core.policy_runtime import RuntimeConfig
    from nestor_sim.tracking_env import TrackingEnv

    frozen = RuntimeConfig(l0_step_scale=0.0)
    env = TrackingEnv(task_file)
    try:
        initial, final = load_model(initial_onnx), load_model(final_onnx)
        during = [f"{shift}@{EVAL_SHIFT_S:g}"]
        out = {"shift": shift, "seed": seed, "ticks": EVAL_TICKS, "shift_at_s": EVAL_SHIFT_S}
        for label, model in (("initial", initial), ("consolidated", final)):
            fast = rollout(model, env, during, seed, EVAL_TICKS).summary()
            still = rollout(model, env, during, seed, EVAL_TICKS, frozen).summary()
            out[f"{label}_fast"] = fast
            out[f"{label}_frozen"] = still
        # First contact: the slow weights alone (L0 frozen) on the shifted dynamics from tick 0.
        shifted = [f"{shift}@0"]
        for label, model in (("initial", initial), ("consolidated", final)):
            first = rollout(model, env, shifted, seed, FIRST_CONTACT_TICKS, frozen)
            deployed = rollout(model, env, shifted, seed, FIRST_CONTACT_TICKS)
            out[f"first_contact_{label}"] = float(np.mean(first.cost))
            out[f"first_100_deployed_{label}"] = float(np.mean(deployed.cost[:100]))
    finally:
        env.close()
    return out


def _censored(value: int | None, horizon: int) -> int:
    return horizon if value is None else int(value)


def _plot(path: Path, series: dict, events: dict, swaps: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(series), 1, figsize=(11, 3.2 * max(1, len(series))), squeeze=False)
    for ax, (robot_id, s) in zip(axes[:, 0], sorted(series.items()), strict=False):
        t0 = s["stamp"][0]
        t = s["stamp"] - t0
        ma = learning_metrics.moving_average(s["cost"], 50)
        ax.semilogy(t, np.maximum(s["cost"], 1e-7), color="0.8", lw=0.5, label="cost per tick")
        ax.semilogy(t, np.maximum(ma, 1e-7), color="C0", lw=1.2, label="moving average (50 ticks)")
        for event in events.get(robot_id, []):
            if "stamp" in event:
                ax.axvline(event["stamp"] - t0, color="C3", ls="--", lw=1.5)
                ax.text(
                    event["stamp"] - t0,
                    ax.get_ylim()[1],
                    f" {event['type']} {event['magnitude']:g}",
                    color="C3",
                    va="top",
                    fontsize=8,
                )
        for tick_t, version in swaps.get(robot_id, []):
            ax.axvline(tick_t - t0, color="C2", ls=":", lw=1.2)
            ax.text(tick_t - t0, ax.get_ylim()[0], f" v{version}", color="C2", va="bottom", fontsize=8)
        ax.set_title(f"{robot_id}: cost over time (red: dynamics shift, green: model swap)")
        ax.set_xlabel("time since first transition (s)")
        ax.set_ylabel("cost")
        ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(run_dir: Path, specs, config, elapsed: float, final_status, task_file: str, shift_at: float) -> dict:
    """Collect the run's figures, evaluate the models, write summary.json, report.md and cost.png."""
    from nestor_robot.spool import Spool

    db_path = run_dir / "cloud" / "nestor.db"
    task = config.task
    series = _robot_series(db_path, task)
    models = _models(db_path, task)
    initial = next(m for m in models if m.parent == 0)
    final = next((m for m in models if m.status == "active"), initial)
    robots = {}
    swap_marks = {}
    events = {}
    for spec in specs:
        robot_dir = Path(spec.robot_dir)
        stats = _read_json(robot_dir / "policy_stats.json")
        with Spool(str(robot_dir / "spool.sqlite"), spec.robot_id) as spool:
            spool_stats = spool.stats()
        events[spec.robot_id] = _events(robot_dir / "events.jsonl")
        s = series.get(spec.robot_id)
        if s is not None:
            change = np.flatnonzero(np.diff(s["version"]) != 0) + 1
            swap_marks[spec.robot_id] = [(float(s["stamp"][i]), int(s["version"][i])) for i in change]
        robots[spec.robot_id] = {
            "shifts": spec.shifts,
            "ticks": stats.get("ticks"),
            "missed_ticks": stats.get("missed_ticks"),
            "missed_log": stats.get("missed_log", []),
            "max_tick_gap_ms": stats.get("max_gap_ms"),
            "swaps": stats.get("swaps"),
            "swap_log": stats.get("swap_log"),
            "model_version": stats.get("model_version"),
            "recorded": spool_stats.get("next_seq", 1) - 1,
            "acked_through": spool_stats.get("acked_through"),
            "spool_dropped": spool_stats.get("dropped"),
            "spool_depth": spool_stats.get("depth_transitions"),
            "stored": int(len(s["seq"])) if s is not None else 0,
            "live_recovery_ticks": _live_recovery(s, events[spec.robot_id]),
        }
    learning = {}
    for i, spec in enumerate(specs):
        shift = spec.shifts[0].split("@")[0]
        if shift not in learning:
            learning[shift] = evaluate_learning(initial.onnx, final.onnx, task_file, shift, config.seed + i)
    horizon = EVAL_TICKS - int(EVAL_SHIFT_S * 100)
    fast = [_censored(r["initial_fast"]["recovery_ticks"], horizon) for r in learning.values()]
    frozen = [_censored(r["initial_frozen"]["recovery_ticks"], horizon) for r in learning.values()]
    pushed = [m for m in models if m.status in ("active", "retired") and m.parent != 0]
    summary = {
        "robots": len(specs),
        "duration_s": round(elapsed, 1),
        "task": task,
        "transitions_recorded": sum(r["recorded"] for r in robots.values()),
        "transitions_uploaded": sum(r["acked_through"] or 0 for r in robots.values()),
        "transitions_stored": sum(r["stored"] for r in robots.values()),
        "transitions_stored_cloud_status": int(final_status.transitions_stored) if final_status else None,
        "model_versions": [
            {
                "version": m.version,
                "parent": m.parent,
                "status": m.status,
                "sha256": m.sha256,
                "experience_to": m.experience_to,
                "reason": getattr(m, "reason", ""),
                "gate": (m.metrics or {}).get("gate"),
            }
            for m in models
        ],
        "model_versions_pushed": [m.version for m in pushed],
        "swaps": {k: r["swaps"] for k, r in robots.items()},
        "missed_ticks": {k: r["missed_ticks"] for k, r in robots.items()},
        **_machine_stalls(run_dir, robots),
        "recovery_ticks_fast": float(np.mean(fast)),
        "recovery_ticks_frozen": float(np.mean(frozen)),
        "recovery_note": (
            f"mean over the fleet's shift types of seeded sim evaluations with the initial model; "
            f"a run that never recovers counts as the {horizon}-tick horizon (see learning.*.recovery_ticks)"
        ),
        "cost_initial_model": float(np.mean([r["first_contact_initial"] for r in learning.values()])),
        "cost_consolidated_model": float(np.mean([r["first_contact_consolidated"] for r in learning.values()])),
        "cost_note": "mean cost of the slow weights alone (L0 frozen) over 1000 ticks on each shifted dynamics",
        "initial_model_version": initial.version,
        "consolidated_model_version": final.version,
        "per_robot": robots,
        "learning": learning,
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1, default=_jsonable))
    _plot(run_dir / "cost.png", series, events, swap_marks)
    (run_dir / "report.md").write_text(_markdown(summary))
    return summary


def _machine_stalls(run_dir: Path, robots: dict) -> dict:
    """The same-run baseline: what a bare SCHED_FIFO loop saw, and the robots' misses that coincide."""
    probe = _read_json(run_dir / STALL_PROBE_FILE)
    if not probe:
        return {}
    events = probe.get("events", [])
    return {
        "machine_stalls": {
            "what": "a bare timing loop (no ROS, no I/O) at the policy's rate and SCHED_FIFO priority, same run",
            "ticks": probe.get("ticks"),
            "missed_ticks": probe.get("missed_ticks"),
            "max_gap_ms": probe.get("max_gap_ms"),
            "steal_s": probe.get("steal_s"),
            "steal_fraction": probe.get("steal_fraction"),
            "events": events,
        },
        "missed_ticks_during_machine_stalls": {k: coinciding(r["missed_log"] or [], events) for k, r in robots.items()},
    }


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value)}")


def _live_recovery(series: dict | None, events: list[dict]) -> int | None:
    """Recovery of the live robot (wall-clock run, L0 on), from its stored costs."""
    if series is None or not events or "stamp" not in events[0]:
        return None
    shift_tick = int(np.searchsorted(series["stamp"], events[0]["stamp"]))
    if shift_tick <= learning_metrics.PRE_WINDOW or shift_tick >= len(series["cost"]):
        return None
    return learning_metrics.recovery_ticks(series["cost"], shift_tick)


def _fmt(value) -> str:
    if value is None:
        return "not recovered"
    if isinstance(value, float):
        return f"{value:.5g}"
    return str(value)


def _markdown(s: dict) -> str:
    lines = [
        f"# nestor demo: {s['robots']} robots, {s['duration_s']} s, task `{s['task']}`",
        "",
        "![cost over time](cost.png)",
        "",
        "## Data path",
        "",
        "| recorded on robots | acknowledged (uploaded) | stored in the cloud |",
        "|---|---|---|",
        f"| {s['transitions_recorded']} | {s['transitions_uploaded']} | {s['transitions_stored']} |",
        "",
        "## Models",
        "",
        "| version | parent | status | reason |",
        "|---|---|---|---|",
    ]
    for m in s["model_versions"]:
        lines.append(f"| {m['version']} | {m['parent']} | {m['status']} | {m['reason']} |")
    lines += [
        "",
        "## Robots",
        "",
        "| robot | shift | ticks | missed ticks | swaps | final version | live recovery (ticks) |",
        "|---|---|---|---|---|---|---|",
    ]
    for robot_id, r in s["per_robot"].items():
        lines.append(
            f"| {robot_id} | {', '.join(r['shifts'])} | {r['ticks']} | {r['missed_ticks']} | {r['swaps']} | "
            f"{r['model_version']} | {_fmt(r['live_recovery_ticks'])} |"
        )
    if "machine_stalls" in s:
        m = s["machine_stalls"]
        lines += [
            "",
            f"Machine baseline ({m['what']}): {m['missed_ticks']} missed of {m['ticks']} ticks, "
            f"longest gap {_fmt(m['max_gap_ms'])} ms; the hypervisor took {_fmt(m.get('steal_s'))} s of CPU "
            f"({_fmt(100 * m['steal_fraction']) if m.get('steal_fraction') is not None else '?'} %) from this machine "
            "during the run. Robots' missed ticks that coincide with one of its stalls: "
            + ", ".join(f"{k} {v}" for k, v in s["missed_ticks_during_machine_stalls"].items()) + ".",
        ]
    lines += [
        "",
        "## Learning (seeded closed-loop evaluations in simulation)",
        "",
        f"- (a) fast weights: recovery_ticks_fast = {_fmt(s['recovery_ticks_fast'])}, "
        f"recovery_ticks_frozen = {_fmt(s['recovery_ticks_frozen'])} ({s['recovery_note']}).",
        f"- (b) consolidation: cost_initial_model = {_fmt(s['cost_initial_model'])}, "
        f"cost_consolidated_model = {_fmt(s['cost_consolidated_model'])} ({s['cost_note']}; "
        f"v{s['initial_model_version']} vs v{s['consolidated_model_version']}).",
        "",
        "| shift | model | L0 | pre-shift cost | first 100 ticks after | recovery ticks |",
        "|---|---|---|---|---|---|",
    ]
    for shift, r in s["learning"].items():
        for model in ("initial", "consolidated"):
            for mode in ("fast", "frozen"):
                e = r[f"{model}_{mode}"]
                lines.append(
                    f"| {shift} | {model} | {'on' if mode == 'fast' else 'frozen'} | {_fmt(e['pre_shift_cost'])} | "
                    f"{_fmt(e['post_shift_cost_100'])} | {_fmt(e['recovery_ticks'])} |"
                )
    lines.append("")
    return "\n".join(lines)
