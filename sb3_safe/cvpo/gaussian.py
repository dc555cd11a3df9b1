"""Gaussian policies for CVPO: diagonal or full (Cholesky) covariance, sampling, log-likelihoods, decoupled KLs.

A distribution is a :class:`Gaussian` whose ``scale`` is the standard deviation ``(B, A)`` (diagonal case) or the
lower Cholesky factor ``(B, A, A)`` (full case). The M-step (specs/cvpo.md §2.5; Abdolmaleki et al. 2018, MPO)
combines the new mean with the old covariance and vice versa, and bounds the two halves of KL(pi_old || pi) apart.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch as th

VARIANCE_FLOOR = 1e-6
"""Variances are floored here inside the KLs (diagonal case), so a collapsing sigma cannot produce inf."""


class Gaussian(NamedTuple):
    """A batch of Gaussians: ``mean`` ``(B, A)``; ``scale`` std ``(B, A)`` or Cholesky factor ``(B, A, A)``."""

    mean: th.Tensor
    scale: th.Tensor

    @property
    def is_full(self) -> bool:
        """Whether the covariance is full (``scale`` is a Cholesky factor)."""
        return self.scale.dim() == self.mean.dim() + 1

    def with_mean(self, mean: th.Tensor) -> Gaussian:
        """The same covariance around another mean."""
        return Gaussian(mean, self.scale)

    def with_scale(self, scale: th.Tensor) -> Gaussian:
        """The same mean with another covariance factor."""
        return Gaussian(self.mean, scale)

    def sample(self, n_samples: int | None = None) -> th.Tensor:
        """Reparametrised samples: ``(B, A)``, or ``(n_samples, B, A)`` when ``n_samples`` is given."""
        shape = self.mean.shape if n_samples is None else (n_samples, *self.mean.shape)
        noise = th.randn(shape, dtype=self.mean.dtype, device=self.mean.device)
        if self.is_full:
            return self.mean + th.einsum("bij,...bj->...bi", self.scale, noise)
        return self.mean + self.scale * noise

    def log_prob(self, actions: th.Tensor) -> th.Tensor:
        """Log-density of ``actions`` ``(..., B, A)`` (leading sample dimensions allowed): shape ``(..., B)``."""
        diff = actions - self.mean
        dim = self.mean.shape[-1]
        if self.is_full:
            # One triangular inverse per state, shared by every sample of that state.
            eye = th.eye(dim, dtype=self.scale.dtype, device=self.scale.device)
            inverse = th.linalg.solve_triangular(self.scale, eye.expand_as(self.scale), upper=False)
            white = th.einsum("bij,...bj->...bi", inverse, diff)
            half_log_det = th.log(th.diagonal(self.scale, dim1=-2, dim2=-1)).sum(-1)
        else:
            white = diff / self.scale
            half_log_det = th.log(self.scale).sum(-1)
        return -0.5 * (white**2).sum(-1) - half_log_det - 0.5 * dim * math.log(2.0 * math.pi)


def decoupled_kl(old: Gaussian, mean: th.Tensor, scale: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
    """The two halves of KL(pi_old || pi) with pi = N(mean, scale), averaged over the batch (specs/cvpo.md §2.5).

    ``KL_mu = mean_s 0.5 (mu - mu_old)^T Sigma_old^{-1} (mu - mu_old)`` = KL(pi_old || N(mu, Sigma_old)) and
    ``KL_Sigma = mean_s 0.5 [tr(Sigma^{-1} Sigma_old) - n + log det Sigma - log det Sigma_old]``
    = KL(pi_old || N(mu_old, Sigma)). Cholesky factors are used throughout (triangular solves, never inverses).

    Raises:
        FloatingPointError: If a KL is not finite, naming which.
    """
    dim = old.mean.shape[-1]
    diff = mean - old.mean
    if old.is_full:
        white = th.linalg.solve_triangular(old.scale, diff.unsqueeze(-1), upper=False).squeeze(-1)
        kl_mean = 0.5 * (white**2).sum(-1)
        ratio = th.linalg.solve_triangular(scale, old.scale, upper=False)  # L^{-1} L_old
        log_det = 2.0 * (
            th.log(th.diagonal(scale, dim1=-2, dim2=-1)) - th.log(th.diagonal(old.scale, dim1=-2, dim2=-1))
        )
        kl_cov = 0.5 * ((ratio**2).sum((-2, -1)) - dim + log_det.sum(-1))
    else:
        old_var = (old.scale**2).clamp_min(VARIANCE_FLOOR)
        var = (scale**2).clamp_min(VARIANCE_FLOOR)
        kl_mean = 0.5 * (diff**2 / old_var).sum(-1)
        kl_cov = 0.5 * (th.log(var / old_var) + old_var / var - 1.0).sum(-1)
    kl_mean, kl_cov = kl_mean.mean(), kl_cov.mean()
    for name, value in (("KL_mu (mean)", kl_mean), ("KL_Sigma (covariance)", kl_cov)):
        if not th.isfinite(value):
            raise FloatingPointError(
                f"The M-step's {name} trust-region term is not finite ({value.item()}): the policy's covariance "
                "has collapsed or exploded. Lower the learning rate or the KL bounds, or clip gradients "
                "(max_grad_norm)."
            )
    return kl_mean, kl_cov
