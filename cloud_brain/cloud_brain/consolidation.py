"""One consolidation round (L2): compress what the fleet's fast memories learned into slow weights.

Read top to bottom, one round is:
  1. sample memories from the store (the fleet's experience of this task);
  2. unroll the fast levels: the effort the robot's L0 memory added is the target;
  3. compute the loss: slow MLP output vs. (slow + L0) residual the robot actually applied;
  4. step the optimiser;
  5. evaluate parent and candidate in simulation (the gate: no regression);
  6. export the candidate to ONNX.

It runs in a child process started by the scheduler (nice 10, one torch thread), so training
never competes with ingest or with the robots' control loops for more than one core.
"""

import copy
import dataclasses
import logging
import time

import numpy as np
import torch
from nestor_core.policy_model import load_model

from cloud_brain.evaluation import rollout
from cloud_brain.policy_export import export_onnx, import_onnx, io_signature
from cloud_brain.policy_net import NestedPolicy
from cloud_brain.store import ExperienceStore

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ConsolidationConfig:
    """Hyper-parameters of one round.

    Attributes:
        max_transitions: newest transitions used per round (older ones are the L3 reservoir's job).
        steps: optimiser steps.
        batch_size: transitions per step.
        learning_rate: Adam step size.
        eval_ticks: length of each gate episode.
        eval_shift_s: time of the dynamics shift inside a gate episode.
        gate_tolerance: candidate may be at most this fraction worse than the parent per scenario.
        blend_steps: steps from the parent toward the trained weights tried in order; the first
            that passes the gate is the candidate.
    """

    max_transitions: int = 60_000
    steps: int = 400
    batch_size: int = 512
    learning_rate: float = 3e-3
    eval_ticks: int = 1000
    eval_shift_s: float = 4.0
    gate_tolerance: float = 0.05
    blend_steps: tuple[float, ...] = (1.0, 0.5, 0.25)


@dataclasses.dataclass
class Memories:
    """Training arrays of one round: observation and the residual target for the slow MLP."""

    obs: np.ndarray
    target: np.ndarray
    rows: int


def seed_everything(seed: int) -> None:
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def sample_memories(store: ExperienceStore, net: NestedPolicy, task: str, up_to_row: int, limit: int) -> Memories:
    """Steps 1-2: newest `limit` transitions and the residual their fast levels applied.

    The target is what the slow MLP should output: action - PD prior - L1 read, i.e. the old slow
    output plus the L0 fast read. L1 is left out on purpose: it is the robot's own memory and
    survives the swap, so folding it into the fleet's slow weights would count it twice.
    Ticks whose action hit the effort limit are dropped (their true residual is unknown).
    """
    batches = list(store.read_batches(task, 0, up_to_row))
    obs = np.concatenate([b.obs for b in batches]) if batches else np.zeros((0, net.spec.obs_dim), np.float32)
    if len(obs) == 0:
        return Memories(obs, np.zeros((0, net.spec.act_dim), np.float32), 0)
    action = np.concatenate([b.action for b in batches])
    l1_read = np.concatenate([b.slow_read for b in batches])
    obs, action, l1_read = obs[-limit:], action[-limit:], l1_read[-limit:]
    with torch.no_grad():
        prior = net.prior(torch.from_numpy(obs)).numpy()
    limits = np.asarray(net.spec.effort_limit, np.float32)
    unsaturated = np.all(np.abs(action) < 0.999 * limits, axis=1)
    target = (action - prior - l1_read)[unsaturated]
    return Memories(obs[unsaturated], target.astype(np.float32), len(batches))


def train_slow_weights(net: NestedPolicy, memories: Memories, config: ConsolidationConfig, seed: int) -> dict:
    """Steps 3-4: regress the slow MLP onto the residual targets (loss scaled per joint)."""
    gen = torch.Generator().manual_seed(seed)
    obs = torch.from_numpy(memories.obs)
    target = torch.from_numpy(memories.target)
    scale = torch.tensor(net.spec.effort_limit, dtype=torch.float32)
    optimiser = torch.optim.Adam(net.mlp.parameters(), lr=config.learning_rate)
    losses = []
    for _ in range(config.steps):
        idx = torch.randint(0, len(obs), (min(config.batch_size, len(obs)),), generator=gen)
        loss = (((net.slow(obs[idx]) - target[idx]) / scale) ** 2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    return {"loss_first": losses[0], "loss_last": float(np.mean(losses[-20:])), "samples": len(obs)}


def gate_scenarios(task, config: ConsolidationConfig) -> dict[str, list[str]]:
    """Dynamics the candidate must not regress on: nominal plus each of the task's shifts."""
    scenarios = {"nominal": []}
    for shift in task.shifts:
        scenarios[f"{shift.type}:{shift.magnitude:g}"] = [f"{shift.type}:{shift.magnitude:g}@{config.eval_shift_s:g}"]
    return scenarios


def evaluate(onnx_bytes: bytes, env, scenarios: dict, config: ConsolidationConfig, seed: int) -> dict:
    """Mean cost per scenario over the same seeded episodes, L0 on (as deployed)."""
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
    return out


def select_candidate(parent_onnx: bytes, parent, trained, task, config: ConsolidationConfig, seed: int):
    """Step 5: the largest step toward the trained weights that regresses on no gate scenario.

    Returns (onnx bytes or None, gate report).
    """
    from nestor_sim.tracking_env import TrackingEnv

    env = TrackingEnv(task)
    scenarios = gate_scenarios(task, config)
    report = {"scenarios": {name: list(shifts) for name, shifts in scenarios.items()}, "tried": []}
    try:
        baseline = evaluate(parent_onnx, env, scenarios, config, seed)
        report["parent"] = baseline
        for alpha in config.blend_steps:
            candidate_onnx = export_onnx(blend(parent, trained, alpha))
            costs = evaluate(candidate_onnx, env, scenarios, config, seed)
            regressed = [n for n, c in costs.items() if c > baseline[n] * (1.0 + config.gate_tolerance)]
            report["tried"].append({"alpha": alpha, "costs": costs, "regressed": regressed})
            if not regressed:
                report["accepted_alpha"] = alpha
                return candidate_onnx, report
    finally:
        env.close()
    return None, report


def run_round(request: dict) -> dict:
    """One consolidation round; the scheduler's contract (see cloud_brain.scheduler)."""
    started = time.time()
    from nestor_sim.task import load_task

    config = ConsolidationConfig(**request.get("config", {}))
    seed = int(request.get("seed", 0))
    seed_everything(seed)
    task = load_task(request["task_file"])
    parent = import_onnx(request["parent_onnx"])
    store = ExperienceStore(request["db_path"])
    try:
        memories = sample_memories(store, parent, request["task"], request["experience_to"], config.max_transitions)
    finally:
        store.close()
    if len(memories.obs) < config.batch_size:
        return {
            "onnx": request["parent_onnx"],
            "accepted": False,
            "reason": f"only {len(memories.obs)} usable transitions (< batch {config.batch_size})",
            "metrics": {"samples": len(memories.obs)},
        }
    trained = copy.deepcopy(parent)
    training = train_slow_weights(trained, memories, config, seed)
    candidate_onnx, gate = select_candidate(request["parent_onnx"], parent, trained, task, config, seed)
    accepted = candidate_onnx is not None
    if accepted:
        reason = f"no regression on {', '.join(gate['parent'])} (step {gate['accepted_alpha']:g})"
    else:
        candidate_onnx = export_onnx(trained)
        worst = gate["tried"][-1]["regressed"] if gate["tried"] else []
        reason = f"regressed on {', '.join(worst)} at every step {list(config.blend_steps)}"
    metrics = {"training": training, "gate": gate, "round_seconds": time.time() - started, "seed": seed}
    return {
        "onnx": candidate_onnx,
        "accepted": accepted,
        "reason": reason,
        "metrics": metrics,
        "io_signature": io_signature(trained.spec),
    }
