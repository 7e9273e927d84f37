"""The window policy: learned inverse dynamics (slow) + a windowed least-squares fast level (L0).

This is the torch mirror of the "window" ONNX graph (`window_export.export_window_onnx` writes the
same ops; a test compares them). One forward call is one control tick on the robot.

Slow weights (L2, consolidated in the cloud from the fleet's transitions and the robot model):

    tau(x, a) = u_max * (h(z) + M(z) a / a_std),   z = tanh(W2 tanh(W1 (x - mu) / sigma + b1) + b2)

an inverse-dynamics model: the effort that produces joint accelerations a (every joint, passive
ones too) in state x = (q, qd). It is used twice per tick:

    feedforward  u_d = tau(x_t, a_cmd),  a_cmd = a_ref + wn^2 (q_ref - q) + 2 zeta wn (qd_ref - qd)
                 (computed-torque control; a_ref from the reference's last step, passive joints 0)
    measurement  d_{t-1} = tau(x_{t-1}, (qd_t - qd_{t-1}) rate) - u_{t-1}
                 (what the model plant needed for the motion just seen, minus what was applied:
                 0 on the plant the model describes; a payload, a weak motor or a bias shows up here)

Fast weights (L0, every tick, from the short-horizon buffer): per joint j, a two-timescale
least-squares fit of the disturbance over the last K + 1 transitions i, in units of the effort
limit (u~ = u / u_max), d~_i ~ c_j + g_j u~_i:

    g = (sum_i v_i (u~_i - mu_u)(d~_i - mu_d) + lam_g g0) / (sum_i v_i (u~_i - mu_u)^2 + lam_g)
        v_i = rho_g^age_i (long memory: the gain needs the effort to vary); mu = v-weighted means
    c = (sum_i w_i (d~_i - g u~_i) + lam_c c0) / (sum_i w_i + lam_c),   w_i = rho_c^age_i (short)

(age 0 = the newest transition), closed form, then the command cancels it:

    u = u_max * clip((u~_d - c) / (1 + g)),   since the plant delivers (1 + g) u + c u_max

(1 + g) is the actuator gain seen, c the bias seen. The prior (c0, g0) is the meta-learned initial
state. There is no L1 input: a per-robot chunk memory fed into the prior was measured to change
the cost by under 5 % (issue 10) and was removed; the window fit already holds a robot's lasting
difference, and the swap re-measures it.

Nested: W1, W2, h, M (the features the fast level measures through) are L2's slow weights; rho,
lam_c, lam_g (the fast level's step sizes / memory) and c0, g0 (its initial state) are
meta-learned by L2 (`window_consolidation`); wn, zeta are the feedback design.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import nn

SANITIZE_OBS = 1.0e3
MAX_AGE = 1.0e4
G_BOUNDS = (-0.7, 2.0)  # 1 + g in [0.3, 3]: a motor at 30 % .. 300 % of nominal strength
C_MAX = 0.6  # |bias| <= 0.6 effort limits


@dataclasses.dataclass(frozen=True)
class WindowSpec:
    """Shapes and fixed constants of one task's window policy.

    Attributes:
        task: task name (model lineage).
        controlled_joints, passive_joints: joint names (act_dim = len(controlled)).
        effort_limit: |action| bound per controlled joint.
        control_rate_hz: control tick rate.
        wn, zeta: computed-torque feedback design (rad/s, damping ratio).
        hidden: inverse-dynamics MLP width.
    """

    task: str
    controlled_joints: tuple[str, ...]
    passive_joints: tuple[str, ...]
    effort_limit: tuple[float, ...]
    control_rate_hz: float = 100.0
    wn: float = 20.0
    zeta: float = 1.0
    hidden: int = 64

    @property
    def act_dim(self) -> int:
        return len(self.controlled_joints)

    @property
    def n_joints(self) -> int:
        return len(self.controlled_joints) + len(self.passive_joints)

    @property
    def obs_dim(self) -> int:
        return 4 * self.act_dim + 2 * len(self.passive_joints)


def joint_state(obs: torch.Tensor, n: int, p: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(q, qd) of every joint, controlled first, from observations [b, obs_dim]."""
    q = torch.cat([obs[:, :n], obs[:, 4 * n : 4 * n + p]], dim=1)
    qd = torch.cat([obs[:, n : 2 * n], obs[:, 4 * n + p :]], dim=1)
    return q, qd


def ridge_fit(dist, act, age, prior, log_rho_c, log_rho_g, lam_c, lam_g):
    """Two-timescale closed-form fit (c, g) [b, n] of d~ = c + g u~ over windows.

    The gain g needs the effort to vary, so it is fit on the long memory (weights rho_g^age) as a
    ridge slope toward its prior; the bias c then follows the short memory (rho_c^age) given g.
    dist, act [b, T, n] (in effort limits), age [b, T, 1], prior [b, n, 2], log_rho_* [1, n]
    (<= 0), lam_* scalars or [1, 1]. Unclipped g is returned; c uses the clamped g.
    """
    age = age.clamp(0.0, MAX_AGE)
    w_g = torch.exp(age * log_rho_g.unsqueeze(1))  # [b, T, n]
    w_c = torch.exp(age * log_rho_c.unsqueeze(1))
    s0 = w_g.sum(1) + 1e-9
    mu_u, mu_d = (w_g * act).sum(1) / s0, (w_g * dist).sum(1) / s0
    du, dd = act - mu_u.unsqueeze(1), dist - mu_d.unsqueeze(1)
    g = ((w_g * du * dd).sum(1) + lam_g * prior[..., 1]) / ((w_g * du * du).sum(1) + lam_g)
    g_used = g.clamp(*G_BOUNDS)
    c = ((w_c * (dist - g_used.unsqueeze(1) * act)).sum(1) + lam_c * prior[..., 0]) / (w_c.sum(1) + lam_c)
    return c, g


def compensate(u_d_scaled, c, g, scale):
    """Command (in effort limits) that cancels bias c and gain error g, blended by scale in [0, 1]."""
    c = c.clamp(-C_MAX, C_MAX)
    g = g.clamp(*G_BOUNDS)
    return u_d_scaled + scale * ((u_d_scaled - c) / (1.0 + g) - u_d_scaled)


class WindowPolicy(nn.Module):
    """Inverse-dynamics slow weights + windowed ridge fast level; one tick per forward call."""

    def __init__(self, spec: WindowSpec, seed: int = 0):
        super().__init__()
        self.spec = spec
        gen = torch.Generator().manual_seed(seed)
        n, m, h = spec.act_dim, spec.n_joints, spec.hidden

        def const(values) -> torch.Tensor:
            return torch.tensor(np.asarray(values, np.float32)).reshape(1, -1)

        self.register_buffer("u_max", const(spec.effort_limit))
        self.register_buffer("x_mean", torch.zeros(1, 2 * m))
        self.register_buffer("x_std", torch.ones(1, 2 * m))
        self.register_buffer("a_std", torch.ones(1, m))
        self.register_buffer("wn", torch.full((1, n), float(spec.wn)))
        self.register_buffer("zeta", torch.full((1, n), float(spec.zeta)))
        self.id1, self.id2 = nn.Linear(2 * m, h), nn.Linear(h, h)
        self.id_h, self.id_m = nn.Linear(h, n), nn.Linear(h, n * m)
        for layer in (self.id1, self.id2, self.id_h, self.id_m):
            nn.init.normal_(layer.weight, std=1.0 / np.sqrt(layer.in_features), generator=gen)
            nn.init.zeros_(layer.bias)
        # Fast-level meta-parameters (meta-learned by L2): memory, ridge strengths, initial state.
        # Measured on kuka_track (payload, weak motor, bias): a short memory for the bias (rho_c
        # 0.5) and a long one for the gain (rho_g 0.97) beat any single rho.
        self.rho_logit = nn.Parameter(torch.full((1, n), 0.0))  # rho_c = 0.5
        self.rho_g_logit = nn.Parameter(torch.full((1, n), float(np.log(0.97 / 0.03))))  # rho_g = 0.97
        self.log_lam_c = nn.Parameter(torch.tensor([[float(np.log(1e-3))]]))
        self.log_lam_g = nn.Parameter(torch.tensor([[float(np.log(1e-3))]]))
        self.prior = nn.Parameter(torch.zeros(n, 2))
        # The robot averages its fits per chunk with these (reported to the cloud, not fed back).
        self.l1_step = 0.5
        self.l1_decay = 0.5

    # -- the slow weights ------------------------------------------------------------------------
    def id_features(self, q: torch.Tensor, qd: torch.Tensor) -> torch.Tensor:
        x = (torch.cat([q, qd], dim=1) - self.x_mean) / self.x_std
        return torch.tanh(self.id2(torch.tanh(self.id1(x))))

    def tau(self, q: torch.Tensor, qd: torch.Tensor, accel: torch.Tensor) -> torch.Tensor:
        """Inverse dynamics [b, n]: effort for accelerations accel [b, n_joints] at (q, qd)."""
        z = self.id_features(q, qd)
        n, m = self.spec.act_dim, self.spec.n_joints
        mass = self.id_m(z).reshape(-1, n, m)
        return (self.id_h(z) + torch.einsum("bij,bj->bi", mass, accel / self.a_std)) * self.u_max

    def measured_accel(self, prev_obs: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        n, p = self.spec.act_dim, len(self.spec.passive_joints)
        _, qd0 = joint_state(prev_obs, n, p)
        _, qd1 = joint_state(obs, n, p)
        return (qd1 - qd0) * self.spec.control_rate_hz

    def disturbance(self, prev_obs, obs, prev_action) -> torch.Tensor:
        n, p = self.spec.act_dim, len(self.spec.passive_joints)
        q0, qd0 = joint_state(prev_obs, n, p)
        return self.tau(q0, qd0, self.measured_accel(prev_obs, obs)) - prev_action

    def feedforward(self, prev_obs, obs) -> torch.Tensor:
        n, p = self.spec.act_dim, len(self.spec.passive_joints)
        q, qd = joint_state(obs, n, p)
        qr, qdr = obs[:, 2 * n : 3 * n], obs[:, 3 * n : 4 * n]
        a_ref = (qdr - prev_obs[:, 3 * n : 4 * n]) * self.spec.control_rate_hz
        a_cmd = a_ref + self.wn * self.wn * (qr - q[:, :n]) + 2.0 * self.zeta * self.wn * (qdr - qd[:, :n])
        accel = torch.cat([a_cmd, torch.zeros(obs.shape[0], p)], dim=1)
        return self.tau(q, qd, accel)

    # -- the fast level's meta-parameters ----------------------------------------------------------
    def log_rho(self) -> torch.Tensor:
        return torch.nn.functional.logsigmoid(self.rho_logit)

    def log_rho_g(self) -> torch.Tensor:
        return torch.nn.functional.logsigmoid(self.rho_g_logit)

    def lams(self) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.exp(self.log_lam_c), torch.exp(self.log_lam_g)

    def forward(self, obs, prev_obs, prev_action, window_dist, window_action, window_age, l0_scale):
        """One tick (batch of 1, window [K, n]); outputs in nestor_core.policy_io.WINDOW_OUTPUTS order."""
        clean = lambda x, b: torch.clamp(torch.where(torch.isnan(x), torch.zeros_like(x), x), -b, b)  # noqa: E731
        obs, prev_obs = clean(obs, SANITIZE_OBS), clean(prev_obs, SANITIZE_OBS)
        limit = self.u_max
        prev_action = torch.maximum(torch.minimum(clean(prev_action, SANITIZE_OBS), limit), -limit)
        window_dist = clean(window_dist, SANITIZE_OBS)
        window_action = clean(window_action, SANITIZE_OBS)
        window_age = torch.clamp(clean(window_age, MAX_AGE), 0.0, MAX_AGE)
        scale = torch.clamp(clean(l0_scale, 1.0), 0.0, 1.0)
        n = self.spec.act_dim
        d_new = self.disturbance(prev_obs, obs, prev_action)
        u_d = self.feedforward(prev_obs, obs)
        dist = torch.cat([window_dist, d_new], dim=0).unsqueeze(0) / limit
        act = torch.cat([window_action, prev_action], dim=0).unsqueeze(0) / limit
        prior = self.prior.unsqueeze(0)
        lam_c, lam_g = self.lams()
        c, g = ridge_fit(dist, act, window_age.unsqueeze(0), prior, self.log_rho(), self.log_rho_g(), lam_c, lam_g)
        ud = u_d / limit
        raw = compensate(ud, c, g, scale) * limit
        action = torch.maximum(torch.minimum(raw, limit), -limit)
        fast_read = raw - u_d
        prior_read = (compensate(ud, prior[..., 0], prior[..., 1], scale) - ud) * limit
        qr, q = obs[:, 2 * n : 3 * n], obs[:, :n]
        surprise = (obs[:, 3 * n : 4 * n] - obs[:, n : 2 * n]) + 5.0 * (qr - q)
        update_dir = torch.stack([c[0].clamp(-C_MAX, C_MAX), g[0].clamp(*G_BOUNDS)], dim=1)
        return action, fast_read, prior_read, surprise, update_dir, d_new, u_d
