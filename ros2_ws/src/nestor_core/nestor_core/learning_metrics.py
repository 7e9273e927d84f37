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
