"""L2, minutes, in the cloud: consolidate the fleet's experience into slow weights, and
meta-learn how the fast levels (L0, L1) learn.

Read top to bottom, one round is:
  1. sample memories: the new rows of the store (what the fleet lived since the last round)
     mixed with replay from the L3 reservoir (old and rare dynamics), then offer the new rows
     to L3;
  2. unroll the fast levels: the effort the robot's L0 memory added is the slow target;
  3. compute the loss: slow MLP output vs. (slow + L0) residual the robot actually applied;
  4. step the optimiser;
  4b. meta-learn L0 and L1 (below);
  5. evaluate parent and candidate in simulation (the gate: no regression on the dynamics
     already seen), taking the largest non-regressing step toward the trained weights;
  6. export the candidate to ONNX.

Meta-learning L0 and L1 (step 4b). The robot's L0 runs `l0_fast_weights.tick` every tick; its
parameters theta = (fast_init, eta_max, gate, beta_max, decay, gain, lam) decide how fast and
how well it adapts. L2 learns theta by differentiating through the unrolled inner updates:

  * data: windows of `meta_window` consecutive recorded ticks (new rows and L3 replay, so the
    windows span every dynamics the fleet met). The unroll is OPEN LOOP: it replays recorded
    observations, it does not re-simulate the plant under the candidate (that is the gate's
    job, closed loop, in simulation);
  * inner loop: L0 starts every window from the meta-learned fast_init (MAML style: one
    initial state and step sizes that adapt quickly to any window's dynamics) and steps the
    delta rule along the window, exactly the robot's update (`l0_fast_weights.unroll`);
  * target (feedback-error learning, Kawato 1987): at tick t the fast read should have been
    the residual that was applied, minus what the newly trained slow MLP now supplies, plus the
    PD prior's feedback at t+1 (the correction the feedback loop had to make afterwards):
        d_t = (a_t - prior(o_t) - l1_t) - slow(o_t) + prior(o_{t+1})
    The target does not depend on theta, so the loss sum_t ||(read_t(theta) - d_t) / u_max||^2
    is a plain regression through the unroll;
  * truncation: windows are `meta_window` ticks (BPTT truncated there), `meta_batch` windows
    per step, at most `meta_steps` steps and `meta_seconds` of wall time: a few seconds on
    one CPU thread;
  * parametrisation and safety envelope: positive parameters are learned in log space and
    clamped to a stable envelope (`L0_BOUNDS`), fast_init to +-fast_init_max_per_limit of
    the effort limit; the closed-loop gate then rejects (or shrinks) anything that still
    hurts;
  * L1: its step size is meta-learned on whole recorded sequences: L1 accumulates
    e_t k_{t-1}^T over chunks of `l1_period` ticks (vectorised; it does not depend on L0's
    state) and, after each chunk, should predict the mean FEL target of the next chunk.

Every level's step size is config: `learning_rate` (L2 slow weights) and `meta_lr` (L0/L1
meta-parameters); 0 freezes that level (the ablation). `replay_fraction` = 0 is the
no-replay ablation (naive fine-tuning); `gate` = False pushes whatever was trained.

It runs in a child process started by the scheduler (nice 10, one torch thread), so training
never competes with ingest or with the robots' control loops for more than one core.
"""

import copy
import dataclasses
import logging
import math
import time
import types

import numpy as np
import torch
from nestor_core.policy_model import load_model

from cloud_brain.experience.store import ExperienceStore
from cloud_brain.learning import l0_fast_weights as l0fw
from cloud_brain.learning.evaluation import rollout
from cloud_brain.learning.l3_reservoir import L3Reservoir, ReservoirConfig, Window, windows_of_batch
from cloud_brain.learning.policy_export import export_onnx, import_onnx, io_signature
from cloud_brain.learning.policy_net import NestedPolicy

log = logging.getLogger(__name__)

# Stable envelope of the meta-learned L0/L1 parameters (per unit of effort limit where noted).
# gain above ~0.01 x limit per unit surprise destabilises kuka_track on payload shifts.
L0_BOUNDS = {
    "gain_per_limit": (0.0005, 0.008),
    "eta_max": (0.02, 1.0),
    "beta_max": (1e-6, 0.01),
    "lam": (1.0, 20.0),
    "gate": (-10.0, 10.0),
    "decay": (-10.0, 10.0),
    "l1_step": (0.0, 1.0),
}


@dataclasses.dataclass(frozen=True)
class ConsolidationConfig:
    """Hyper-parameters of one round.

    Attributes:
        max_transitions: newest new transitions used per round (older ones are L3's job).
        steps: optimiser steps of the slow weights.
        batch_size: transitions per step.
        learning_rate: Adam step size of the slow weights (L2's step size; 0 freezes them).
        id_learning_rate: Adam step size of a window policy's inverse dynamics (its slow weights);
            a fine-tune of a model identified on broad simulated data, hence 30x smaller (3e-3
            on trajectory data made every round regress on nominal in the gate; 3e-4 improved
            nominal by 48 % in a demo round but regressed the payload scenario by 13-62 %).
        replay_fraction: share of each batch drawn from L3 replay when the reservoir holds
            anything (0 = no replay: naive fine-tuning on new data only).
        l3_capacity_transitions: bound of the L3 reservoir per task.
        l3_window: ticks per L3 item.
        l3_novelty_weight: weight of novelty in the L3 priority.
        meta_lr: Adam step size of the L0/L1 meta-parameters (0 = no meta-learning).
        meta_steps: meta-gradient steps per round.
        meta_window: ticks per unrolled window (truncation of the inner loop).
        meta_batch: windows per meta step.
        meta_seconds: wall-time cap of the meta-learning.
        meta_surprise_power: windows weigh (surprise / mean surprise)^power in the meta loss
            (0 = all windows equal; 1 or 2 emphasise where L0 had to adapt: measured on kuka
            payload/torque_bias, it did not lower the post-shift cost, so off by default).
        fast_init_max_per_limit: clamp of the meta-learned initial L0 memory.
        l1_period: C, ticks per L1 update on the robots (RuntimeConfig.l1_period).
        eval_ticks: length of each gate episode.
        eval_shift_s: time of the dynamics shift inside a gate episode.
        gate: evaluate candidates before pushing (False: push the trained weights).
        gate_shifts: dynamics the gate checks besides nominal, as 'type:magnitude[#target]'
            (None: the task file's shifts).
        gate_tolerance: candidate may be at most this fraction worse than the parent per scenario.
        blend_steps: steps from the parent toward the trained weights tried in order; the first
            that passes the gate is the candidate.
    """

    max_transitions: int = 60_000
    steps: int = 400
    batch_size: int = 512
    learning_rate: float = 3e-3
    id_learning_rate: float = 1e-4
    replay_fraction: float = 0.5
    l3_capacity_transitions: int = 20_000
    l3_window: int = 50
    l3_novelty_weight: float = 2.0
    meta_lr: float = 0.01
    meta_steps: int = 40
    meta_window: int = 48
    meta_batch: int = 96
    meta_seconds: float = 8.0
    meta_surprise_power: float = 0.0
    fast_init_max_per_limit: float = 0.2
    l1_period: int = 200
    eval_ticks: int = 1000
    eval_shift_s: float = 4.0
    gate: bool = True
    gate_shifts: tuple[str, ...] | None = None
    gate_tolerance: float = 0.05
    blend_steps: tuple[float, ...] = (1.0, 0.5, 0.25, 0.1, 0.05)

    def validate(self) -> "ConsolidationConfig":
        if not 0.0 <= self.replay_fraction < 1.0:
            raise ValueError(f"replay_fraction: must be in [0, 1), got {self.replay_fraction}")
        if self.learning_rate < 0 or self.meta_lr < 0:
            raise ValueError("learning_rate/meta_lr: must be >= 0")
        if self.id_learning_rate < 0:
            raise ValueError(f"id_learning_rate: must be >= 0, got {self.id_learning_rate}")
        if self.meta_window < 2 or self.meta_window > self.l3_window:
            raise ValueError(f"meta_window: must be in [2, l3_window={self.l3_window}], got {self.meta_window}")
        return self


@dataclasses.dataclass
class Memories:
    """Training arrays of one round: observation and the residual target for the slow MLP."""

    obs: np.ndarray
    target: np.ndarray
    rows: int


def seed_everything(seed: int) -> None:
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def residual_targets(net: NestedPolicy, obs, action, l1_read) -> Memories:
    """Slow target action - PD prior - L1 read, dropping ticks whose action hit the limit.

    L1 is left out on purpose: it is the robot's own memory and survives the swap, so folding it
    into the fleet's slow weights would count it twice. At the limit the true residual is unknown.
    """
    if len(obs) == 0:
        return Memories(obs, np.zeros((0, net.spec.act_dim), np.float32), 0)
    with torch.no_grad():
        prior = net.prior(torch.from_numpy(obs)).numpy()
    limits = np.asarray(net.spec.effort_limit, np.float32)
    unsaturated = np.all(np.abs(action) < 0.999 * limits, axis=1)
    target = (action - prior - l1_read)[unsaturated]
    return Memories(obs[unsaturated], target.astype(np.float32), 0)


def sample_memories(
    store: ExperienceStore, net: NestedPolicy, task: str, up_to_row: int, limit: int, after_row: int = 0
) -> Memories:
    """Step 1-2 (new data): newest `limit` transitions of rows (after_row, up_to_row]."""
    return memories_of(net, list(store.read_batches(task, after_row, up_to_row)), limit)


def memories_of(net: NestedPolicy, batches: list, limit: int) -> Memories:
    """Step 1-2 (new data) from batches already read: their newest `limit` transitions."""
    if not batches:
        return Memories(np.zeros((0, net.spec.obs_dim), np.float32), np.zeros((0, net.spec.act_dim), np.float32), 0)
    obs = np.concatenate([b.obs for b in batches])[-limit:]
    action = np.concatenate([b.action for b in batches])[-limit:]
    l1_read = np.concatenate([b.slow_read for b in batches])[-limit:]
    memories = residual_targets(net, obs, action, l1_read)
    memories.rows = len(batches)
    return memories


def replay_memories(net: NestedPolicy, windows: list[Window]) -> Memories:
    """Step 1 (replay): the same residual targets, from L3 windows."""
    if not windows:
        act = np.zeros((0, net.spec.act_dim), np.float32)
        return residual_targets(net, np.zeros((0, net.spec.obs_dim), np.float32), act, act)
    return residual_targets(net, np.concatenate([w.obs for w in windows]), np.concatenate([w.action for w in windows]),
                            np.concatenate([w.l1_read for w in windows]))


def train_slow_weights(
    net: NestedPolicy, memories: Memories, config: ConsolidationConfig, seed: int, replay: Memories | None = None
) -> dict:
    """Steps 3-4: regress the slow MLP onto the residual targets (loss scaled per joint).

    With replay, each batch takes `replay_fraction` of its samples from the replay memories.
    """
    gen = torch.Generator().manual_seed(seed)
    obs, target = torch.from_numpy(memories.obs), torch.from_numpy(memories.target)
    use_replay = replay is not None and len(replay.obs) > 0 and config.replay_fraction > 0
    if use_replay:
        r_obs, r_target = torch.from_numpy(replay.obs), torch.from_numpy(replay.target)
    scale = torch.tensor(net.spec.effort_limit, dtype=torch.float32)
    optimiser = torch.optim.Adam(net.mlp.parameters(), lr=config.learning_rate)
    losses = []
    n_batch = min(config.batch_size, len(obs))
    n_replay = int(round(config.replay_fraction * n_batch)) if use_replay else 0
    for _ in range(config.steps if config.learning_rate > 0 else 0):
        idx = torch.randint(0, len(obs), (n_batch - n_replay,), generator=gen)
        x, y = obs[idx], target[idx]
        if n_replay:
            ridx = torch.randint(0, len(r_obs), (n_replay,), generator=gen)
            x, y = torch.cat([x, r_obs[ridx]]), torch.cat([y, r_target[ridx]])
        loss = (((net.slow(x) - y) / scale) ** 2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    if not losses:
        return {"loss_first": None, "loss_last": None, "samples": len(obs), "replay_samples": 0}
    return {"loss_first": losses[0], "loss_last": float(np.mean(losses[-20:])), "samples": len(obs),
            "replay_samples": len(replay.obs) if use_replay else 0}


# --- step 4b: meta-learning of L0 and L1 ---------------------------------------------------------


def _fel_windows(net: NestedPolicy, windows: list[Window], length: int):
    """(obs [B, T, d], fast target d [B, T-1, n], mask [B, T-1, 1]) of the FEL objective."""
    obs = torch.from_numpy(np.stack([w.obs[:length] for w in windows]))
    action = torch.from_numpy(np.stack([w.action[:length] for w in windows]))
    l1_read = torch.from_numpy(np.stack([w.l1_read[:length] for w in windows]))
    b, t, d = obs.shape
    flat = obs.reshape(b * t, d)
    with torch.no_grad():
        prior = net.prior(flat).reshape(b, t, -1)
        slow = net.slow(flat).reshape(b, t, -1)
    target = (action - prior - l1_read - slow)[:, :-1] + prior[:, 1:]
    limits = net.u_max.reshape(1, 1, -1)
    mask = (action[:, :-1].abs() < 0.999 * limits).all(dim=2, keepdim=True).float()
    return obs, target, mask


class _MetaParams:
    """Unconstrained meta-variables of L0, mapped into the stable envelope."""

    def __init__(self, net: NestedPolicy, config: ConsolidationConfig):
        self.net = net
        self.limit = net.u_max.detach().clone()
        self.fast_max = config.fast_init_max_per_limit
        lo, hi = L0_BOUNDS["gain_per_limit"]
        self.z = {
            "log_gain": torch.log((net.gain.detach() / self.limit).clamp(lo, hi)),
            "log_eta": torch.log(net.eta_max.detach().clamp(*L0_BOUNDS["eta_max"])),
            "log_beta": torch.log(net.beta_max.detach().clamp(*L0_BOUNDS["beta_max"])),
            "log_lam": torch.log(net.lam.detach().clamp(*L0_BOUNDS["lam"])),
            "gate": net.gate.detach().clone(),
            "decay": net.decay.detach().clone(),
            "fast_init": (net.fast_init.detach() / self.limit.reshape(-1, 1)).clamp(-self.fast_max, self.fast_max),
        }
        for v in self.z.values():
            v.requires_grad_(True)

    def values(self) -> dict:
        b = L0_BOUNDS
        return {
            "gain": self.limit * torch.exp(self.z["log_gain"]).clamp(*b["gain_per_limit"]),
            "eta_max": torch.exp(self.z["log_eta"]).clamp(*b["eta_max"]),
            "beta_max": torch.exp(self.z["log_beta"]).clamp(*b["beta_max"]),
            "lam": torch.exp(self.z["log_lam"]).clamp(*b["lam"]),
            "gate": self.z["gate"].clamp(*b["gate"]),
            "decay": self.z["decay"].clamp(*b["decay"]),
            "fast_init": self.z["fast_init"].clamp(-self.fast_max, self.fast_max) * self.limit.reshape(-1, 1),
        }

    def view(self):
        """An object with the net's L0 attributes, the meta-parameters swapped in (for l0fw.unroll)."""
        net = self.net
        fixed = {name: getattr(net, name) for name in ("obs_scale", "wk", "bk", "key_bias", "e_max", "m_max", "spec")}
        return types.SimpleNamespace(**fixed, **self.values())

    def write_back(self) -> None:
        with torch.no_grad():
            for name, value in self.values().items():
                getattr(self.net, name).copy_(value)


def meta_learn_l0(net: NestedPolicy, windows: list[Window], config: ConsolidationConfig, seed: int) -> dict:
    """Step 4b (L0): differentiate the FEL loss through unrolled L0 updates; updates `net`."""
    if config.meta_lr <= 0 or config.meta_steps <= 0 or len(windows) < 2:
        return {"steps": 0}
    started = time.monotonic()
    gen = torch.Generator().manual_seed(seed)
    obs, target, mask = _fel_windows(net, windows, config.meta_window)
    scale = net.u_max.reshape(1, 1, -1)
    # Adaptation happens where L0 is surprised: weight each window by its relative surprise.
    surprise = torch.tensor([float(np.mean(w.surprise[: config.meta_window])) for w in windows])
    weight = (surprise / surprise.mean().clamp_min(1e-12)) ** config.meta_surprise_power
    mask = mask * weight.reshape(-1, 1, 1)
    params = _MetaParams(net, config)
    optimiser = torch.optim.Adam(list(params.z.values()), lr=config.meta_lr)

    def loss_of(idx) -> torch.Tensor:
        reads, _ = l0fw.unroll(params.view(), obs[idx])
        err = ((reads[:, 1:] - target[idx]) / scale) ** 2 * mask[idx]
        return err.sum() / (mask[idx].sum() * target.shape[2] + 1e-9)

    everything = torch.arange(len(obs))
    with torch.no_grad():
        loss_before = float(loss_of(everything))
    # Small sets go full-batch (deterministic descent); the best iterate seen is kept.
    full_batch = len(obs) <= config.meta_batch
    best = (loss_before, {k: v.detach().clone() for k, v in params.z.items()})
    steps = 0
    for _ in range(config.meta_steps):
        if time.monotonic() - started > config.meta_seconds:
            break
        idx = everything if full_batch else torch.randint(0, len(obs), (config.meta_batch,), generator=gen)
        loss = loss_of(idx)
        if full_batch and float(loss.detach()) < best[0]:
            best = (float(loss.detach()), {k: v.detach().clone() for k, v in params.z.items()})
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        steps += 1
    with torch.no_grad():
        loss_after = float(loss_of(everything))
        if loss_after > best[0]:
            for k, v in best[1].items():
                params.z[k].copy_(v)
            loss_after = best[0]
    if math.isfinite(loss_after) and loss_after < loss_before:
        params.write_back()
    values = {k: v.detach().reshape(-1)[:3].tolist() for k, v in params.values().items() if k != "fast_init"}
    return {"steps": steps, "windows": len(obs), "loss_before": loss_before, "loss_after": loss_after,
            "applied": loss_after < loss_before, "seconds": time.monotonic() - started, "values": values}


def meta_learn_l1(net: NestedPolicy, sequences: list[dict], config: ConsolidationConfig) -> dict:
    """Step 4b (L1): fit l1_step so that L1, stepped once per chunk, predicts the next chunk.

    L1's update direction e_t k_{t-1}^T does not depend on the memories, so each sequence is
    one vectorised pass; the chunk recursion is differentiated in log(l1_step).
    """
    c = config.l1_period
    seqs = [s for s in sequences if len(s["obs"]) >= 2 * c + 1]
    if config.meta_lr <= 0 or config.meta_steps <= 0 or not seqs:
        return {"steps": 0}
    scale = net.u_max.reshape(1, -1)
    data = []
    with torch.no_grad():
        for seq in seqs:
            obs = torch.from_numpy(seq["obs"])
            chunks = (len(obs) - 1) // c
            o, nxt = obs[1 : 1 + chunks * c], obs[2 : 2 + chunks * c]
            k_prev, k = net.key(obs[: chunks * c]), net.key(o)
            e, _ = net.surprise(o)
            d = torch.from_numpy(seq["action"][1 : 1 + chunks * c] - seq["l1_read"][1 : 1 + chunks * c])
            d = d - net.prior(o) - net.slow(o)
            if len(nxt) == len(o):
                d = d + net.prior(nxt)
            upd = (e.unsqueeze(2) * k_prev.unsqueeze(1)).reshape(chunks, c, *net.fast_init.shape).mean(1)
            data.append((upd, k.reshape(chunks, c, -1), (d / scale).reshape(chunks, c, -1)))
    lo, hi = L0_BOUNDS["l1_step"]
    z = torch.tensor(math.log(max(net.l1_step, 1e-3)), requires_grad=True)
    optimiser = torch.optim.Adam([z], lr=config.meta_lr * 3)

    def loss_of() -> torch.Tensor:
        step = torch.exp(z).clamp(1e-4, hi)
        total, count = 0.0, 0
        for upd, k, d in data:
            m1 = torch.zeros_like(upd[0])
            for i in range(len(upd) - 1):
                m1 = (1.0 - net.l1_decay) * m1 + step * upd[i]
                pred = (k[i + 1] @ m1.transpose(0, 1)) / scale
                total = total + ((pred - d[i + 1]) ** 2).sum()
                count += d[i + 1].numel()
        return total / max(count, 1)

    with torch.no_grad():
        before = float(loss_of())
    for _ in range(min(config.meta_steps, 30)):
        loss = loss_of()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        after = float(loss_of())
    old = net.l1_step
    if math.isfinite(after) and after < before:
        net.l1_step = float(np.clip(float(torch.exp(z.detach())), lo, hi))
    return {"steps": min(config.meta_steps, 30), "loss_before": before, "loss_after": after,
            "l1_step_before": old, "l1_step": net.l1_step}


def sequences_of(batches) -> list[dict]:
    """Contiguous per-robot runs of stored batches, concatenated (for the L1 chunk unroll)."""
    runs: dict[str, list] = {}
    out = []
    for batch in sorted(batches, key=lambda b: (b.robot_id, b.first_seq)):
        run = runs.get(batch.robot_id)
        if run and run[-1].last_seq + 1 == batch.first_seq:
            run.append(batch)
            continue
        if run:
            out.append(run)
        runs[batch.robot_id] = [batch]
    out.extend(runs.values())
    return [
        {name: np.concatenate([getattr(b, src) for b in run]) for name, src in
         (("obs", "obs"), ("action", "action"), ("l1_read", "slow_read"))}
        for run in out
    ]


# --- step 5: the gate ------------------------------------------------------------------------------


def gate_scenarios(task, config: ConsolidationConfig) -> dict[str, list[str]]:
    """Dynamics the candidate must not regress on: nominal plus each seen shift."""
    scenarios = {"nominal": []}
    if config.gate_shifts is not None:
        for text in config.gate_shifts:
            kind, _, rest = text.partition(":")
            magnitude, _, target = rest.partition("#")
            suffix = f"#{target}" if target else ""
            scenarios[f"{kind}:{float(magnitude):g}"] = [f"{kind}:{float(magnitude):g}@{config.eval_shift_s:g}{suffix}"]
        return scenarios
    for shift in task.shifts:
        scenarios[f"{shift.type}:{shift.magnitude:g}"] = [f"{shift.type}:{shift.magnitude:g}@{config.eval_shift_s:g}"]
    return scenarios


def evaluate(onnx_bytes: bytes, env, scenarios: dict, config: ConsolidationConfig, seed: int,
             map_fn=None) -> dict:
    """Mean cost per scenario over the same seeded episodes, L0 on (as deployed).

    map_fn: `(onnx_bytes, task, scenarios, eval_ticks, seed) -> costs` evaluating the scenarios
    elsewhere (request key `gate_map`, e.g. cloud_brain.learning.ray_backend:evaluate_parallel, one Ray
    task per scenario); None = here, in turn, on `env`.
    """
    if map_fn is not None:
        return map_fn(onnx_bytes, env.task, scenarios, config.eval_ticks, seed)
    model = load_model(onnx_bytes)
    return {
        name: float(np.mean(rollout(model, env, shifts, seed, config.eval_ticks).cost))
        for name, shifts in scenarios.items()
    }


def blend(parent: NestedPolicy, trained: NestedPolicy, alpha: float) -> NestedPolicy:
    """parent + alpha (trained - parent) in weight space: a smaller step away from what works."""
    out = copy.deepcopy(parent)
    with torch.no_grad():
        for p_out, p_par, p_new in zip(out.parameters(), parent.parameters(), trained.parameters(), strict=True):
            p_out.copy_(p_par + alpha * (p_new - p_par))
    out.l1_step = parent.l1_step + alpha * (trained.l1_step - parent.l1_step)
    return out


def select_candidate(parent_onnx: bytes, parent, trained, task, config: ConsolidationConfig, seed: int,
                     map_fn=None):
    """Step 5: the largest step toward the trained weights that regresses on no gate scenario.

    Returns (onnx bytes or None, gate report).
    """
    from nestor_sim.tracking_env import TrackingEnv

    env = TrackingEnv(task)
    scenarios = gate_scenarios(task, config)
    report = {"scenarios": {name: list(shifts) for name, shifts in scenarios.items()}, "tried": []}
    try:
        baseline = evaluate(parent_onnx, env, scenarios, config, seed, map_fn)
        report["parent"] = baseline
        for alpha in config.blend_steps:
            candidate_onnx = export_onnx(blend(parent, trained, alpha))
            costs = evaluate(candidate_onnx, env, scenarios, config, seed, map_fn)
            regressed = [n for n, c in costs.items() if c > baseline[n] * (1.0 + config.gate_tolerance)]
            report["tried"].append({"alpha": alpha, "costs": costs, "regressed": regressed})
            if not regressed:
                report["accepted_alpha"] = alpha
                return candidate_onnx, report
    finally:
        env.close()
    return None, report


def _config_from(request: dict) -> ConsolidationConfig:
    fields = dict(request.get("config", {}))
    for name in ("gate_shifts", "blend_steps"):
        if fields.get(name) is not None:
            fields[name] = tuple(fields[name])
    return ConsolidationConfig(**fields).validate()


def run_round(request: dict) -> dict:
    """One consolidation round; the scheduler's contract (see cloud_brain.learning.scheduler)."""
    started = time.time()
    from nestor_sim.task import load_task

    config = _config_from(request)
    seed = int(request.get("seed", 0))
    seed_everything(seed)
    task = load_task(request["task_file"])
    from cloud_brain.learning.window_export import is_window_onnx

    if is_window_onnx(request["parent_onnx"]):
        from cloud_brain.learning.window_consolidation import run_window_round

        reservoir_config = ReservoirConfig(config.l3_capacity_transitions, config.l3_window, config.l3_novelty_weight)
        return run_window_round(request, config, task, ExperienceStore, L3Reservoir, reservoir_config,
                                gate_scenarios, blend)
    parent = import_onnx(request["parent_onnx"])
    after_row, up_to_row = int(request.get("experience_from", 0)), int(request["experience_to"])
    # 1. sample memories: new rows, then L3 replay (drawn before the new rows are offered to it).
    store = ExperienceStore(request["db_path"])
    reservoir = L3Reservoir(
        request["db_path"],
        ReservoirConfig(config.l3_capacity_transitions, config.l3_window, config.l3_novelty_weight),
        seed=int(request.get("l3_seed", 0)),
    )
    try:
        rows = reservoir.read_round(store, request["task"], after_row, up_to_row)  # the one read of the rows
        new_batches = [(row, batch) for row, batch in rows if row > after_row]
        memories = memories_of(parent, [batch for _, batch in new_batches], config.max_transitions)
        replay_windows = reservoir.windows(request["task"]) if config.replay_fraction > 0 else []
        l3_update = reservoir.update(store, request["task"], up_to_row, task.effort_limit, rows=rows)
        l3_stats = reservoir.stats(request["task"])
    finally:
        reservoir.close()
        store.close()
    if len(memories.obs) < config.batch_size:
        return {
            "onnx": request["parent_onnx"],
            "accepted": False,
            "reason": f"only {len(memories.obs)} usable transitions (< batch {config.batch_size})",
            "metrics": {"samples": len(memories.obs), "l3": {**l3_stats, "update": l3_update}},
        }
    # 2-4. unroll the fast levels into targets, train the slow weights on new + replay.
    replay = replay_memories(parent, replay_windows)
    trained = copy.deepcopy(parent)
    training = train_slow_weights(trained, memories, config, seed, replay)
    # 4b. meta-learn L0 (unrolled windows of new + replay data) and L1 (chunk unroll).
    new_windows = [w for row, b in new_batches for w in windows_of_batch(request["task"], row, b, config.l3_window)]
    meta_windows = new_windows + replay_windows
    meta = {
        "l0": meta_learn_l0(trained, meta_windows, config, seed),
        "l1": meta_learn_l1(trained, sequences_of([b for _, b in new_batches]), config),
    }
    # 5. gate. 6. export.
    if config.gate:
        gate_map = request.get("gate_map")  # set by cloud_brain.learning.ray_backend's round task
        if gate_map:
            from cloud_brain.learning.scheduler import resolve

            gate_map = resolve(gate_map)
        candidate_onnx, gate = select_candidate(request["parent_onnx"], parent, trained, task, config, seed,
                                                gate_map or None)
    else:
        candidate_onnx, gate = export_onnx(trained), {"skipped": True, "accepted_alpha": 1.0, "parent": {}}
    accepted = candidate_onnx is not None
    if accepted:
        checked = ", ".join(gate["parent"]) or "nothing (gate off)"
        reason = f"no regression on {checked} (step {gate['accepted_alpha']:g})"
    else:
        candidate_onnx = export_onnx(trained)
        worst = gate["tried"][-1]["regressed"] if gate["tried"] else []
        reason = f"regressed on {', '.join(worst)} at every step {list(config.blend_steps)}"
    metrics = {
        "training": training,
        "meta": meta,
        "l3": {**l3_stats, "update": l3_update, "replay_windows": len(replay_windows)},
        "gate": gate,
        "round_seconds": time.time() - started,
        "seed": seed,
    }
    return {
        "onnx": candidate_onnx,
        "accepted": accepted,
        "reason": reason,
        "metrics": metrics,
        "io_signature": io_signature(trained.spec),
    }
