"""The policy's observation: obs = concat(q_c, qd_c, q_ref, qd_ref, q_p, qd_p) from JointState fields.

``ObservationBuilder`` maps the joints of each message by name (cached while the name list stays
the same), keeps the newest target, and fills one preallocated float32 buffer; a message it
cannot use gives the reason instead. Plain numpy, no ROS: tested without DDS.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class JointIndex:
    """Cached mapping of a JointState name list to the indices of the joints we need."""

    def __init__(self):
        self.names: list[str] | None = None
        self.wanted: tuple[str, ...] = ()
        self.idx: np.ndarray | None = None
        self.missing: str | None = None

    def lookup(self, names, wanted: tuple[str, ...]) -> np.ndarray | None:
        """Indices of `wanted` in `names` (None when one is missing: see `.missing`)."""
        if names != self.names or wanted is not self.wanted:
            self.names = list(names)
            self.wanted = wanted
            where = {name: i for i, name in enumerate(self.names)}
            self.missing = next((j for j in wanted if j not in where), None)
            self.idx = None if self.missing else np.array([where[j] for j in wanted], np.intp)
        return self.idx


def _floats(values) -> np.ndarray:
    return np.frombuffer(values, np.float64) if len(values) else np.zeros(0)


def _sizes(what: str, names: Sequence[str], position, velocity) -> str | None:
    """The reason when a message's position or velocity array does not match its names; None if it does."""
    count = len(names)
    if len(position) != count or len(velocity) != count:
        return f"{what}: {count} names but {len(position)} positions, {len(velocity)} velocities"
    return None


class ObservationBuilder:
    """The observation buffer of one model shape (obs_dim, act_dim), refilled on every tick.

    Args:
        obs_dim: observation size of the model (4 * act_dim + 2 * passive joints).
        act_dim: number of controlled joints.

    Attributes:
        obs: the buffer `fill` writes (float32, obs_dim); the runtime reads it.
        have_target: a target has arrived (no command is sent before).
    """

    def __init__(self, obs_dim: int, act_dim: int):
        self.obs = np.zeros(obs_dim, np.float32)
        self.q_ref = np.zeros(act_dim, np.float32)
        self.qd_ref = np.zeros(act_dim, np.float32)
        self.have_target = False
        self._joints = JointIndex()
        self._passive = JointIndex()
        self._target = JointIndex()

    def set_target(self, names: Sequence[str], position, velocity, controlled: tuple[str, ...]) -> str | None:
        """Keep the target of the controlled joints; the reason when the message is unusable."""
        idx = self._target.lookup(names, controlled)
        if idx is None:
            return f"target: joint {self._target.missing!r} missing"
        if (reason := _sizes("target", names, position, velocity)) is not None:
            return reason
        self.q_ref[:] = np.frombuffer(position, np.float64)[idx]
        self.qd_ref[:] = np.frombuffer(velocity, np.float64)[idx]
        self.have_target = True
        return None

    def fill(
        self, names: Sequence[str], position, velocity, controlled: tuple[str, ...], passive: tuple[str, ...]
    ) -> str | None:
        """Write the observation of one joint state into `obs`; the reason when it is unusable."""
        n, p = len(controlled), len(passive)
        ctrl = self._joints.lookup(names, controlled)
        if ctrl is None:
            return f"joint_states: joint {self._joints.missing!r} missing"
        passive_idx = None
        if p:
            passive_idx = self._passive.lookup(names, passive)
            if passive_idx is None:
                return f"joint_states: joint {self._passive.missing!r} missing"
        if (reason := _sizes("joint_states", names, position, velocity)) is not None:
            return reason
        q, qd = _floats(position), _floats(velocity)
        obs = self.obs
        obs[0:n] = q[ctrl]
        obs[n : 2 * n] = qd[ctrl]
        obs[2 * n : 3 * n] = self.q_ref
        obs[3 * n : 4 * n] = self.qd_ref
        if p:
            obs[4 * n : 4 * n + p] = q[passive_idx]
            obs[4 * n + p :] = qd[passive_idx]
        return None
