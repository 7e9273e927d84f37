"""L0, the fastest level: a fast-weight associative memory updated every control tick.

This module is the L0 math, shared by the tick (`NestedPolicy.forward`, which the exporter
mirrors op by op in ONNX) and by the cloud's L2 meta-learning, which unrolls the same update
over recorded windows (`unroll`). One tick, for a memory M [act_dim, key_dim]:

    k(o)   = normalise([tanh(o * obs_scale @ Wk + bk), key_bias])     unit key
    s      = (qd_ref - qd) + lam (q_ref - q)                            tracking surprise
    e      = clip(gain * s, -e_max, e_max)                              value-space error
    eta    = l0_scale * eta_max  * sigmoid(gate_a  |s| + gate_b)        data-dependent step
    beta   = l0_scale * beta_max * sigmoid(decay_a |s| + decay_b)       data-dependent decay
    M'     = clip((1 - beta) M + eta e k(prev_obs)^T, -m_max, m_max)     delta rule
    read   = M' k(obs)

The step is the delta rule M += eta (v* - M k) k^T with the self-supervised target v* = M k + e.
Every function takes a leading batch dimension, so the robot's batch of one and the cloud's
batch of windows run the same code.
"""

import torch

# The L0 parameters the L2 level meta-learns (attribute names of NestedPolicy).
META_PARAMETERS = ("fast_init", "eta_max", "gate", "beta_max", "decay", "gain", "lam")


def sanitize(x: torch.Tensor, bound: float | torch.Tensor) -> torch.Tensor:
    """NaN -> 0, then clip to +-bound (inf becomes the bound)."""
    x = torch.where(torch.isnan(x), torch.zeros_like(x), x)
    return torch.clamp(x, -bound, bound)


def unit_key(obs: torch.Tensor, obs_scale, wk, bk, key_bias) -> torch.Tensor:
    """Unit-norm key [b, key_dim] of observations [b, obs_dim]."""
    feats = torch.tanh((obs * obs_scale) @ wk + bk)
    k = torch.cat([feats, key_bias.expand(obs.shape[0], 1)], dim=1)
    return k / torch.sqrt((k * k).sum(dim=1, keepdim=True) + 1e-6)


def surprise(obs: torch.Tensor, act_dim: int, lam, gain, e_max) -> tuple[torch.Tensor, torch.Tensor]:
    """(e, |s|): value-space error [b, n] and surprise norm [b, 1] of observations [b, obs_dim]."""
    n = act_dim
    q, qd, qr, qdr = obs[:, :n], obs[:, n : 2 * n], obs[:, 2 * n : 3 * n], obs[:, 3 * n : 4 * n]
    s = (qdr - qd) + lam * (qr - q)
    e = torch.maximum(torch.minimum(gain * s, e_max), -e_max)
    return e, torch.sqrt((s * s).sum(dim=1, keepdim=True) + 1e-12)


def gates(snorm, l0_scale, eta_max, gate, beta_max, decay) -> tuple[torch.Tensor, torch.Tensor]:
    """(eta, beta) [b, 1]: step size and decay, each gated by the surprise norm."""
    eta = l0_scale * eta_max * torch.sigmoid(gate[:, :1] * snorm + gate[:, 1:])
    beta = l0_scale * beta_max * torch.sigmoid(decay[:, :1] * snorm + decay[:, 1:])
    return eta, beta


def delta_step(fast_state, e, k_prev, eta, beta, m_max) -> tuple[torch.Tensor, torch.Tensor]:
    """(M', update_dir) for memories [b, n, key_dim]; update_dir = e k_prev^T [b, n, key_dim]."""
    update_dir = e.unsqueeze(2) * k_prev.unsqueeze(1)
    kept = (1.0 - beta.unsqueeze(2)) * fast_state
    fast_out = torch.clamp(kept + eta.unsqueeze(2) * update_dir, -m_max, m_max)
    return fast_out, update_dir


def read(fast_state: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Memory read M k [b, n] for memories [b, n, key_dim] and keys [b, key_dim]."""
    return torch.einsum("bnk,bk->bn", fast_state, k)


def tick(net, obs, prev_obs, fast_state, l0_scale):
    """One L0 tick of `net` (a NestedPolicy) on a batch: (M', read, e, update_dir, k).

    obs/prev_obs [b, obs_dim], fast_state [b, n, key_dim], l0_scale [b, 1] or scalar tensor.
    """
    k_prev = unit_key(prev_obs, net.obs_scale, net.wk, net.bk, net.key_bias)
    k = unit_key(obs, net.obs_scale, net.wk, net.bk, net.key_bias)
    e, snorm = surprise(obs, net.spec.act_dim, net.lam, net.gain, net.e_max)
    eta, beta = gates(snorm, l0_scale, net.eta_max, net.gate, net.beta_max, net.decay)
    fast_out, update_dir = delta_step(fast_state, e, k_prev, eta, beta, net.m_max)
    return fast_out, read(fast_out, k), e, update_dir, k


def unroll(net, obs_seq: torch.Tensor, fast0: torch.Tensor | None = None, l0_scale: float = 1.0):
    """Run L0 over recorded windows, open loop: (reads [B, T, n], final memory [B, n, key_dim]).

    obs_seq [B, T, obs_dim] are consecutive observations; tick t uses obs_seq[:, t - 1] as its
    previous observation (tick 0 uses its own, as the runtime does on its first tick). The
    memory starts at `fast0` (default: the net's meta-learned `fast_init`). Differentiable in
    every META_PARAMETERS entry and in fast0.
    """
    b, t_len, _ = obs_seq.shape
    obs_seq = sanitize(obs_seq, 1.0e3)
    state = (net.fast_init.unsqueeze(0).expand(b, -1, -1) if fast0 is None else fast0).clamp(-net.m_max, net.m_max)
    scale = torch.full((b, 1), float(l0_scale))
    reads = []
    for t in range(t_len):
        prev = obs_seq[:, max(t - 1, 0)]
        state, r, _, _, _ = tick(net, obs_seq[:, t], prev, state, scale)
        reads.append(r)
    return torch.stack(reads, dim=1), state
