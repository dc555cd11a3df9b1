"""The M-step module on its own: projected multiplier steps and a loss that shrinks toward the weighted samples."""

from __future__ import annotations

import pytest
import torch as th

from sb3_safe.cvpo.gaussian import Gaussian, WeightedMoments
from sb3_safe.cvpo.mstep import TrustRegion, mstep_loss

REGION = TrustRegion(kl_mean=0.01, kl_cov=0.001, alpha_mean_step=1.0, alpha_mean_max=0.1, alpha_cov_step=100.0,
                     alpha_cov_max=10.0)  # fmt: skip


def test_multipliers_step_up_over_the_bound_down_under_it_and_stay_in_their_box():
    assert REGION.step_multipliers(0.05, 1.0, kl_mean=0.03, kl_cov=0.002) == pytest.approx((0.07, 1.1))
    assert REGION.step_multipliers(0.05, 1.0, kl_mean=0.0, kl_cov=0.0) == pytest.approx((0.04, 0.9))
    assert REGION.step_multipliers(0.09, 9.99, kl_mean=1.0, kl_cov=1.0) == (0.1, 10.0)  # clipped at the maxima
    assert REGION.step_multipliers(0.0, 0.0, kl_mean=0.0, kl_cov=0.0) == (0.0, 0.0)  # and at 0


def test_gradient_steps_on_the_loss_move_the_mean_toward_the_heavily_weighted_samples():
    th.manual_seed(0)
    old = Gaussian(th.zeros(4, 2), th.full((4, 2), 0.5))
    samples = old.sample(16)  # (K, B, A)
    weights = th.zeros(16, 4)
    weights[0] = 1.0  # the E-step put all mass on the first sample of every state
    moments = WeightedMoments.of(samples, weights, full=False)
    mean = th.zeros(4, 2, requires_grad=True)
    optimizer = th.optim.SGD([mean], lr=0.5)
    alpha_mean = alpha_cov = 0.0
    for _ in range(50):
        new = Gaussian(mean, th.full((4, 2), 0.5))
        terms = mstep_loss(old, new, None, moments, 16, REGION, alpha_mean, alpha_cov)
        alpha_mean, alpha_cov = terms.alpha_mean, terms.alpha_cov
        optimizer.zero_grad()
        terms.loss.backward()
        optimizer.step()
    distance = (mean.detach() - samples[0]).norm()
    assert distance < 0.75 * samples[0].norm()  # pulled toward the chosen samples (from mean 0)
    assert 0.0 < terms.alpha_mean <= REGION.alpha_mean_max  # the mean's trust region pushes back
