"""Learning metrics shared by the cloud's evaluation gate, the demo report and the benchmarks.

All take a per-tick cost trace (numpy, one entry per control tick).
"""

import numpy as np

MA_WINDOW = 20  # ticks in the moving average of the cost
RECOVERY_TOLERANCE = 0.10  # "back within 10% of pre-shift"
PRE_WINDOW = 300  # ticks before the shift that define the pre-shift cost
HOLD = 50  # ticks the moving average must stay inside the band to count as recovered


def moving_average(cost: np.ndarray, window: int = MA_WINDOW) -> np.ndarray:
    """Trailing moving average; entry i averages cost[max(0, i - window + 1) .. i]."""
    cost = np.asarray(cost, np.float64)
    csum = np.concatenate([[0.0], np.cumsum(cost)])
    idx = np.arange(1, len(cost) + 1)
    lo = np.maximum(0, idx - window)
    return (csum[idx] - csum[lo]) / (idx - lo)


def pre_shift_cost(cost: np.ndarray, shift_tick: int, window: int = PRE_WINDOW) -> float:
    """Mean cost over the `window` ticks before the shift."""
    lo = max(0, shift_tick - window)
    if shift_tick <= lo:
        raise ValueError(f"shift_tick {shift_tick}: no ticks before the shift")
    return float(np.mean(cost[lo:shift_tick]))


def recovery_ticks(
    cost: np.ndarray,
    shift_tick: int,
    tolerance: float = RECOVERY_TOLERANCE,
    window: int = MA_WINDOW,
    pre_window: int = PRE_WINDOW,
    hold: int = HOLD,
) -> int | None:
    """Ticks after the shift until the moving-average cost is back within `tolerance` of pre-shift.

    Recovery counts only once the shift has been felt (the moving average first rises above the
    band) and only when the moving average then stays inside the band for `hold` ticks, so that a
    dip along a periodic trajectory is not mistaken for recovery. Returns 0 if the shift never
    left the band, None if the cost did not come back before the trace ends (not recovered).
    """
    cost = np.asarray(cost, np.float64)
    band = (1.0 + tolerance) * pre_shift_cost(cost, shift_tick, pre_window)
    inside = moving_average(cost, window)[shift_tick:] <= band
    above = np.flatnonzero(~inside)
    if len(above) == 0:
        return 0
    run = 0
    for i in range(int(above[0]), len(inside)):
        run = run + 1 if inside[i] else 0
        if run >= hold:
            return i - hold + 1
    return None


def window_mean(cost: np.ndarray, start: int, ticks: int) -> float:
    """Mean cost over [start, start + ticks)."""
    seg = np.asarray(cost, np.float64)[start : start + ticks]
    if len(seg) == 0:
        raise ValueError(f"window [{start}, {start + ticks}) is outside a trace of {len(cost)} ticks")
    return float(np.mean(seg))


def forgetting(cost_before: float, cost_after: float) -> float:
    """Relative increase of cost on earlier dynamics after consolidating on new ones."""
    return float((cost_after - cost_before) / max(cost_before, 1e-12))


# --- paired yardsticks (issue 9) ------------------------------------------------------------------
# A shifted run is compared with its paired control: the same model, seed and episode without the
# shift. The control carries the noise of the episode (the trajectory's own cost pattern), so a
# do-nothing shift scores 0 ticks and ratios of 1.00, and a better model is not punished for a
# lower pre-shift cost.

PAIRED_WINDOWS_S = (
    ("0-0.5s", 0.0, 0.5),
    ("0.5-1s", 0.5, 1.0),
    ("1-2s", 1.0, 2.0),
    ("2-5s", 2.0, 5.0),
    ("5-10s", 5.0, 10.0),
)
LIVE_WINDOWS_S = PAIRED_WINDOWS_S + (("10-20s", 10.0, 20.0),)
LATE_TICKS = (300, 600)  # the "settled" window after the shift, in ticks
BLOWUP_FACTOR = 1.0e3  # a run whose cost exceeds this multiple of its control's peak has blown up


def recovery_ticks_paired(
    cost: np.ndarray,
    control: np.ndarray,
    shift_tick: int,
    tolerance: float = RECOVERY_TOLERANCE,
    window: int = MA_WINDOW,
    hold: int = HOLD,
) -> int | None:
    """Ticks after the shift until the shifted run is back within `tolerance` of its paired control.

    Back means: the shifted run's moving average stays within `tolerance` of the paired control's
    moving average for `hold` ticks.

    Both traces are the same episode (same model, seed, start), `control` without the shift. The
    band is (1 + tolerance) x the control's moving average tick by tick. Returns the first tick
    (relative to the shift) of the first `hold`-tick run inside the band, 0 if the shifted run never
    left the band, None if it did not come back before the trace ends (not recovered).
    """
    cost, control = np.asarray(cost, np.float64), np.asarray(control, np.float64)
    n = min(len(cost), len(control))
    if not 0 <= shift_tick < n:
        raise ValueError(f"shift_tick {shift_tick}: outside traces of {n} ticks")
    ma, ma_ctl = moving_average(cost[:n], window)[shift_tick:], moving_average(control[:n], window)[shift_tick:]
    inside = ma <= (1.0 + tolerance) * ma_ctl + 1e-12
    if inside.all():
        return 0
    run = 0
    for i in range(len(inside)):
        run = run + 1 if inside[i] else 0
        if run >= hold:
            return i - hold + 1
    return None


def window_ratios(
    cost: np.ndarray, reference, start: int, rate_hz: float, windows=PAIRED_WINDOWS_S
) -> dict[str, float | None]:
    """Mean cost over each window after `start` divided by the reference.

    `reference` is either a trace of the same length (the paired control: ratio of the means over
    the same ticks) or a scalar (the live pre-shift mean). Windows that fall outside the trace are
    None.
    """
    cost = np.asarray(cost, np.float64)
    out: dict[str, float | None] = {}
    for name, lo_s, hi_s in windows:
        lo, hi = start + int(round(lo_s * rate_hz)), start + int(round(hi_s * rate_hz))
        if hi > len(cost):
            out[name] = None
            continue
        num = float(np.mean(cost[lo:hi]))
        if np.isscalar(reference):
            den = float(reference)
        else:
            den = float(np.mean(np.asarray(reference, np.float64)[lo:hi]))
        out[name] = num / max(den, 1e-12)
    return out


def late_ratio(cost: np.ndarray, control: np.ndarray, shift_tick: int, ticks=LATE_TICKS) -> float | None:
    """Mean cost over ticks [300, 600) after the shift / the paired control's over the same ticks."""
    lo, hi = shift_tick + ticks[0], shift_tick + ticks[1]
    if hi > min(len(cost), len(control)):
        return None
    return float(np.mean(cost[lo:hi]) / max(np.mean(control[lo:hi]), 1e-12))


def blew_up(cost: np.ndarray, control: np.ndarray | None = None, factor: float = BLOWUP_FACTOR) -> bool:
    """True if the trace has non-finite entries or exceeds `factor` x the control's peak cost."""
    cost = np.asarray(cost, np.float64)
    if not np.all(np.isfinite(cost)):
        return True
    if control is None:
        return False
    return bool(np.max(cost) > factor * max(float(np.max(control)), 1e-9))
