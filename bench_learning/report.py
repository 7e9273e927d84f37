"""The benchmark's report: the markdown summary and the plots."""

from __future__ import annotations

import json
import pathlib

import numpy as np

from bench_learning.cases import METHODS
from bench_learning.summary import TARGETS, _rec, learning_metrics_windows


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
