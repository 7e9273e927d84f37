"""Step 5 of a round: the gate.

Parent and candidates run the same seeded episodes in simulation; the largest step toward the
trained weights that regresses on no seen dynamics is the candidate.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import torch
from nestor_core.policy_model import load_model
from nestor_sim.shifts import format_shift, parse_shift

from cloud_brain.learning.evaluation import rollout
from cloud_brain.learning.policy_export import export_onnx
from cloud_brain.learning.policy_net import NestedPolicy
from cloud_brain.learning.round_config import ConsolidationConfig


def gate_scenarios(task, config: ConsolidationConfig) -> dict[str, list[str]]:
    """Dynamics the candidate must not regress on: nominal plus each seen shift at `eval_shift_s`.

    The shifts are `config.gate_shifts` ('type:magnitude[#target]') or, when None, the task file's.
    """
    if config.gate_shifts is None:
        shifts = list(task.shifts)
    else:
        shifts = [parse_shift(text) for text in config.gate_shifts]
    scenarios = {"nominal": []}
    for shift in shifts:
        scenarios[f"{shift.type}:{shift.magnitude:g}"] = [format_shift(replace(shift, at_s=config.eval_shift_s))]
    return scenarios


def with_from_start(scenarios: dict[str, list[str]]) -> dict[str, list[str]]:
    """The scenarios plus each shifted one from tick 0 (`"<name> from t=0"`).

    A swap must not make a robot worse where it stands: the robot already in the shift when the
    model arrives, as the demo's deployed figure measures.
    """
    out = dict(scenarios)
    for name, shifts in scenarios.items():
        if shifts:
            out[f"{name} from t=0"] = [format_shift(replace(parse_shift(s), at_s=0.0)) for s in shifts]
    return out


def gate_map_of(request: dict):
    """The round request's scenario map, resolved to a function; None evaluates here, in turn.

    `gate_map` is set by cloud_brain.learning.ray_backend's round task (one Ray task per scenario).
    """
    from cloud_brain.learning.round_worker import resolve

    return resolve(request["gate_map"]) if request.get("gate_map") else None


def evaluate(onnx_bytes: bytes, env, scenarios: dict, config: ConsolidationConfig, seed: int, map_fn=None) -> dict:
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


def select_candidate(parent_onnx: bytes, parent, trained, task, config: ConsolidationConfig, seed: int, map_fn=None):
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
