"""The sensor guard: a non-finite or physically impossible input never reaches the policy graph.

The ONNX graph turns NaN into 0 (its clip ops do), so a joint whose encoder reports NaN looks
like a joint at 0 rad, and the policy drives it at its effort limit. The policy node therefore
checks every observation here, before `runtime.step`:

  * every entry must be finite, and
  * every position (controlled, reference, passive) within `max_abs_position`, every velocity
    within `max_abs_velocity` (generous bounds: they catch garbage, not a joint near its limit).

On a bad tick the node skips `runtime.step` (so neither L0 nor L1 learns from it, and nothing is
recorded) and publishes `safe_command()`: the last good command for at most `hold_ticks` ticks,
then zero effort. A held command is never larger than the last good one, and zero is the
actuator's own safe state (a gravity-loaded arm sags, it is not driven). Plain numpy, no ROS.
"""

import numpy as np


class InputGuard:
    """Checks observations of one model layout; holds the safe command of bad ticks.

    Args:
        labels: one name per observation entry, used in the reason of a refusal
            (e.g. "joint_states.position[joint_4]").
        limits: one bound per observation entry: |obs[i]| must be <= limits[i].
        act_dim: size of a command.
        hold_ticks: bad ticks during which the last good command is held; then zero effort.
    """

    def __init__(self, labels: list[str], limits: np.ndarray, act_dim: int, hold_ticks: int):
        if len(labels) != len(limits):
            raise ValueError(f"labels/limits: {len(labels)} labels for {len(limits)} limits")
        if hold_ticks < 0:
            raise ValueError(f"hold_ticks: must be >= 0, got {hold_ticks}")
        self.labels = list(labels)
        self.limits = np.asarray(limits, np.float32)
        self.hold_ticks = hold_ticks
        self._abs = np.zeros(len(limits), np.float32)
        self._ok = np.zeros(len(limits), bool)
        self._last_good = np.zeros(act_dim, np.float64)
        self._zero = np.zeros(act_dim, np.float64)
        self.streak = 0  # consecutive bad ticks so far
        self.bad_ticks = 0  # every bad tick since start
        self.longest_streak = 0
        self.last_reason = ""

    def check(self, obs: np.ndarray) -> str | None:
        """None when `obs` is usable; otherwise the reason, naming the first bad entry."""
        np.abs(obs, out=self._abs)
        np.less_equal(self._abs, self.limits, out=self._ok)  # NaN compares False: caught here too
        if self._ok.all():
            return None
        i = int(np.argmin(self._ok))
        value = float(obs[i])
        if not np.isfinite(value):
            return f"non_finite: {self.labels[i]} is {value}"
        return f"out_of_range: {self.labels[i]} = {value:.6g}, beyond +-{float(self.limits[i]):g}"

    def good(self, command: np.ndarray) -> None:
        """Record the command of a good tick (ends a bad streak)."""
        self._last_good[:] = command
        self.streak = 0

    def bad(self, reason: str) -> np.ndarray:
        """Count a bad tick; returns the command to send instead of the policy's."""
        self.streak += 1
        self.bad_ticks += 1
        self.longest_streak = max(self.longest_streak, self.streak)
        self.last_reason = reason
        return self.safe_command()

    def safe_command(self) -> np.ndarray:
        """The last good command during the first `hold_ticks` bad ticks, zero effort after."""
        return self._last_good if self.streak <= self.hold_ticks else self._zero

    @property
    def holding_zero(self) -> bool:
        """True once a bad streak outlasted `hold_ticks` (the actuators get zero effort)."""
        return self.streak > self.hold_ticks


def observation_layout(
    controlled: tuple[str, ...], passive: tuple[str, ...], max_abs_position: float, max_abs_velocity: float
) -> tuple[list[str], np.ndarray]:
    """(labels, limits) for obs = concat(q_c, qd_c, q_ref, qd_ref, q_p, qd_p)."""
    labels = (
        [f"joint_states.position[{j}]" for j in controlled]
        + [f"joint_states.velocity[{j}]" for j in controlled]
        + [f"target.position[{j}]" for j in controlled]
        + [f"target.velocity[{j}]" for j in controlled]
        + [f"joint_states.position[{j}]" for j in passive]
        + [f"joint_states.velocity[{j}]" for j in passive]
    )
    n, p = len(controlled), len(passive)
    limits = np.concatenate(
        [
            np.full(n, max_abs_position),
            np.full(n, max_abs_velocity),
            np.full(n, max_abs_position),
            np.full(n, max_abs_velocity),
            np.full(p, max_abs_position),
            np.full(p, max_abs_velocity),
        ]
    ).astype(np.float32)
    return labels, limits
