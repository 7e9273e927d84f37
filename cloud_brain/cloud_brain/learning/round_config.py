"""ConsolidationConfig: the hyper-parameters of one consolidation round (cloud.yaml `consolidation:`).

Plain dataclass, no torch: the server validates it from cloud.yaml and sends it with every round
request (`"config"`); the worker rebuilds it with `config_from`.
"""

from __future__ import annotations

import dataclasses


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

    def validate(self) -> ConsolidationConfig:
        if not 0.0 <= self.replay_fraction < 1.0:
            raise ValueError(f"replay_fraction: must be in [0, 1), got {self.replay_fraction}")
        if self.learning_rate < 0 or self.meta_lr < 0:
            raise ValueError("learning_rate/meta_lr: must be >= 0")
        if self.id_learning_rate < 0:
            raise ValueError(f"id_learning_rate: must be >= 0, got {self.id_learning_rate}")
        if self.meta_window < 2 or self.meta_window > self.l3_window:
            raise ValueError(f"meta_window: must be in [2, l3_window={self.l3_window}], got {self.meta_window}")
        return self


def config_from(request: dict) -> ConsolidationConfig:
    """The round's ConsolidationConfig from a request's "config" mapping (lists become tuples)."""
    fields = dict(request.get("config", {}))
    for name in ("gate_shifts", "blend_steps"):
        if fields.get(name) is not None:
            fields[name] = tuple(fields[name])
    return ConsolidationConfig(**fields).validate()
