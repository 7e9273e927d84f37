"""Recursive least squares with forgetting on a fixed basis: the classic adaptive-control baseline.

The benchmark's `rls` method replaces the learned fast level with this estimator (issue 9). It
fits a per-tick measurement d of the missing effort as a linear function of a fixed basis
phi(x) = [1, q_1, ..., q_n]:

    k     = P phi / (lam + phi^T P phi)
    theta = theta + k (d - phi^T theta)^T          theta [m, n_joints]
    P     = (P - k phi^T P) / lam

and the command cancels the estimate. `RlsAdapter` is the benchmark's robot-side use of it.

Recovery bound (derived, tested): with the constant basis and an exact measurement, after a step
of size b in d the estimate after j new samples is b (1 - lam^j) once the old data dominate P,
so the error is within 10 % of the step after j* = ceil(ln 0.1 / ln lam) samples, and the
command one tick later (the measurement of tick t is available at t + 1).
"""

import math

import numpy as np


def recovery_bound_ticks(forgetting: float, tolerance: float = 0.1) -> int:
    """Ticks after a step until the RLS estimate is within `tolerance` of it (constant basis)."""
    if not 0.0 < forgetting < 1.0:
        raise ValueError(f"forgetting: must be in (0, 1), got {forgetting}")
    return math.ceil(math.log(tolerance) / math.log(forgetting)) + 1


class RlsEstimator:
    """Multi-output RLS with exponential forgetting (one P shared by every output).

    Args:
        basis_dim: m, the basis size.
        out_dim: number of outputs (joints).
        forgetting: lam in (0, 1]; the memory is about 1 / (1 - lam) samples.
        p0: initial covariance scale (large = trust the first samples).
    """

    def __init__(self, basis_dim: int, out_dim: int, forgetting: float = 0.98, p0: float = 1.0e3):
        if not 0.0 < forgetting <= 1.0:
            raise ValueError(f"forgetting: must be in (0, 1], got {forgetting}")
        self.lam = float(forgetting)
        self.theta = np.zeros((basis_dim, out_dim))
        self.P = np.eye(basis_dim) * p0
        self.p_max = p0 * 1.0e3  # bounds covariance wind-up when the basis is not excited

    def update(self, phi: np.ndarray, y: np.ndarray) -> None:
        """One measurement y [out_dim] at basis phi [basis_dim]; non-finite data are skipped."""
        if not (np.all(np.isfinite(phi)) and np.all(np.isfinite(y))):
            return
        p_phi = self.P @ phi
        k = p_phi / (self.lam + phi @ p_phi)
        self.theta += np.outer(k, y - phi @ self.theta)
        self.P = (self.P - np.outer(k, p_phi)) / self.lam
        if np.trace(self.P) > self.p_max * len(phi):
            self.P *= self.p_max * len(phi) / np.trace(self.P)

    def predict(self, phi: np.ndarray) -> np.ndarray:
        return phi @ self.theta


class RlsAdapter:
    """The `rls` fast level of the benchmark: RLS on [1, q] in place of the learned L0.

    Classic adaptive control on top of the window graph's own measurement: at tick t the graph
    reports d_{t-1}, the effort the model plant needed for the transition just seen minus what was
    applied, so the missing effort is n_{t-1} = -d_{t-1}. RLS with forgetting fits
    n_hat = phi(x)^T theta on phi = [1, q], and the command is u = u_model + n_hat(x_t).

    Args:
        effort_limit: per joint; the fit is in units of the limit (well-conditioned P).
        forgetting: RLS forgetting factor.
    """

    def __init__(self, effort_limit, forgetting: float = 0.98):
        self.limit = np.asarray(effort_limit, np.float64)
        self.n = len(self.limit)
        self.rls = RlsEstimator(self.n + 1, self.n, forgetting)
        self._prev_phi: np.ndarray | None = None

    def basis(self, obs: np.ndarray) -> np.ndarray:
        return np.concatenate([[1.0], np.asarray(obs[: self.n], np.float64)])

    def command(self, obs: np.ndarray, u_model: np.ndarray, disturbance: np.ndarray | None) -> np.ndarray:
        """Learns from the previous tick's measured disturbance, then returns u_model + n_hat(obs).

        `disturbance` is None on the first tick (nothing measured yet): no update then.
        """
        obs = np.asarray(obs, np.float64)
        if self._prev_phi is not None and disturbance is not None:
            self.rls.update(self._prev_phi, -np.asarray(disturbance, np.float64) / self.limit)
        phi = self.basis(obs)
        out = np.clip(self.rls.predict(phi), -1.0, 1.0)
        self._prev_phi = phi
        return np.clip(np.asarray(u_model, np.float64) + out * self.limit, -self.limit, self.limit)
