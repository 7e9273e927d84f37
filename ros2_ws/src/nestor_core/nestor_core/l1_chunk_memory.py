"""L1: the robot's own medium-frequency memory, updated once every C control ticks.

Every tick the policy graph emits `update_dir = e_t k_{t-1}^T` (the L0 surprise times the key
it belongs to). L1 sums it over a chunk of C ticks and then takes one step:

    M1 <- clip((1 - decay) M1 + step * mean_chunk(update_dir), -max_abs, max_abs)

Its read `M1 k_t` adds to the action inside the graph. L1 persists across episodes and model
swaps (it is this robot's memory, not the fleet's), and its state rides with uploaded
experience so the cloud can learn from it.
"""

import numpy as np


class L1ChunkMemory:
    """Chunked error accumulator and associative matrix [act_dim, key_dim]."""

    def __init__(
        self,
        act_dim: int,
        key_dim: int,
        period: int,
        step: float,
        decay: float,
        max_abs: float,
        state: np.ndarray | None = None,
    ):
        if period < 1:
            raise ValueError(f"l1_period: must be >= 1, got {period}")
        if not (0.0 <= decay <= 1.0):
            raise ValueError(f"l1_decay: must be in [0, 1], got {decay}")
        if step < 0.0:
            raise ValueError(f"l1_step: must be >= 0, got {step}")
        self.period = int(period)
        self.step = float(step)
        self.decay = float(decay)
        self.max_abs = float(max_abs)
        self.state = np.zeros((act_dim, key_dim), np.float32)
        if state is not None and state.shape == self.state.shape and np.all(np.isfinite(state)):
            self.state[...] = state
        self._acc = np.zeros_like(self.state)
        self._count = 0
        self.updates = 0

    def accumulate(self, update_dir: np.ndarray) -> bool:
        """Add one tick's update direction; returns True when this tick closed a chunk."""
        self._acc += update_dir
        self._count += 1
        if self._count < self.period:
            return False
        if self.step > 0.0:
            self.state *= 1.0 - self.decay
            self.state += (self.step / self._count) * self._acc
            np.clip(self.state, -self.max_abs, self.max_abs, out=self.state)
        self._acc[...] = 0.0
        self._count = 0
        self.updates += 1
        return True
