"""The nested policy in PyTorch: the cloud's trainable mirror of the robot's ONNX graph.

One forward call is one control tick, exactly as `policy_export.export_onnx` writes it:

    prior      = Kp (q_ref - q) + Kd (qd_ref - qd)                   structured PD prior
    slow       = MLP(obs * obs_scale)                                 L2 slow weights
    k(o)       = normalise([tanh(o * obs_scale @ Wk + bk), c])        key, unit norm
    s          = (qd_ref - qd) + lam (q_ref - q)                      tracking surprise
    e          = clip(gain * s, -e_max, e_max)                        value-space error
    eta        = l0_scale * eta_max * sigmoid(ga |s| + gb)            data-dependent step
    beta       = l0_scale * beta_max * sigmoid(da |s| + db)           data-dependent decay
    M'         = clip((1 - beta) M + eta e^T k(prev_obs), -m_max, m_max)     L0 delta rule
    action     = clamp(prior + slow + M' k(obs) + M1 k(obs), -u_max, u_max)

The L0 step is the delta rule M += eta (v* - M k) k^T with target v* = M k + e: the effort the
memory should have added at the previous key, estimated from the motion that followed.
The L0 math itself lives in `cloud_brain.learning.l0_fast_weights` (shared with L2's meta-learning unroll);
L1 is `nestor_core.l1_chunk_memory`, L2 `cloud_brain.learning.l2_consolidation`, L3 `cloud_brain.learning.l3_reservoir`.
"""

import dataclasses

import numpy as np
import torch
from torch import nn

from cloud_brain.learning import l0_fast_weights as l0fw

SANITIZE_OBS = 1.0e3  # observations are clipped to this magnitude, NaN becomes 0.


@dataclasses.dataclass(frozen=True)
class NetSpec:
    """Shapes and fixed constants of one task's policy graph.

    Attributes:
        task: task name (model lineage).
        controlled_joints: names of the n effort-controlled joints (act_dim = n).
        passive_joints: names of observed, unactuated joints.
        kp, kd: PD prior gains per controlled joint.
        effort_limit: |action| bound per controlled joint.
        obs_scale: per-observation-element scale applied before the MLP and the keys.
        control_rate_hz: control tick rate the model was made for.
        hidden: MLP width.
        key_features: number of tanh key features (the key has one more, constant, entry).
    """

    task: str
    controlled_joints: tuple[str, ...]
    passive_joints: tuple[str, ...]
    kp: tuple[float, ...]
    kd: tuple[float, ...]
    effort_limit: tuple[float, ...]
    obs_scale: tuple[float, ...]
    control_rate_hz: float = 100.0
    hidden: int = 64
    key_features: int = 16

    @property
    def act_dim(self) -> int:
        return len(self.controlled_joints)

    @property
    def obs_dim(self) -> int:
        return 4 * self.act_dim + 2 * len(self.passive_joints)

    @property
    def key_dim(self) -> int:
        return self.key_features + 1


@dataclasses.dataclass(frozen=True)
class L0Defaults:
    """Initial values of the L0 hyper-parameters (the cloud's L2 level meta-learns them).

    Attributes:
        lam: weight of the position error in the surprise s = de + lam e.
        gain_per_limit: surprise-to-effort gain as a fraction of each joint's effort limit
            (N·m per unit of surprise; tuned on kuka_track: 0.01 is unstable on payload shifts).
        eta_max: largest L0 step size.
        gate_a, gate_b: step-size gate sigmoid(gate_a |s| + gate_b).
        beta_max: largest decay (forgetting) per tick.
        decay_a, decay_b: decay gate sigmoid(decay_a |s| + decay_b).
        e_max_per_limit: clip of the value-space error, as a fraction of the effort limit.
        m_max_per_limit: clip of each memory entry, as a fraction of the effort limit.
        key_bias: the constant key entry; larger means more shared (integral-like) memory.
        key_feature_scale: scale of the random key projection.
        l1_step: L1 step size per chunk; l1_decay: L1 decay per chunk.
    """

    lam: float = 5.0
    gain_per_limit: float = 0.005
    eta_max: float = 1.0
    gate_a: float = 4.0
    gate_b: float = 0.0
    beta_max: float = 0.0002
    decay_a: float = -4.0
    decay_b: float = 0.0
    e_max_per_limit: float = 0.05
    m_max_per_limit: float = 1.0
    key_bias: float = 1.0
    key_feature_scale: float = 0.3
    l1_step: float = 0.2
    l1_decay: float = 0.01


class NestedPolicy(nn.Module):
    """PD prior + slow MLP (L2) + L0 fast-weight memory + L1 read, one tick per call."""

    def __init__(self, spec: NetSpec, l0: L0Defaults = L0Defaults(), seed: int = 0):
        super().__init__()
        self.spec = spec
        self.l0_defaults = l0
        gen = torch.Generator().manual_seed(seed)
        n, d, h, f = spec.act_dim, spec.obs_dim, spec.hidden, spec.key_features

        def const(values) -> torch.Tensor:
            return torch.tensor(np.asarray(values, np.float32)).reshape(1, -1)

        self.register_buffer("kp", const(spec.kp))
        self.register_buffer("kd", const(spec.kd))
        self.register_buffer("u_max", const(spec.effort_limit))
        self.register_buffer("obs_scale", const(spec.obs_scale))
        self.register_buffer("e_max", const(np.asarray(spec.effort_limit) * l0.e_max_per_limit))
        self.register_buffer("m_max", torch.tensor(float(max(spec.effort_limit) * l0.m_max_per_limit)))
        # L2 slow weights: residual MLP, last layer zero so the initial model is the PD prior.
        self.mlp = nn.Sequential(nn.Linear(d, h), nn.Tanh(), nn.Linear(h, h), nn.Tanh(), nn.Linear(h, n))
        for layer in self.mlp:
            if isinstance(layer, nn.Linear):
                nn.init.normal_(layer.weight, std=1.0 / np.sqrt(layer.in_features), generator=gen)
                nn.init.zeros_(layer.bias)
        nn.init.zeros_(self.mlp[-1].weight)
        # Key projection: configuration (positions) only; velocities carry no key weight at init.
        wk = torch.randn(d, f, generator=gen) * l0.key_feature_scale
        wk[n : 2 * n] = 0.0
        wk[3 * n : 4 * n] = 0.0
        self.wk = nn.Parameter(wk)
        self.bk = nn.Parameter(torch.zeros(1, f))
        self.register_buffer("key_bias", torch.tensor([[l0.key_bias]]))
        # L0 hyper-parameters, meta-learned by L2 (kept in natural units, clamped when used).
        self.lam = nn.Parameter(torch.full((1, n), l0.lam))
        self.gain = nn.Parameter(const(np.asarray(spec.effort_limit) * l0.gain_per_limit))
        self.eta_max = nn.Parameter(torch.tensor([[l0.eta_max]]))
        self.gate = nn.Parameter(torch.tensor([[l0.gate_a, l0.gate_b]]))
        self.beta_max = nn.Parameter(torch.tensor([[l0.beta_max]]))
        self.decay = nn.Parameter(torch.tensor([[l0.decay_a, l0.decay_b]]))
        self.fast_init = nn.Parameter(torch.zeros(n, spec.key_dim))
        self.l1_step = l0.l1_step
        self.l1_decay = l0.l1_decay

    # -- pieces shared by forward() and the exporter's tests (the L0 math: l0_fast_weights) --
    def sanitize(self, x: torch.Tensor, bound: float | torch.Tensor) -> torch.Tensor:
        return l0fw.sanitize(x, bound)

    def key(self, obs: torch.Tensor) -> torch.Tensor:
        return l0fw.unit_key(obs, self.obs_scale, self.wk, self.bk, self.key_bias)

    def prior(self, obs: torch.Tensor) -> torch.Tensor:
        n = self.spec.act_dim
        q, qd, qr, qdr = obs[:, :n], obs[:, n : 2 * n], obs[:, 2 * n : 3 * n], obs[:, 3 * n : 4 * n]
        return self.kp * (qr - q) + self.kd * (qdr - qd)

    def slow(self, obs: torch.Tensor) -> torch.Tensor:
        return self.mlp(obs * self.obs_scale)

    def surprise(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (e, |s|): value-space error [b, n] and the surprise norm [b, 1]."""
        return l0fw.surprise(obs, self.spec.act_dim, self.lam, self.gain, self.e_max)

    def gates(self, snorm: torch.Tensor, l0_scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return l0fw.gates(snorm, l0_scale, self.eta_max, self.gate, self.beta_max, self.decay)

    def forward(self, obs, prev_obs, fast_state, l1_state, l0_scale):
        """One tick; shapes as in nestor_core.policy_io (batch of 1)."""
        obs = self.sanitize(obs, SANITIZE_OBS)
        prev_obs = self.sanitize(prev_obs, SANITIZE_OBS)
        fast_state = self.sanitize(fast_state, self.m_max)
        l1_state = self.sanitize(l1_state, self.m_max)
        l0_scale = torch.clamp(self.sanitize(l0_scale, 1.0), 0.0, 1.0)
        fast_out, fast_read, e, update_dir, k = l0fw.tick(self, obs, prev_obs, fast_state.unsqueeze(0), l0_scale)
        fast_out, update_dir = fast_out[0], update_dir[0]
        l1_read = k @ l1_state.transpose(0, 1)
        raw = self.prior(obs) + self.slow(obs) + fast_read + l1_read
        action = torch.maximum(torch.minimum(raw, self.u_max), -self.u_max)
        return action, fast_out, fast_read, l1_read, e, update_dir, k
