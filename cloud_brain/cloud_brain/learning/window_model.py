"""The window policy's slow weights from data: system identification and inverse-dynamics fitting.

`initial_model(task_file, seed)` is the cloud's version-1 model (the `initial_model` hook of
cloud.yaml): its inverse dynamics are identified in simulation from the robot description (the
task's URDF), one control tick at a time, exactly as the robot measures it:

    sample a state (q, qd) in a tube around the task's reference and an effort u,
    run one control tick of the nominal plant, measure a = (qd' - qd) rate,
    regress u on (q, qd, a) with the structure of `WindowPolicy.tau`.

The same regression, on the fleet's recorded transitions mixed with these samples (so the model
keeps its coverage), is what consolidation does (`fit_inverse_dynamics`). Results are cached per
task file content, seed and code version in $NESTOR_CACHE (default ~/.cache/nestor): identifying
a 7-DoF arm takes ~10 s on one core.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import time

import numpy as np
import torch
from nestor_core.atomic_file import write_atomic

from cloud_brain.learning.window_policy import WindowPolicy, WindowSpec, joint_state

CACHE_VERSION = "window-v4"


@dataclasses.dataclass(frozen=True)
class SysIdConfig:
    """How the version-1 inverse dynamics are identified.

    Attributes:
        samples: one-tick transitions simulated.
        tube_q, tube_qd: std of the state around the reference (rad, rad/s; m, m/s for prismatic).
        passive_q, passive_qd: std of passive joints around their initial position.
        effort_fraction: efforts drawn uniformly in +-fraction x effort limit.
        steps, batch, lr: Adam fit of the regression.
    """

    samples: int = 20_000
    tube_q: float = 0.15
    tube_qd: float = 0.4
    passive_q: float = 0.4
    passive_qd: float = 1.0
    effort_fraction: float = 0.4
    steps: int = 3000
    batch: int = 512
    lr: float = 3e-3


def spec_for_task(task) -> WindowSpec:
    return WindowSpec(
        task=task.name,
        controlled_joints=tuple(task.controlled_joints),
        passive_joints=tuple(task.passive_joints),
        effort_limit=tuple(float(x) for x in task.effort_limit),
        control_rate_hz=float(task.control_rate_hz),
    )


def simulate_transitions(env, config: SysIdConfig, seed: int) -> dict[str, np.ndarray]:
    """One-tick transitions of the env's nominal plant: {prev_obs, obs, action} arrays."""
    import pybullet

    rng = np.random.default_rng(seed)
    task = env.task
    env.reset(seed=seed, options={"shifts": []})
    n, cid, body = task.act_dim, env._cid, env.body
    movable, c_slot, p_slot = env._movable, env._c_slot, env._p_slot
    limit = np.asarray(task.effort_limit, np.float64)
    initial = dict(task.initial_positions)
    period = float(task.episode_ticks) / task.control_rate_hz
    out = {
        k: np.zeros((config.samples, d), np.float32)
        for k, d in (("prev_obs", task.obs_dim), ("obs", task.obs_dim), ("action", n))
    }
    for i in range(config.samples):
        t = rng.uniform(0.0, period)
        q_ref, qd_ref = task.reference_at(t)
        q, qd = np.zeros(len(movable)), np.zeros(len(movable))
        q[c_slot] = q_ref + rng.normal(0.0, config.tube_q, n)
        qd[c_slot] = qd_ref + rng.normal(0.0, config.tube_qd, n)
        for k, name in enumerate(task.passive_joints):
            q[p_slot[k]] = initial.get(name, 0.0) + rng.normal(0.0, config.passive_q)
            qd[p_slot[k]] = rng.normal(0.0, config.passive_qd)
        for k, joint in enumerate(movable):
            pybullet.resetJointState(body, joint, q[k], qd[k], physicsClientId=cid)
        env.tick = int(round(t * task.control_rate_hz))
        env._read_state()
        out["prev_obs"][i] = env.observation()
        u = rng.uniform(-config.effort_fraction, config.effort_fraction, n) * limit
        env.apply_effort(u)
        env.advance()
        out["obs"][i] = env.observation()
        out["action"][i] = u
    env.reset(seed=seed, options={"shifts": []})
    return out


def set_normalisation(net: WindowPolicy, data: dict[str, np.ndarray]) -> None:
    """Input/acceleration scales of the inverse-dynamics model, from data (fixed afterwards)."""
    n, p = net.spec.act_dim, len(net.spec.passive_joints)
    prev, obs = torch.from_numpy(data["prev_obs"]), torch.from_numpy(data["obs"])
    q, qd = joint_state(prev, n, p)
    x = torch.cat([q, qd], dim=1)
    accel = net.measured_accel(prev, obs)
    with torch.no_grad():
        net.x_mean.copy_(x.mean(0, keepdim=True))
        net.x_std.copy_(x.std(0, keepdim=True).clamp_min(1e-3))
        net.a_std.copy_(accel.std(0, keepdim=True).clamp_min(1e-3))


def fit_inverse_dynamics(
    net: WindowPolicy,
    data: dict[str, np.ndarray],
    steps: int,
    lr: float,
    batch: int,
    seed: int,
    replay: dict[str, np.ndarray] | None = None,
    replay_fraction: float = 0.0,
) -> dict:
    """Regress the applied effort on (state, measured acceleration); updates net's slow weights.

    Loss: mean ||(tau(x, a) - u) / u_max||^2 over transitions whose effort is not saturated (at the
    limit the effort the plant needed is unknown). With `replay`, each batch takes
    `replay_fraction` of its samples from it (the no-forgetting mix).
    """
    gen = torch.Generator().manual_seed(seed)
    limit = net.u_max

    def tensors(d):
        prev, obs, act = (torch.from_numpy(np.ascontiguousarray(d[k])) for k in ("prev_obs", "obs", "action"))
        keep = (act.abs() < 0.999 * limit).all(dim=1) & torch.isfinite(prev).all(1) & torch.isfinite(obs).all(1)
        return prev[keep], obs[keep], act[keep]

    sets = [tensors(data)]
    if replay is not None and replay_fraction > 0 and len(replay["action"]):
        sets.append(tensors(replay))
    sizes = [len(s[0]) for s in sets]
    if min(sizes) == 0:
        return {"steps": 0, "samples": sizes}
    params = [p for name, p in net.named_parameters() if name.startswith("id")]
    optimiser = torch.optim.Adam(params, lr=lr)
    n_replay = int(round(batch * replay_fraction)) if len(sets) > 1 else 0
    losses = []
    for _ in range(steps):
        parts = []
        for (prev, obs, act), count in zip(sets, (batch - n_replay, n_replay), strict=False):
            if count:
                idx = torch.randint(0, len(prev), (count,), generator=gen)
                parts.append((prev[idx], obs[idx], act[idx]))
        prev, obs, act = (torch.cat([p[i] for p in parts]) for i in range(3))
        loss = (((net.disturbance(prev, obs, act)) / limit) ** 2).mean()  # disturbance = tau - u
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    with torch.no_grad():
        prev, obs, act = sets[0]
        rmse = ((net.disturbance(prev, obs, act) / limit) ** 2).mean(0).sqrt()
    return {
        "steps": steps,
        "samples": sizes,
        "loss_first": losses[0],
        "loss_last": float(np.mean(losses[-50:])),
        "rmse_per_joint": rmse.tolist(),
    }


def identify(task_file: str, seed: int = 0, config: SysIdConfig = SysIdConfig()) -> tuple[WindowPolicy, dict]:
    """A version-1 WindowPolicy whose inverse dynamics are identified in simulation."""
    from nestor_sim.task import load_task
    from nestor_sim.tracking_env import TrackingEnv

    torch.manual_seed(seed)
    task = load_task(task_file)
    net = WindowPolicy(spec_for_task(task), seed=seed)
    env = TrackingEnv(task)
    started = time.monotonic()
    try:
        data = simulate_transitions(env, config, seed)
    finally:
        env.close()
    set_normalisation(net, data)
    report = fit_inverse_dynamics(net, data, config.steps, config.lr, config.batch, seed)
    report["seconds"] = time.monotonic() - started
    return net, report


def _cache_path(task_file: str, seed: int) -> pathlib.Path:
    digest = hashlib.sha256(pathlib.Path(task_file).read_bytes() + f"|{seed}|{CACHE_VERSION}".encode()).hexdigest()
    root = pathlib.Path(os.environ.get("NESTOR_CACHE", pathlib.Path.home() / ".cache" / "nestor"))
    return root / "initial" / f"{digest[:24]}.onnx"


def initial_model(task_file: str, seed: int = 0) -> tuple[bytes, dict]:
    """ONNX bytes and IO signature of a task's version-1 window policy (cached)."""
    from cloud_brain.learning.window_export import export_window_onnx, import_window_onnx, window_io_signature

    path = _cache_path(task_file, seed)
    if path.is_file():
        data = path.read_bytes()
        try:
            return data, window_io_signature(import_window_onnx(data).spec)
        except Exception:  # a corrupt cache entry is rebuilt, never trusted
            path.unlink(missing_ok=True)
    torch.set_num_threads(1)
    net, _ = identify(task_file, seed)
    data = export_window_onnx(net)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data)
    return data, window_io_signature(net.spec)
