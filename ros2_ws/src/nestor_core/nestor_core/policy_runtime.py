"""The robot's policy step: ONNX inference with the L0 update inside, the short-horizon buffer,
and the L1 chunk memory. Pure numpy + onnxruntime, no ROS, no I/O: this is the tick path.

Swap semantics (documented in the README): `swap(model)` takes effect before the next tick.
L0 resets to the new model's meta-learned `fast_init` (the old fast weights encoded a residual
relative to the old slow weights, which the new slow weights have absorbed); L1 is kept (it is
this robot's own memory) unless its shape changed; the short-horizon buffer is kept (it holds
observations, not weights).
"""

import dataclasses

import numpy as np

from nestor_core.l1_chunk_memory import L1ChunkMemory
from nestor_core.policy_model import PolicyModel


@dataclasses.dataclass
class RuntimeConfig:
    """Robot-side learning configuration.

    Attributes:
        horizon: K, transitions kept in the short-horizon buffer.
        l0_step_scale: multiplies the L0 step size and decay; 0 freezes L0 (the ablation).
        l1_period: C, control ticks per L1 update.
        l1_step_scale: multiplies the model's L1 step size; 0 freezes L1.
        l1_max_abs: clip of each L1 memory entry (N·m or N).
    """

    horizon: int = 32
    l0_step_scale: float = 1.0
    l1_period: int = 200
    l1_step_scale: float = 1.0
    l1_max_abs: float = 50.0

    def validate(self) -> "RuntimeConfig":
        if self.horizon < 2:
            raise ValueError(f"horizon: must be >= 2, got {self.horizon}")
        if not (0.0 <= self.l0_step_scale <= 1.0):
            raise ValueError(f"l0_step_scale: must be in [0, 1], got {self.l0_step_scale}")
        if self.l1_period < 1:
            raise ValueError(f"l1_period: must be >= 1, got {self.l1_period}")
        if self.l1_step_scale < 0.0:
            raise ValueError(f"l1_step_scale: must be >= 0, got {self.l1_step_scale}")
        if not self.l1_max_abs > 0.0:
            raise ValueError(f"l1_max_abs: must be > 0, got {self.l1_max_abs}")
        return self


class ShortHorizonBuffer:
    """Ring buffer of the last K transitions (preallocated; no allocation per tick)."""

    def __init__(self, horizon: int, obs_dim: int, act_dim: int):
        self.horizon = horizon
        self.obs = np.zeros((horizon, obs_dim), np.float32)
        self.action = np.zeros((horizon, act_dim), np.float32)
        self.surprise = np.zeros(horizon, np.float32)
        self.count = 0

    def push(self, obs: np.ndarray, action: np.ndarray, surprise: float) -> None:
        i = self.count % self.horizon
        self.obs[i] = obs
        self.action[i] = action
        self.surprise[i] = surprise
        self.count += 1

    def last_obs(self) -> np.ndarray | None:
        return None if self.count == 0 else self.obs[(self.count - 1) % self.horizon]


@dataclasses.dataclass
class TickOutput:
    """What one tick produced, for the experience record."""

    action: np.ndarray
    fast_read: np.ndarray
    l1_read: np.ndarray
    surprise: float


class PolicyRuntime:
    """Runs one model tick by tick; swap() replaces the model between two ticks."""

    def __init__(self, model: PolicyModel, config: RuntimeConfig = RuntimeConfig(), l1_state=None):
        self.config = config.validate()
        self.model = model
        self.buffer = ShortHorizonBuffer(config.horizon, model.obs_dim, model.act_dim)
        self.fast_state = model.fast_init.copy()
        self.l1 = self._make_l1(model, l1_state)
        self.ticks = 0
        self._obs = np.zeros((1, model.obs_dim), np.float32)
        self._prev = np.zeros((1, model.obs_dim), np.float32)
        self._scale = np.array([config.l0_step_scale], np.float32)

    def _make_l1(self, model: PolicyModel, state) -> L1ChunkMemory:
        return L1ChunkMemory(
            model.act_dim,
            model.key_dim,
            self.config.l1_period,
            model.l1_step * self.config.l1_step_scale,
            model.l1_decay,
            self.config.l1_max_abs,
            state,
        )

    def step(self, obs: np.ndarray) -> TickOutput:
        """One control tick: L0 update + read inside the graph, L1 accumulate, buffer write."""
        self._obs[0] = obs
        last = self.buffer.last_obs()
        self._prev[0] = obs if last is None else last
        action, fast_out, fast_read, l1_read, surprise, update_dir = self.model.session.run(
            None,
            {
                "obs": self._obs,
                "prev_obs": self._prev,
                "fast_state": self.fast_state,
                "l1_state": self.l1.state,
                "l0_scale": self._scale,
            },
        )
        self.fast_state = fast_out
        self.l1.accumulate(update_dir)
        surprise_norm = float(np.sqrt(np.dot(surprise[0], surprise[0])))
        self.buffer.push(self._obs[0], action[0], surprise_norm)
        self.ticks += 1
        return TickOutput(action[0], fast_read[0], l1_read[0], surprise_norm)

    def swap(self, model: PolicyModel) -> None:
        """Replace the model; call only between two ticks (see module doc for state rules)."""
        if (model.obs_dim, model.act_dim) != (self.model.obs_dim, self.model.act_dim):
            raise ValueError(
                f"swap: model dims obs={model.obs_dim} act={model.act_dim} do not match "
                f"running obs={self.model.obs_dim} act={self.model.act_dim}"
            )
        keep_l1 = model.key_dim == self.model.key_dim
        self.model = model
        self.fast_state = model.fast_init.copy()
        self.l1 = self._make_l1(model, self.l1.state if keep_l1 else None)
