"""Steps 3-4 of a round: the loss of the slow weights (L2) and the optimiser steps."""

from __future__ import annotations

import numpy as np
import torch

from cloud_brain.learning.memories import Memories
from cloud_brain.learning.policy_net import NestedPolicy
from cloud_brain.learning.round_config import ConsolidationConfig


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
    return {
        "loss_first": losses[0],
        "loss_last": float(np.mean(losses[-20:])),
        "samples": len(obs),
        "replay_samples": len(replay.obs) if use_replay else 0,
    }
