"""Step 4b of a round: meta-learn how L0 and L1 learn (see l2_consolidation's docstring for the method)."""

from __future__ import annotations

import math
import time
import types

import numpy as np
import torch

from cloud_brain.learning import l0_fast_weights as l0fw
from cloud_brain.learning.l3_reservoir import Window
from cloud_brain.learning.policy_net import NestedPolicy
from cloud_brain.learning.round_config import ConsolidationConfig

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
    return {
        "steps": steps,
        "windows": len(obs),
        "loss_before": loss_before,
        "loss_after": loss_after,
        "applied": loss_after < loss_before,
        "seconds": time.monotonic() - started,
        "values": values,
    }


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
    return {
        "steps": min(config.meta_steps, 30),
        "loss_before": before,
        "loss_after": after,
        "l1_step_before": old,
        "l1_step": net.l1_step,
    }


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
        {
            name: np.concatenate([getattr(b, src) for b in run])
            for name, src in (("obs", "obs"), ("action", "action"), ("l1_read", "slow_read"))
        }
        for run in out
    ]
