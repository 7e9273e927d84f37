"""cost.png of a demo run: each robot's live cost, the share of each memory level, and the events.

Per robot, two panels on one time axis (seconds since the robot's first stored transition):
  - cost: per tick (grey) and its 1 s moving average, with the pre-shift mean +-10 % band;
  - the norm of each level's read (1 s moving averages): slow weights, L0 (`fast_read`) and L1
    (demo_report._level_norms; in a "window" graph the L1 read is a share of L0's).
Markers: the dynamics shift (red), model swaps with their 5 s after / 5 s before ratio (green),
and consolidation rounds that produced no push (orange: a candidate the gate rejected; grey: a
failed round). Both y axes are logarithmic with limits taken from the data (percentiles of what
is drawn, the cost's from after the first 5 s of start-up), so single spikes are clipped rather
than squeezing the rest into a corner.
"""

from pathlib import Path

import numpy as np
from nestor_core import learning_metrics

BAND = 0.10  # the pre-shift +-10 % band
WARMUP_S = 5.0  # seconds of start-up left out of the cost axis' limits
LEVELS = (("slow_norm", "slow weights (L2)", "C1"), ("l0_norm", "L0 read", "C4"), ("l1_norm", "L1 read", "C5"))


def log_limits(
    values, lo_pct: float = 1.0, hi_pct: float = 99.9, pad: float = 1.3, max_decades: float | None = None
) -> tuple[float, float] | None:
    """(low, high) for a log axis from the percentiles of the positive, finite values; None if none.

    With `max_decades`, at most that many decades below the top are shown: a read that is
    numerically zero (a model whose slow weights are still zero, 1e-6 N·m) would otherwise take
    most of the axis; it is drawn at the bottom edge.
    """
    v = np.concatenate([np.ravel(np.asarray(arr, np.float64)) for arr in values]) if values else np.zeros(0)
    v = v[np.isfinite(v) & (v > 0)]
    if len(v) == 0:
        return None
    lo, hi = np.percentile(v, lo_pct), np.percentile(v, hi_pct)
    if hi <= lo:
        hi = lo * 10.0
    if max_decades is not None:
        lo = max(lo, hi / 10.0**max_decades)
    return lo / pad, hi * pad


def _smooth(x: np.ndarray, ticks: int) -> np.ndarray:
    return learning_metrics.moving_average(np.asarray(x, np.float64), ticks)


def plot_cost(path: Path, series: dict, events: dict, live: dict, rounds: list[dict], rate_hz: float) -> None:
    """Write cost.png (see the module doc); robots without stored transitions are left out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    robots = sorted(r for r in series if len(series[r]["stamp"]))
    if not robots:
        return
    second = max(1, int(round(rate_hz)))
    fig, axes = plt.subplots(
        2 * len(robots),
        1,
        figsize=(12, 5.2 * len(robots)),
        squeeze=False,
        gridspec_kw={"height_ratios": [2.2, 1.0] * len(robots)},
    )
    for n, robot_id in enumerate(robots):
        s, fig_live = series[robot_id], live.get(robot_id, {})
        ax, ax_levels = axes[2 * n, 0], axes[2 * n + 1, 0]
        t0 = float(s["stamp"][0])
        t = s["stamp"] - t0
        ma = _smooth(s["cost"], second)
        pre = fig_live.get("pre_shift_cost")
        ax.plot(t, s["cost"], color="0.8", lw=0.5, label="cost per tick")
        ax.plot(t, ma, color="C0", lw=1.2, label="moving average (1 s)")
        if pre:
            ax.axhspan(
                pre * (1 - BAND),
                pre * (1 + BAND),
                color="C2",
                alpha=0.25,
                lw=0,
                label=f"pre-shift mean (10 s) +-{BAND:.0%}",
            )
        # The start-up transient (the first seconds, before the loop settles) may clip at the top.
        settled = t >= min(WARMUP_S, float(t[-1]) / 10.0)
        band = [[pre * (1 - BAND), pre * (1 + BAND)]] if pre else []
        limits = log_limits([s["cost"][settled], ma[settled], *band])
        ax.set_yscale("log")
        if limits:
            ax.set_ylim(*limits)
        top, bottom = ax.get_ylim()[1], ax.get_ylim()[0]
        for event in events.get(robot_id, []):
            if "stamp" in event:
                x = event["stamp"] - t0
                ax.axvline(x, color="C3", ls="--", lw=1.5)
                ax_levels.axvline(x, color="C3", ls="--", lw=1.0)
                ax.text(
                    x,
                    top,
                    f" {event.get('type', 'shift')} {event.get('magnitude', '')}",
                    color="C3",
                    va="top",
                    fontsize=8,
                )
        for swap in fig_live.get("swaps", []):
            x = swap["t_s"]
            ratio = "" if swap["ratio"] is None else f" {swap['ratio']:.2f}x"
            ax.axvline(x, color="C2", ls=":", lw=1.2)
            ax_levels.axvline(x, color="C2", ls=":", lw=0.8)
            ax.text(
                x, bottom, f" v{swap['from']}->v{swap['to']}{ratio}", color="C2", va="bottom", fontsize=8, rotation=90
            )
        for r in rounds:
            x = r["finished_unix"] - t0
            if r["accepted"] or not 0 <= x <= t[-1]:
                continue
            failed = bool(r["error"])
            color = "0.4" if failed else "C1"
            ax.axvline(x, color=color, ls="-.", lw=1.0)
            label = " round failed" if failed else f" v{r['version']} rejected"
            ax.text(x, top, label, color=color, va="top", ha="right", fontsize=8, rotation=90)
        ax.set_xlim(0, float(t[-1]))
        ax.set_title(f"{robot_id}: live cost (red: shift, green: swap with 5 s after/before, orange: rejected)")
        ax.set_ylabel("cost")
        ax.legend(loc="upper left", fontsize=8)
        levels = [(_smooth(s[key], second), label, color) for key, label, color in LEVELS if key in s]
        level_limits = log_limits([v for v, _, _ in levels], lo_pct=0.5, hi_pct=100.0, max_decades=3.0)
        if level_limits:
            floor = level_limits[0] * 1.05  # below the axis = numerically zero: drawn on its edge
            for value, label, color in levels:
                ax_levels.plot(t, np.maximum(value, floor), color=color, lw=1.0, label=label)
            ax_levels.set_yscale("log")
            ax_levels.set_ylim(*level_limits)
            ax_levels.legend(loc="lower right", fontsize=8, ncol=3)
        ax_levels.set_xlim(0, float(t[-1]))
        ax_levels.set_ylabel("|read| (N·m, 1 s avg)")
        ax_levels.set_xlabel("time since the robot's first stored transition (s)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
