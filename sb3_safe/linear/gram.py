"""Incremental ridge-regression statistics for linear-MDP agents (docs/linear_agents.md, 'Regression statistics').

Per group g (one per step h, or a single pooled group), with the features phi_j of the samples seen so far:

    A = lambda I + sum_j phi_j phi_j^T,   M = A^{-1} (Sherman-Morrison rank-one updates),
    b_r = sum_j phi_j r_j,   b_z = sum_j phi_j z_j,   B = sum_j phi_j e_{s'_j}^T  (d x n_states),

so that the regression target sum for any value vector V is ``b_r + B @ V``. A sample whose next state is terminal
(or past the horizon) has no column in B: its bootstrap value is 0. Every ``refactor_every`` updates M is recomputed
from A with one inverse, which stops round-off drift. The statistics are registered buffers, so they are saved and
restored with the policy's state dict; the numpy views used for the arithmetic share their memory.
"""

from __future__ import annotations

import numpy as np
import torch as th
from torch import nn

NO_NEXT_STATE = -1
"""Next-state index of a sample that does not bootstrap (terminal state, or the last step of the horizon)."""


class RidgeStatistics(nn.Module):
    """Ridge statistics for ``n_groups`` independent regressions sharing a feature dimension.

    Args:
        n_groups: H for per-step regressions, 1 when pooled across steps (``share_across_h``).
        feature_dim: d.
        n_states: Number of states (columns of B).
        ridge: lambda, the ridge coefficient (> 0).
        refactor_every: Recompute M = inv(A) after this many rank-one updates of a group (0: never).
    """

    gram: th.Tensor
    gram_inverse: th.Tensor
    reward_sum: th.Tensor
    cost_sum: th.Tensor
    next_state_sum: th.Tensor
    counts: th.Tensor
    updates_since_refactor: th.Tensor

    def __init__(self, n_groups: int, feature_dim: int, n_states: int, ridge: float, refactor_every: int = 1000):
        super().__init__()
        if ridge <= 0:
            raise ValueError(f"The ridge coefficient lambda must be > 0, got {ridge}.")
        self.ridge = float(ridge)
        self.refactor_every = int(refactor_every)
        eye = th.eye(feature_dim, dtype=th.float64).expand(n_groups, -1, -1)
        self.register_buffer("gram", eye * self.ridge)
        self.register_buffer("gram_inverse", eye / self.ridge)
        self.register_buffer("reward_sum", th.zeros(n_groups, feature_dim, dtype=th.float64))
        self.register_buffer("cost_sum", th.zeros(n_groups, feature_dim, dtype=th.float64))
        self.register_buffer("next_state_sum", th.zeros(n_groups, feature_dim, n_states, dtype=th.float64))
        self.register_buffer("counts", th.zeros(n_groups, dtype=th.int64))
        self.register_buffer("updates_since_refactor", th.zeros(n_groups, dtype=th.int64))

    # numpy views (shared memory) for the arithmetic
    @property
    def A(self) -> np.ndarray:  # noqa: N802 - the paper's name
        """Gram matrices ``(G, d, d)``."""
        return self.gram.numpy()

    @property
    def M(self) -> np.ndarray:  # noqa: N802 - the paper's name
        """Their inverses ``(G, d, d)``."""
        return self.gram_inverse.numpy()

    @property
    def b_r(self) -> np.ndarray:
        """Feature-weighted reward sums ``(G, d)``."""
        return self.reward_sum.numpy()

    @property
    def b_z(self) -> np.ndarray:
        """Feature-weighted observed-cost sums ``(G, d)``."""
        return self.cost_sum.numpy()

    @property
    def B(self) -> np.ndarray:  # noqa: N802 - the paper's name
        """Feature-weighted next-state indicators ``(G, d, n_states)``."""
        return self.next_state_sum.numpy()

    @property
    def n(self) -> np.ndarray:
        """Samples per group ``(G,)``."""
        return self.counts.numpy()

    @property
    def n_groups(self) -> int:
        """G."""
        return int(self.gram.shape[0])

    def add(self, group: int, phi: np.ndarray, reward: float, cost: float, next_state: int) -> None:
        """One sample into ``group``: rank-one updates of A and M = A^{-1}, and the three sums.

        ``M <- M - (M phi)(M phi)^T / (1 + phi^T M phi)`` (Sherman-Morrison; A stays symmetric positive definite).
        """
        M, A = self.M[group], self.A[group]
        m_phi = M @ phi
        M -= np.outer(m_phi, m_phi) / (1.0 + phi @ m_phi)
        A += np.outer(phi, phi)
        self.b_r[group] += reward * phi
        self.b_z[group] += cost * phi
        if next_state != NO_NEXT_STATE:
            self.B[group, :, next_state] += phi
        self.n[group] += 1
        since = self.updates_since_refactor.numpy()
        since[group] += 1
        if self.refactor_every and since[group] >= self.refactor_every:
            self.refactor(group)

    def refactor(self, group: int) -> None:
        """M = inv(A) for ``group``, from scratch (symmetrised)."""
        inverse = np.linalg.inv(self.A[group])
        self.M[group] = 0.5 * (inverse + inverse.T)
        self.updates_since_refactor.numpy()[group] = 0

    def weights_target(self, group: int, cost_penalty: float = 0.0) -> np.ndarray:
        """The immediate part of the regression target sum, ``b_r - cost_penalty b_z``."""
        return self.b_r[group] - cost_penalty * self.b_z[group] if cost_penalty else self.b_r[group].copy()

    def weights(self, group: int, values: np.ndarray | None = None, cost_penalty: float = 0.0) -> np.ndarray:
        """Ridge solution ``w = M (b_r - cost_penalty b_z + B values)`` of ``group`` (``values`` ``(n_states,)``)."""
        target = self.weights_target(group, cost_penalty)
        if values is not None:
            target += self.B[group] @ values
        return self.M[group] @ target

    def cost_estimate(self, group: int) -> np.ndarray:
        """Ridge estimate of the cost parameters, ``gammahat = M b_z`` (ridge regression on the observed costs)."""
        return self.M[group] @ self.b_z[group]

    def bonus_norms(self, group: int, features: np.ndarray) -> np.ndarray:
        """``||phi||_M = sqrt(phi^T M phi)`` for every feature in ``features`` ``(..., d)``: one batched pass."""
        flat = features.reshape(-1, features.shape[-1])
        quadratic = np.einsum("nd,nd->n", flat @ self.M[group], flat)
        return np.sqrt(np.maximum(quadratic, 0.0)).reshape(features.shape[:-1])
