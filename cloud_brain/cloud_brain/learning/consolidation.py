"""Compatibility name of the L2 level: `cloud_brain.learning.consolidation:run_round` (config/cloud.yaml).

The code lives in `cloud_brain.learning.l2_consolidation`; see its docstring for one round.
"""

from cloud_brain.learning.l2_consolidation import (  # noqa: F401 - re-exported
    L0_BOUNDS,
    ConsolidationConfig,
    Memories,
    blend,
    evaluate,
    gate_scenarios,
    meta_learn_l0,
    meta_learn_l1,
    replay_memories,
    run_round,
    sample_memories,
    seed_everything,
    select_candidate,
    train_slow_weights,
)
