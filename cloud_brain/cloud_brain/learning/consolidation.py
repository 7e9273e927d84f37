"""The round's provider name: `cloud_brain.learning.consolidation:run_round` (config/cloud.yaml `consolidate`).

One round reads top to bottom in `cloud_brain.learning.l2_consolidation.run_round`; its steps live
in `memories` (1-2), `slow_weights` (3-4), `meta_learning` (4b), `gate` (5) and `policy_export`
(6), its hyper-parameters in `round_config`.
"""

from cloud_brain.learning.l2_consolidation import run_round

__all__ = ["run_round"]
