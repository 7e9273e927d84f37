"""L2, minutes, in the cloud: consolidate the fleet's experience into slow weights.

It also meta-learns how the fast levels (L0, L1) learn.

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
    clamped to a stable envelope (`meta_learning.L0_BOUNDS`), fast_init to +-fast_init_max_per_limit of
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
import logging
import time

import numpy as np
import torch

from cloud_brain.experience.store import ExperienceStore
from cloud_brain.learning.gate import blend, gate_map_of, gate_scenarios, select_candidate
from cloud_brain.learning.l3_reservoir import L3Reservoir, ReservoirConfig, read_round_inputs, windows_of_batch
from cloud_brain.learning.memories import memories_of, replay_memories
from cloud_brain.learning.meta_learning import meta_learn_l0, meta_learn_l1, sequences_of
from cloud_brain.learning.policy_export import export_onnx, import_onnx, io_signature
from cloud_brain.learning.round_config import config_from
from cloud_brain.learning.slow_weights import train_slow_weights

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def run_round(request: dict) -> dict:
    """One consolidation round; the scheduler's contract (see cloud_brain.learning.scheduler)."""
    started = time.time()
    from nestor_sim.task import load_task

    config = config_from(request)
    seed = int(request.get("seed", 0))
    seed_everything(seed)
    task = load_task(request["task_file"])
    from cloud_brain.learning.window_export import is_window_onnx

    reservoir_config = ReservoirConfig(config.l3_capacity_transitions, config.l3_window, config.l3_novelty_weight)
    if is_window_onnx(request["parent_onnx"]):
        from cloud_brain.learning.window_consolidation import run_window_round

        return run_window_round(
            request, config, task, ExperienceStore, L3Reservoir, reservoir_config, gate_scenarios, blend
        )
    parent = import_onnx(request["parent_onnx"])
    # 1. sample memories: new rows, then L3 replay (drawn before the new rows are offered to it).
    new_batches, replay_windows, l3_update, l3_stats = read_round_inputs(
        request, config.replay_fraction > 0, task.effort_limit, ExperienceStore, L3Reservoir, reservoir_config
    )
    memories = memories_of(parent, [batch for _, batch in new_batches], config.max_transitions)
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
        candidate_onnx, gate = select_candidate(
            request["parent_onnx"], parent, trained, task, config, seed, gate_map_of(request)
        )
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
