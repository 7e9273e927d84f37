"""report.md of a demo run: summary.json's figures as tables (nestor_demo.demo_report builds them)."""

from nestor_core import learning_metrics


def _fmt(value, ratio: bool = False) -> str:
    if value is None:
        return "n/a" if ratio else "not recovered"
    if isinstance(value, float):
        return f"{value:.3g}x" if ratio else f"{value:.5g}"
    return str(value)


_PAIRED_WINDOWS = [name for name, _, _ in learning_metrics.PAIRED_WINDOWS_S]
_LIVE_COLUMNS = [name for name, _, _ in learning_metrics.LIVE_WINDOWS_S] + ["last20s"]


def _met(flag) -> str:
    return "not measured" if flag is None else ("met" if flag else "not met")


def live_markdown(s: dict) -> list[str]:
    """The live figures: per robot windows, last 20 s, each swap, and issue 10's targets."""
    live, targets = s["live"], s["live_targets"]
    lines = [
        "",
        "## Live figures (the robots' own cost, from the cloud store)",
        "",
        f"{s['live_note']}.",
        "",
        "| robot | shift | pre-shift cost (10 s) | " + " | ".join(_LIVE_COLUMNS) + " | gaps | windows by |",
        "|---|---|---|" + "---|" * len(_LIVE_COLUMNS) + "---|---|",
    ]
    for robot_id, r in sorted(live.items()):
        ratios = " | ".join(_fmt(r["post_pre_ratio"].get(w), ratio=True) for w in _LIVE_COLUMNS)
        lines.append(
            f"| {robot_id} | {r['shift']} | {_fmt(r['pre_shift_cost'])} | {ratios} | {r['gaps']} | {r['indexing']} |"
        )
    lines += [
        "",
        "Swaps (mean cost of the 5 s after / the 5 s before):",
        "",
        "| robot | swap | at (s) | ratio | rollback |",
        "|---|---|---|---|---|",
    ]
    for robot_id, r in sorted(live.items()):
        for w in r["swaps"]:
            lines.append(
                f"| {robot_id} | v{w['from']} -> v{w['to']} | {w['t_s']:.1f} | "
                f"{_fmt(w['ratio'], ratio=True)} | {'yes' if w['rollback'] else 'no'} |"
            )
    robots = sorted(live)
    lines += [
        "",
        "Issue 10's live targets:",
        "",
        "| target | " + " | ".join(robots) + " | all robots |",
        "|---|" + "---|" * len(robots) + "---|",
    ]
    for t in targets.values():
        cells = " | ".join(f"{_fmt(t['value'][r], ratio=True)} ({_met(t['met'][r])})" for r in robots)
        flags = list(t["met"].values())
        overall = None if any(f is None for f in flags) else all(flags)
        lines.append(f"| {t['what']} <= {t['max']:g}x | {cells} | {_met(overall)} |")
    return lines


def markdown(s: dict) -> str:
    lines = [
        f"# nestor demo: {s['robots']} robots, {s['duration_s']} s, task `{s['task']}`",
        "",
        "![cost over time](cost.png)",
        "",
        "Consolidation rounds: [tensorboard/](tensorboard/) (`tensorboard --logdir tensorboard`); each robot's experience: `robots/<id>/experience.mcap` (Foxglove, `ros2 bag info`) and `experience.parquet`.",  # noqa: E501
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
            + ", ".join(f"{k} {v}" for k, v in s["missed_ticks_during_machine_stalls"].items())
            + ".",
        ]
        verdict = s.get("missed_ticks_verdict")
        if verdict:
            met = {True: "met", False: "NOT met", None: "undecided"}[verdict["met"]]
            lines += [
                "",
                f"Missed-ticks criterion ({verdict['rule']}): {met}; bound {verdict['bound']}, robots "
                + ", ".join(f"{k} {v['missed_ticks']}" for k, v in verdict["per_robot"].items())
                + ".",
            ]
    lines += live_markdown(s) if "live" in s else []
    lines += [
        "",
        "## Learning (seeded closed-loop evaluations in simulation)",
        "",
        f"- (a) fast weights: recovery_ticks_fast = {_fmt(s['recovery_ticks_fast'])}, "
        f"recovery_ticks_frozen = {_fmt(s['recovery_ticks_frozen'])} ({s['recovery_note']}).",
        f"  Old definition: recovery_ticks_fast_old_censored = {_fmt(s['recovery_ticks_fast_old_censored'])}, "
        f"recovery_ticks_frozen_old_censored = {_fmt(s['recovery_ticks_frozen_old_censored'])} "
        f"({s['recovery_old_note']}).",
        f"- (b) consolidation, v{s['initial_model_version']} vs v{s['consolidated_model_version']}: "
        f"L0 frozen: cost_initial_model = {_fmt(s['cost_initial_model'])}, "
        f"cost_consolidated_model = {_fmt(s['cost_consolidated_model'])} ({s['cost_note']}); "
        f"deployed: cost_initial_model_deployed = {_fmt(s['cost_initial_model_deployed'])}, "
        f"cost_consolidated_model_deployed = {_fmt(s['cost_consolidated_model_deployed'])} "
        f"({s['cost_deployed_note']}).",
        "",
        "Each shifted episode against its paired control (same model, seed and episode, no shift):",
        "",
        "| shift | model | L0 | pre-shift cost | first 100 ticks after | recovery paired (ticks) | "
        + " | ".join(f"paired {w}" for w in _PAIRED_WINDOWS)
        + " | late (300-600) | old band recovery |",
        "|---|---|---|---|---|---|" + "---|" * len(_PAIRED_WINDOWS) + "---|---|",
    ]
    for shift, r in s["learning"].items():
        for model in ("initial", "consolidated"):
            for mode in ("fast", "frozen"):
                e = r[f"{model}_{mode}"]
                ratios = " | ".join(_fmt(e.get("post_ratio_paired", {}).get(w), ratio=True) for w in _PAIRED_WINDOWS)
                lines.append(
                    f"| {shift} | {model} | {'on' if mode == 'fast' else 'frozen'} | {_fmt(e.get('pre_shift_cost'))} | "
                    f"{_fmt(e.get('post_shift_cost_100'))} | {_fmt(e.get('recovery_ticks_paired'))} | {ratios} | "
                    f"{_fmt(e.get('late_ratio_paired'), ratio=True)} | {_fmt(e.get('recovery_ticks'))} |"
                )
    lines.append("")
    return "\n".join(lines)
