"""Steps 1-2 of a round: sample memories (new rows, L3 replay) and unroll them into slow targets."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from cloud_brain.experience.store import ExperienceStore
from cloud_brain.learning.l3_reservoir import Window
from cloud_brain.learning.policy_net import NestedPolicy


@dataclasses.dataclass
class Memories:
    """Training arrays of one round: observation and the residual target for the slow MLP."""

    obs: np.ndarray
    target: np.ndarray
    rows: int


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
    return residual_targets(
        net,
        np.concatenate([w.obs for w in windows]),
        np.concatenate([w.action for w in windows]),
        np.concatenate([w.l1_read for w in windows]),
    )
