"""The live learning figures of a demo run: a robot's own cost around its shift and its swaps.

Input is one robot's stored series (stamp, cost, model version per transition, from the cloud
store) and its shift event. Every figure is a ratio of mean costs over time windows:

  - `post_pre_ratio`: the windows of `learning_metrics.LIVE_WINDOWS_S` after the shift, and the
    run's last 20 s, over the mean cost of the 10 s before the shift;
  - `swaps`: for every model change, the mean cost over the 5 s after it over the 5 s before.

Windows are placed by time stamps, never by assumed tick counts: a robot that missed ticks has
fewer transitions in a window, not a window shifted in time. When a series has no gap, the
post-shift windows go through `learning_metrics.window_ratios` (by index), which then selects
exactly the same transitions. Each window is [t0 + lo - h, t0 + hi - h) with h half a tick and
t0 the stamp of the first transition at or after the event, so a regular series gives exactly
round(lo * rate) .. round(hi * rate) - 1 ticks after t0, whatever the float rounding of stamps.
A window the series does not cover is None (not measured), never a partial mean.
"""

import numpy as np
from nestor_core import learning_metrics

PRE_SHIFT_S = 10.0  # the reference: mean cost of the 10 s before the shift
SWAP_WINDOW_S = 5.0  # a swap's ratio: mean cost of the 5 s after over the 5 s before
LAST_S = 20.0  # the run's last 20 s, over the same pre-shift reference
GAP_TICKS = 1.5  # a stamp step above this many ticks is a gap (missed ticks)

# Issue 10's live targets (post-shift / pre-shift, and every swap); judged, never loosened here.
TARGETS = (
    ("0.5-1s", "0.5-1 s after the shift", 3.0),
    ("2-5s", "2-5 s after the shift", 1.3),
    ("last20s", "last 20 s of the run", 1.1),
)
SWAP_TARGET = 1.1


def gaps(stamp: np.ndarray, rate_hz: float) -> int:
    """Number of stamp steps longer than GAP_TICKS ticks."""
    return int(np.count_nonzero(np.diff(stamp) > GAP_TICKS / rate_hz)) if len(stamp) > 1 else 0


def span_mean(stamp: np.ndarray, cost: np.ndarray, lo_t: float, hi_t: float, rate_hz: float) -> float | None:
    """Mean cost of the transitions stamped in [lo_t, hi_t); None if the series does not cover it.

    Covered means the series starts no later than half a tick after lo_t and ends no earlier
    than one tick before hi_t (the last tick of the span), so a gap inside the span thins it but
    a span cut off by the run's start or end is not measured.
    """
    if len(stamp) == 0:
        return None
    half = 0.5 / rate_hz
    if stamp[0] > lo_t + half or stamp[-1] < hi_t - 1.0 / rate_hz - half:
        return None
    i, j = np.searchsorted(stamp, lo_t, "left"), np.searchsorted(stamp, hi_t, "left")
    return float(np.mean(cost[i:j])) if j > i else None


def _ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None:
        return None
    return num / max(den, 1e-12)


def window_ratios_by_time(
    stamp: np.ndarray,
    cost: np.ndarray,
    t0: float,
    reference: float,
    rate_hz: float,
    windows=learning_metrics.LIVE_WINDOWS_S,
) -> dict[str, float | None]:
    """Mean cost over each window after t0 (by stamps) over `reference`."""
    half = 0.5 / rate_hz
    return {
        name: _ratio(span_mean(stamp, cost, t0 + lo - half, t0 + hi - half, rate_hz), reference)
        for name, lo, hi in windows
    }


def model_changes(version: np.ndarray) -> list[int]:
    """Indices of the transitions that ran a different model version than the one before."""
    return (np.flatnonzero(np.diff(version) != 0) + 1).tolist() if len(version) > 1 else []


def robot_live(series: dict | None, shift_stamp: float | None, rate_hz: float, swap_log=None) -> dict:
    """The live figures of one robot (see the module doc).

    Args:
        series: `stamp`, `cost`, `version` arrays in seq order (the cloud store's), or None.
        shift_stamp: the shift's stamp (events.jsonl, same clock as the series), or None.
        rate_hz: the control rate.
        swap_log: the robot's swap log (policy_stats.json), to flag rollbacks among the changes.
    """
    windows = [name for name, _, _ in learning_metrics.LIVE_WINDOWS_S]
    out = {
        "post_pre_ratio": {name: None for name in [*windows, "last20s"]},
        "last20s": None,
        "pre_shift_cost": None,
        "shift_s": None,
        "swaps": [],
        "gaps": 0,
        "indexing": "time stamps",
    }
    if series is None or len(series["stamp"]) == 0:
        return out
    stamp = np.asarray(series["stamp"], np.float64)
    cost = np.asarray(series["cost"], np.float64)
    version = np.asarray(series["version"])
    half = 0.5 / rate_hz
    out["gaps"] = gaps(stamp, rate_hz)
    if shift_stamp is not None:
        k = int(np.searchsorted(stamp, shift_stamp, "left"))
        if k < len(stamp):
            t0 = float(stamp[k])
            out["shift_s"] = t0 - float(stamp[0])
            pre = span_mean(stamp, cost, t0 - PRE_SHIFT_S - half, t0 - half, rate_hz)
            out["pre_shift_cost"] = pre
            if pre is not None:
                if out["gaps"] == 0:
                    ratios = learning_metrics.window_ratios(cost, pre, k, rate_hz, learning_metrics.LIVE_WINDOWS_S)
                    out["indexing"] = "ticks (no gap in the series)"
                else:
                    ratios = window_ratios_by_time(stamp, cost, t0, pre, rate_hz)
                end = float(stamp[-1])
                last = _ratio(span_mean(stamp, cost, end - LAST_S + half, end + half, rate_hz), pre)
                # The last 20 s only count as "after the shift" if they all are.
                last = last if end - LAST_S + half >= t0 - half else None
                out["post_pre_ratio"] = {**ratios, "last20s": last}
                out["last20s"] = last
    rollbacks = {(e.get("from_version"), e.get("to_version")) for e in swap_log or [] if e.get("rollback")}
    for i in model_changes(version):
        t = float(stamp[i])
        before = span_mean(stamp, cost, t - SWAP_WINDOW_S - half, t - half, rate_hz)
        after = span_mean(stamp, cost, t - half, t + SWAP_WINDOW_S - half, rate_hz)
        frm, to = int(version[i - 1]), int(version[i])
        out["swaps"].append(
            {
                "from": frm,
                "to": to,
                "ratio": _ratio(after, before),
                "t_s": t - float(stamp[0]),
                "rollback": (frm, to) in rollbacks,
            }
        )
    return out


def targets(live: dict[str, dict]) -> dict[str, dict]:
    """Issue 10's live targets per robot: value, limit and met (None when not measured)."""
    out = {}
    for key, label, limit in TARGETS:
        per_robot = {r: fig["post_pre_ratio"].get(key) for r, fig in live.items()}
        out[key] = {
            "what": f"mean cost {label} / mean of the 10 s before the shift",
            "max": limit,
            "value": per_robot,
            "met": {r: None if v is None else bool(v <= limit) for r, v in per_robot.items()},
        }
    worst = {}
    for r, fig in live.items():
        ratios = [s["ratio"] for s in fig["swaps"] if s["ratio"] is not None]
        worst[r] = max(ratios) if ratios else None
    out["swaps"] = {
        "what": "every swap: mean cost of the 5 s after / the 5 s before (value: the worst swap)",
        "max": SWAP_TARGET,
        "value": worst,
        "met": {r: None if v is None else bool(v <= SWAP_TARGET) for r, v in worst.items()},
    }
    return out
