"""Closed-loop evaluation in simulation: the robot's own runtime driving a real PyBullet env.

Used by the consolidation gate, the demo report and the learning benchmark. It runs the same
`PolicyRuntime` (onnxruntime + numpy) that the robot's policy node runs, with no ROS in between,
so the numbers describe the model, seeded and repeatable.
"""

import dataclasses

import numpy as np
from nestor_core import learning_metrics
from nestor_core.policy_model import PolicyModel, load_model
from nestor_core.policy_runtime import PolicyRuntime, RuntimeConfig


@dataclasses.dataclass
class Rollout:
    """One closed-loop episode: per-tick cost and where the shift happened."""

    cost: np.ndarray
    shift_tick: int | None
    fast_read_norm: np.ndarray

    def summary(self) -> dict:
        out = {"mean_cost": float(np.mean(self.cost))}
        if self.shift_tick is not None and self.shift_tick > 0:
            s = self.shift_tick
            out["pre_shift_cost"] = learning_metrics.pre_shift_cost(self.cost, s)
            out["post_shift_cost_100"] = learning_metrics.window_mean(self.cost, s, 100)
            out["post_shift_cost"] = float(np.mean(self.cost[s:]))
            out["recovery_ticks"] = learning_metrics.recovery_ticks(self.cost, s)
        return out


def rollout(
    model: PolicyModel | bytes,
    env,
    shifts: list | None = None,
    seed: int = 0,
    ticks: int | None = None,
    runtime_config: RuntimeConfig | None = None,
    l1_state: np.ndarray | None = None,
    warmup_model: PolicyModel | None = None,
    swap_tick: int | None = None,
    adapter=None,
) -> Rollout:
    """Run one episode of `env` (a nestor_sim TrackingEnv) under `model`.

    Args:
        model: a verified PolicyModel or ONNX bytes (verified here).
        env: the environment; reset here with `shifts` (None keeps the task's schedule).
        shifts: dynamics-shift schedule for this episode.
        seed: episode seed.
        ticks: episode length (default: the task's episode length).
        runtime_config: robot-side learning config (l0_step_scale=0 freezes L0).
        l1_state: initial L1 memory.
        warmup_model: if given (with swap_tick), start with it and hot-swap to `model` at
            swap_tick, as the robot does.
        swap_tick: the tick of that swap.
        adapter: an extra fast level outside the graph (e.g. nestor_core.rls.RlsAdapter, the
            classic baseline): its `command(obs, action)` returns the action sent to the plant.
    """
    if isinstance(model, bytes | bytearray):
        model = load_model(bytes(model))
    config = runtime_config or RuntimeConfig()
    options = None if shifts is None else {"shifts": shifts}
    obs, info = env.reset(seed=seed, options=options)
    ticks = ticks or env.task.episode_ticks
    runtime = PolicyRuntime(warmup_model or model, config, l1_state=l1_state)
    cost = np.zeros(ticks)
    fast = np.zeros(ticks)
    shift_tick = None
    for t in range(ticks):
        if warmup_model is not None and t == swap_tick:
            runtime.swap(model)
        out = runtime.step(obs)
        if adapter is None:
            action = out.action
        else:
            window = runtime.model.l0_kind == "window" and t > 0
            action = adapter.command(obs, out.action, runtime.last_disturbance if window else None)
            runtime.set_applied(action)
        obs, reward, terminated, truncated, info = env.step(action)
        cost[t] = -reward
        fast[t] = float(np.linalg.norm(out.fast_read))
        if shift_tick is None and info.get("shifts_active"):
            shift_tick = t + 1
        if terminated:
            cost[t:] = cost[t]
            break
    return Rollout(cost=cost, shift_tick=shift_tick, fast_read_norm=fast)


def collect_experience(
    model: PolicyModel | bytes,
    env,
    robot_id: str,
    shifts: list | None = None,
    seed: int = 0,
    ticks: int | None = None,
    first_seq: int = 1,
    chunk: int = 100,
    runtime_config: RuntimeConfig | None = None,
):
    """Run one episode and return it as ExperienceBatch chunks, exactly as a robot records them.

    Used to seed the store in tests and benchmarks without ROS (same runtime, same record).
    """
    from nestor_core.experience import ExperienceBatch

    if isinstance(model, bytes | bytearray):
        model = load_model(bytes(model))
    ticks = ticks or env.task.episode_ticks
    options = None if shifts is None else {"shifts": shifts}
    obs, _ = env.reset(seed=seed, options=options)
    runtime = PolicyRuntime(model, runtime_config or RuntimeConfig())
    n, a = model.obs_dim, model.act_dim
    rec = {
        "obs": np.zeros((ticks, n), np.float32),
        "action": np.zeros((ticks, a), np.float32),
        "fast_read": np.zeros((ticks, a), np.float32),
        "slow_read": np.zeros((ticks, a), np.float32),
        "cost": np.zeros(ticks, np.float32),
        "surprise": np.zeros(ticks, np.float32),
    }
    for t in range(ticks):
        out = runtime.step(obs)
        rec["obs"][t] = obs
        rec["action"][t] = out.action
        rec["fast_read"][t] = out.fast_read
        rec["slow_read"][t] = out.l1_read
        rec["surprise"][t] = out.surprise
        obs, reward, terminated, truncated, _ = env.step(out.action)
        rec["cost"][t] = -reward
    dt = 1.0 / model.control_rate_hz
    batches = []
    for start in range(0, ticks, chunk):
        stop = min(ticks, start + chunk)
        batches.append(
            ExperienceBatch(
                robot_id=robot_id,
                task=model.task,
                first_seq=first_seq + start,
                stamp=np.arange(start, stop, dtype=np.float64) * dt,
                model_versions=np.full(stop - start, model.version, np.int64),
                l1_state=runtime.l1.state.copy(),
                **{k: v[start:stop] for k, v in rec.items()},
            )
        )
    return batches
