"""Gaussian policies for CVPO: diagonal or full (Cholesky) covariance, sampling, log-likelihoods, decoupled KLs.

A distribution is a :class:`Gaussian` whose ``scale`` is the standard deviation ``(B, A)`` (diagonal case) or the
lower Cholesky factor ``(B, A, A)`` (full case). The M-step (docs/cvpo.md, 'M-step'; Abdolmaleki et al. 2018, MPO)
combines the new mean with the old covariance and vice versa, and bounds the two halves of KL(pi_old || pi) apart.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch as th

VARIANCE_FLOOR = 1e-6
"""Variances are floored here inside the KLs (diagonal case), so a collapsing sigma cannot produce inf."""


class WeightedMoments(NamedTuple):
    """Weighted moments of K samples per state, enough to evaluate weighted log-likelihoods of any Gaussian.

    ``total`` ``(B,)`` = sum_i w_i; ``mean`` ``(B, A)`` = sum_i w_i a_i / total; ``scatter`` = sum_i w_i
    (a_i - mean)(a_i - mean)^T, ``(B, A, A)``, or only its diagonal ``(B, A)`` for diagonal Gaussians.
    """

    total: th.Tensor
    mean: th.Tensor
    scatter: th.Tensor

    @classmethod
    def of(cls, samples: th.Tensor, weights: th.Tensor, full: bool) -> WeightedMoments:
        """Moments of ``samples`` ``(K, B, A)`` under ``weights`` ``(K, B)``."""
        total = weights.sum(0)
        mean = (weights.unsqueeze(-1) * samples).sum(0) / total.unsqueeze(-1)
        centred = samples - mean
        if full:
            scatter = th.einsum("kb,kbi,kbj->bij", weights, centred, centred)
        else:
            scatter = (weights.unsqueeze(-1) * centred**2).sum(0)
        return cls(total, mean, scatter)


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
            white = th.einsum("bij,...bj->...bi", self.precision_factor(), diff)
            half_log_det = th.log(th.diagonal(self.scale, dim1=-2, dim2=-1)).sum(-1)
        else:
            white = diff / self.scale
            half_log_det = th.log(self.scale).sum(-1)
        return -0.5 * (white**2).sum(-1) - half_log_det - 0.5 * dim * math.log(2.0 * math.pi)

    def precision_factor(self) -> th.Tensor:
        """``L^{-1}`` ``(B, A, A)`` (one triangular solve per state), or ``1 / std`` ``(B, A)`` if diagonal."""
        if not self.is_full:
            return 1.0 / self.scale
        eye = th.eye(self.mean.shape[-1], dtype=self.scale.dtype, device=self.scale.device)
        return th.linalg.solve_triangular(self.scale, eye.expand_as(self.scale), upper=False)


def expected_log_prob(dist: Gaussian, moments: WeightedMoments, precision: th.Tensor | None = None) -> th.Tensor:
    """``sum_i w_i log N(a_i; mean, Sigma)`` per state ``(B,)``, from the samples' weighted moments alone.

    ``= -0.5 [tr(Sigma^{-1} S) + W (m - mu)^T Sigma^{-1} (m - mu)] - W (0.5 log det Sigma + A/2 log 2 pi)``: exact,
    and it costs O(B A^2) instead of O(K B A^2), which makes repeated M-step iterations cheap.
    ``precision`` is ``dist.precision_factor()`` when the caller already has it (full covariance).
    """
    dim = dist.mean.shape[-1]
    diff = moments.mean - dist.mean
    if dist.is_full:
        inverse = dist.precision_factor() if precision is None else precision
        trace = th.einsum("bij,bjk,bik->b", inverse, moments.scatter, inverse)
        quadratic = (th.einsum("bij,bj->bi", inverse, diff) ** 2).sum(-1)
        half_log_det = th.log(th.diagonal(dist.scale, dim1=-2, dim2=-1)).sum(-1)
    else:
        variance = dist.scale**2
        trace = (moments.scatter / variance).sum(-1)
        quadratic = (diff**2 / variance).sum(-1)
        half_log_det = th.log(dist.scale).sum(-1)
    normaliser = half_log_det + 0.5 * dim * math.log(2.0 * math.pi)
    return -0.5 * (trace + moments.total * quadratic) - moments.total * normaliser


def decoupled_kl(
    old: Gaussian,
    mean: th.Tensor,
    scale: th.Tensor,
    old_precision: th.Tensor | None = None,
    precision: th.Tensor | None = None,
) -> tuple[th.Tensor, th.Tensor]:
    """The two halves of KL(pi_old || pi) with pi = N(mean, scale), averaged over the batch (docs/cvpo.md, 'M-step').

    ``KL_mu = mean_s 0.5 (mu - mu_old)^T Sigma_old^{-1} (mu - mu_old)`` = KL(pi_old || N(mu, Sigma_old)) and
    ``KL_Sigma = mean_s 0.5 [tr(Sigma^{-1} Sigma_old) - n + log det Sigma - log det Sigma_old]``
    = KL(pi_old || N(mu_old, Sigma)). Cholesky factors are used throughout (triangular solves, never inverses);
    with full covariances, ``old_precision`` and ``precision`` (``L_old^{-1}``, ``L^{-1}``) spare the solves when the
    caller already has them.

    Raises:
        FloatingPointError: If a KL is not finite, naming which.
    """
    dim = old.mean.shape[-1]
    diff = mean - old.mean
    if old.is_full:
        if old_precision is None:
            white = th.linalg.solve_triangular(old.scale, diff.unsqueeze(-1), upper=False).squeeze(-1)
        else:
            white = (old_precision @ diff.unsqueeze(-1)).squeeze(-1)
        kl_mean = 0.5 * (white**2).sum(-1)
        if precision is None:
            ratio = th.linalg.solve_triangular(scale, old.scale, upper=False)  # L^{-1} L_old
        else:
            ratio = precision @ old.scale
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
