"""CVPO's M-step: weighted maximum likelihood of the E-step's samples inside decoupled KL trust regions.

The E-step gives, per state s, weights w_si on K actions a_si ~ pi_old(.|s). The M-step fits the parametric
Gaussian pi = N(mu, Sigma) to them (Liu et al. 2022, the M-step problem; the decoupling of Abdolmaleki et al. 2018,
"Maximum a Posteriori Policy Optimisation"):

    max  (1/(B K)) sum_s sum_i w_si [log N(a_si; mu, Sigma_old) + log N(a_si; mu_old, Sigma)]
    s.t. KL_mu(pi_old || pi) <= eps_mu,    KL_Sigma(pi_old || pi) <= eps_Sigma,

the mean fitted with the old covariance and the covariance with the old mean, so that each trust region bounds one
of them. The constraints become penalties ``alpha_mu (KL_mu - eps_mu) + alpha_Sigma (KL_Sigma - eps_Sigma)`` whose
multipliers take one projected dual step per iteration, ``alpha <- clip(alpha - step (eps - KL), 0, alpha_max)``.
The log-likelihoods are evaluated from the samples' weighted moments (:class:`~sb3_safe.cvpo.gaussian.
WeightedMoments`), which is exact and costs nothing per sample.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch as th

from sb3_safe.cvpo.gaussian import Gaussian, WeightedMoments, decoupled_kl, expected_log_prob


@dataclasses.dataclass(frozen=True)
class TrustRegion:
    """The KL bounds of the M-step and the projected dual steps of their multipliers.

    Attributes:
        kl_mean: eps_mu, the bound on the mean's KL.
        kl_cov: eps_Sigma, the bound on the covariance's KL.
        alpha_mean_step: Dual step size of alpha_mu.
        alpha_mean_max: Upper bound of alpha_mu.
        alpha_cov_step: Dual step size of alpha_Sigma.
        alpha_cov_max: Upper bound of alpha_Sigma.
    """

    kl_mean: float
    kl_cov: float
    alpha_mean_step: float
    alpha_mean_max: float
    alpha_cov_step: float
    alpha_cov_max: float

    def step_multipliers(
        self, alpha_mean: float, alpha_cov: float, kl_mean: float, kl_cov: float
    ) -> tuple[float, float]:
        """One projected dual step: ``alpha <- clip(alpha - step (eps - KL), 0, alpha_max)`` for both."""
        mean = np.clip(alpha_mean - self.alpha_mean_step * (self.kl_mean - kl_mean), 0.0, self.alpha_mean_max)
        cov = np.clip(alpha_cov - self.alpha_cov_step * (self.kl_cov - kl_cov), 0.0, self.alpha_cov_max)
        return float(mean), float(cov)


@dataclasses.dataclass
class MStepTerms:
    """One M-step iteration's loss (differentiable in the new policy) and what it was made of."""

    loss: th.Tensor
    kl_mean: float
    kl_cov: float
    alpha_mean: float
    alpha_cov: float


def mstep_loss(
    old: Gaussian,
    new: Gaussian,
    old_precision: th.Tensor | None,
    moments: WeightedMoments,
    n_samples: int,
    region: TrustRegion,
    alpha_mean: float,
    alpha_cov: float,
) -> MStepTerms:
    """The M-step objective of one iteration, with the multipliers stepped on its KLs first.

    ``L = -MLE + alpha_mu (KL_mu - eps_mu) + alpha_Sigma (KL_Sigma - eps_Sigma)`` with the multipliers after their
    dual step (see the module docstring).

    Args:
        old: pi_old at the batch's states.
        new: The current policy at the same states (its parameters get the gradient).
        old_precision: pi_old's precision factor ``L_old^{-1}`` for full covariances (None for diagonal ones).
        moments: The weighted moments of the E-step samples.
        n_samples: K, the samples per state.
        region: The trust regions and dual steps.
        alpha_mean: alpha_mu before this iteration.
        alpha_cov: alpha_Sigma before this iteration.
    """
    precision = new.precision_factor() if new.is_full else None
    log_likelihood = expected_log_prob(old.with_mean(new.mean), moments, old_precision) + expected_log_prob(
        new.with_mean(old.mean), moments, precision
    )
    mle = log_likelihood.sum() / (n_samples * moments.total.shape[0])
    kl_mean, kl_cov = decoupled_kl(old, new.mean, new.scale, old_precision, precision)
    alpha_mean, alpha_cov = region.step_multipliers(alpha_mean, alpha_cov, kl_mean.item(), kl_cov.item())
    loss = -mle + alpha_mean * (kl_mean - region.kl_mean) + alpha_cov * (kl_cov - region.kl_cov)
    return MStepTerms(loss, kl_mean.item(), kl_cov.item(), alpha_mean, alpha_cov)


__all__ = ["MStepTerms", "TrustRegion", "mstep_loss"]
