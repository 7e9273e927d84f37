"""The robot's policy step, the tick path: pure numpy + onnxruntime, no ROS, no I/O.

ONNX inference with the L0 update inside, the short-horizon buffer, and the L1 chunk memory.

Two graph kinds (nestor_core.policy_io). A "window" graph is stateless: the runtime keeps the
short-horizon window (the last K = horizon - 1 measured disturbances and their actions, plus the
observations they were measured on) and feeds it every tick; the graph fits the fast level on it.
On a swap to a window graph the window is re-measured with the new model (each buffered
transition's disturbance recomputed by the new graph), so the fast level starts from what the new
slow weights explain and nothing they absorbed is counted twice. Window graphs have no L1 input
(removed in issue 10: it changed the cost after a swap by under 5 %); for them the chunk memory
only averages the fits the graph reports (`update_dir`), which the robot uploads with its
experience so the cloud's gate knows what each robot lived.

Swap semantics of "delta" graphs (documented in the README): `swap(model)` takes effect before
the next tick and is bumpless. The fast weights encode what this robot learned on top of the old slow weights; the
new slow weights have absorbed part of it (the fleet's part), not necessarily this robot's part.
So L0 is kept and re-based: with the last observation o, the new model's key k = k_new(o) and
the action difference d = a_old(o) - a_new(o) (both with L0 frozen for that evaluation),

    M0 <- M0 + d k^T              (|k| = 1, so the new model's action at o equals the old one)

and L0 then keeps adapting from there. Before the first tick (no observation yet), and when the
old and new key sizes differ, L0 starts from the new model's meta-learned `fast_init`. L1 is
kept (it is this robot's own memory) unless its shape changed; the short-horizon buffer is kept
(it holds observations, not weights).
"""

import dataclasses

import numpy as np

from nestor_core import policy_io
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


class MeasurementWindow:
    """The window a "window" graph learns from: the last K transitions, oldest first.

    Row i holds the disturbance measured on transition i, its action, and the observation it
    started from (`obs[K]` is the newest transition's start, i.e. the previous tick's obs).
    """

    def __init__(self, k: int, obs_dim: int, act_dim: int):
        self.k = k
        self.dist = np.zeros((k, act_dim), np.float32)
        self.action = np.zeros((k, act_dim), np.float32)
        self.obs = np.zeros((k + 1, obs_dim), np.float32)  # transition starts, plus the newest
        self.age = np.full((k + 1, 1), policy_io.EMPTY_AGE, np.float32)
        self.filled = 0  # valid rows among the K
        self._ages = np.arange(k, 0, -1, dtype=np.float32).reshape(-1, 1)  # K .. 1

    def push(self, dist: np.ndarray, action: np.ndarray, start_obs: np.ndarray) -> None:
        """Appends a measured transition (it becomes age 1 at the next tick)."""
        if self.k:
            self.dist[:-1] = self.dist[1:]
            self.action[:-1] = self.action[1:]
            self.obs[:-2] = self.obs[1:-1]
            self.dist[-1], self.action[-1], self.obs[-2] = dist, action, start_obs
            self.filled = min(self.filled + 1, self.k)
            self.age[: self.k] = np.where(
                np.arange(self.k).reshape(-1, 1) >= self.k - self.filled, self._ages, policy_io.EMPTY_AGE
            )

    def set_newest(self, valid: bool) -> None:
        self.age[self.k, 0] = 0.0 if valid else policy_io.EMPTY_AGE


class PolicyRuntime:
    """Runs one model tick by tick; swap() replaces the model between two ticks."""

    def __init__(self, model: PolicyModel, config: RuntimeConfig = RuntimeConfig(), l1_state=None):
        self.config = config.validate()
        self.model = model
        self.buffer = ShortHorizonBuffer(config.horizon, model.obs_dim, model.act_dim)
        self.fast_state = model.fast_init.copy()
        self.l1 = self._make_l1(model, l1_state)
        self.ticks = 0
        self.swaps = 0
        self._obs = np.zeros((1, model.obs_dim), np.float32)
        self._prev = np.zeros((1, model.obs_dim), np.float32)
        self._scale = np.array([config.l0_step_scale], np.float32)
        self.window = MeasurementWindow(config.horizon - 1, model.obs_dim, model.act_dim)
        self._prev_action = np.zeros((1, model.act_dim), np.float32)
        self.last_disturbance = np.zeros(model.act_dim, np.float32)

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
        if self.model.l0_kind == policy_io.WINDOW:
            return self._step_window(obs)
        self._obs[0] = obs
        last = self.buffer.last_obs()
        self._prev[0] = obs if last is None else last
        action, fast_out, fast_read, l1_read, surprise, update_dir, _ = self.model.session.run(
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

    def _window_feeds(self, model: PolicyModel, obs, prev, prev_action) -> dict[str, np.ndarray]:
        w = self.window
        return {
            "obs": obs,
            "prev_obs": prev,
            "prev_action": prev_action,
            "window_dist": w.dist,
            "window_action": w.action,
            "window_age": w.age,
            "l0_scale": self._scale,
        }

    def _step_window(self, obs: np.ndarray) -> TickOutput:
        self._obs[0] = obs
        has_prev = self.buffer.count > 0
        if not has_prev:
            self._prev[0] = obs
        self.window.set_newest(has_prev)
        action, fast_read, l1_read, surprise, coef, disturbance, _ = self.model.session.run(
            None, self._window_feeds(self.model, self._obs, self._prev, self._prev_action)
        )
        if has_prev:
            self.window.push(disturbance[0], self._prev_action[0], self._prev[0])
        self.last_disturbance = disturbance[0]
        self.l1.accumulate(coef)
        surprise_norm = float(np.sqrt(np.dot(surprise[0], surprise[0])))
        self.buffer.push(self._obs[0], action[0], surprise_norm)
        self._prev[0] = obs
        self._prev_action[0] = action[0]
        self.window.obs[-1] = obs
        self.ticks += 1
        return TickOutput(action[0], fast_read[0], l1_read[0], surprise_norm)

    def _remeasure(self, model: PolicyModel) -> None:
        """Recomputes every buffered disturbance with `model` (the swap's re-fit of L0)."""
        w = self.window
        start = w.k - w.filled
        nxt = np.zeros((1, model.obs_dim), np.float32)
        prev = np.zeros((1, model.obs_dim), np.float32)
        act = np.zeros((1, model.act_dim), np.float32)
        for i in range(start, w.k):
            prev[0] = w.obs[i]
            nxt[0] = w.obs[i + 1]
            act[0] = w.action[i]
            w.dist[i] = model.session.run(["disturbance"], self._window_feeds(model, nxt, prev, act))[0][0]

    def set_applied(self, action: np.ndarray) -> None:
        """Records the action the plant actually got this tick.

        For when something outside the graph changed it (a baseline adapter, a safety hold): the
        next measurement must use it.
        """
        self._prev_action[0] = action
        self.buffer.action[(self.buffer.count - 1) % self.buffer.horizon] = action

    def _frozen_run(self, model: PolicyModel, fast_state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(action, key) of `model` at the last observation, with L0 frozen for this evaluation."""
        outputs = model.session.run(
            ["action", "key"],
            {
                "obs": self._obs,
                "prev_obs": self._prev,
                "fast_state": fast_state,
                "l1_state": self.l1.state,
                "l0_scale": np.zeros(1, np.float32),
            },
        )
        return outputs[0][0], outputs[1][0]

    def swap(self, model: PolicyModel) -> None:
        """Replace the model; call only between two ticks (see module doc for state rules)."""
        if (model.obs_dim, model.act_dim) != (self.model.obs_dim, self.model.act_dim):
            raise ValueError(
                f"swap: model dims obs={model.obs_dim} act={model.act_dim} do not match "
                f"running obs={self.model.obs_dim} act={self.model.act_dim}"
            )
        if model.l0_kind == policy_io.WINDOW:
            same_l1 = self.model.l0_kind == policy_io.WINDOW
            self._remeasure(model)
            self.model = model
            self.l1 = self._make_l1(model, self.l1.state if same_l1 else None)
            self.swaps += 1
            return
        if self.model.l0_kind == policy_io.WINDOW:
            self.fast_state = model.fast_init.copy()
            self.model = model
            self.l1 = self._make_l1(model, None)
            self.swaps += 1
            return
        same_keys = model.key_dim == self.model.key_dim
        if same_keys and self.ticks > 0:
            old_action, _ = self._frozen_run(self.model, self.fast_state)
            new_action, key = self._frozen_run(model, self.fast_state)
            # The graph clips the memory it is fed, so no bound is needed here.
            self.fast_state = self.fast_state + np.outer(old_action - new_action, key).astype(np.float32)
        else:
            self.fast_state = model.fast_init.copy()
        self.model = model
        self.l1 = self._make_l1(model, self.l1.state if same_keys else None)
        self.swaps += 1

    def set_l0_step_scale(self, scale: float) -> None:
        """Change the L0 step scale from the next tick on (the run-time `l0_step_scale` parameter)."""
        self.config.l0_step_scale = scale
        self._scale[0] = scale
