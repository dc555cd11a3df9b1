"""CVPO's Gaussian: log-likelihoods and the decoupled KLs against torch.distributions (docs/cvpo.md, 'M-step')."""

from __future__ import annotations

import pytest
import torch as th
from torch.distributions import MultivariateNormal, kl_divergence

from sb3_safe.cvpo.gaussian import Gaussian, WeightedMoments, decoupled_kl, expected_log_prob


def _random_cholesky(batch: int, dim: int, generator: th.Generator) -> th.Tensor:
    raw = th.randn(batch, dim, dim, generator=generator, dtype=th.float64)
    return th.tril(raw, -1) + th.diag_embed(th.rand(batch, dim, generator=generator, dtype=th.float64) + 0.3)


def _as_torch(dist: Gaussian) -> MultivariateNormal:
    scale = dist.scale if dist.is_full else th.diag_embed(dist.scale)
    return MultivariateNormal(dist.mean, scale_tril=scale)


@pytest.mark.parametrize("full", [False, True])
def test_log_prob_matches_torch(full):
    gen = th.Generator().manual_seed(0)
    mean = th.randn(5, 3, generator=gen, dtype=th.float64)
    scale = _random_cholesky(5, 3, gen) if full else th.rand(5, 3, generator=gen, dtype=th.float64) + 0.2
    dist = Gaussian(mean, scale)
    samples = th.randn(7, 5, 3, generator=gen, dtype=th.float64)
    th.testing.assert_close(dist.log_prob(samples), _as_torch(dist).log_prob(samples))


@pytest.mark.parametrize("full", [False, True])
def test_decoupled_kls_are_the_two_halves_of_kl_old_new(full):
    gen = th.Generator().manual_seed(1)
    batch, dim = 6, 3
    make_scale = (
        (lambda: _random_cholesky(batch, dim, gen))
        if full
        else (lambda: th.rand(batch, dim, generator=gen, dtype=th.float64) + 0.2)
    )
    old = Gaussian(th.randn(batch, dim, generator=gen, dtype=th.float64), make_scale())
    mean, scale = th.randn(batch, dim, generator=gen, dtype=th.float64), make_scale()
    kl_mean, kl_cov = decoupled_kl(old, mean, scale)
    expected_mean = kl_divergence(_as_torch(old), _as_torch(old.with_mean(mean))).mean()
    expected_cov = kl_divergence(_as_torch(old), _as_torch(old.with_scale(scale))).mean()
    th.testing.assert_close(kl_mean, expected_mean)
    th.testing.assert_close(kl_cov, expected_cov)
    # Precision factors handed in by the caller (the M-step caches pi_old's) give the same KLs.
    given = decoupled_kl(old, mean, scale, old.precision_factor(), Gaussian(mean, scale).precision_factor())
    th.testing.assert_close(given, (kl_mean, kl_cov), rtol=1e-12, atol=1e-12)
    # A pure mean change has no covariance KL and vice versa.
    assert decoupled_kl(old, mean, old.scale)[1].abs() < 1e-12
    assert decoupled_kl(old, old.mean, scale)[0].abs() < 1e-12


def test_samples_have_the_requested_moments():
    gen_scale = _random_cholesky(1, 2, th.Generator().manual_seed(2))
    dist = Gaussian(th.tensor([[0.5, -1.0]], dtype=th.float64), gen_scale)
    th.manual_seed(0)
    samples = dist.sample(200_000)[:, 0]
    th.testing.assert_close(samples.mean(0), dist.mean[0], atol=0.02, rtol=0)
    th.testing.assert_close(th.cov(samples.T), gen_scale[0] @ gen_scale[0].T, atol=0.03, rtol=0)


def test_non_finite_kl_names_the_term():
    old = Gaussian(th.zeros(2, 1, dtype=th.float64), th.ones(2, 1, dtype=th.float64))
    with pytest.raises(FloatingPointError, match="KL_mu"):
        decoupled_kl(old, th.full((2, 1), float("inf")), th.ones(2, 1))


@pytest.mark.parametrize("full", [False, True])
def test_expected_log_prob_from_moments_equals_the_weighted_sample_sum(full):
    gen = th.Generator().manual_seed(3)
    batch, dim, k = 5, 3, 8
    scale = _random_cholesky(batch, dim, gen) if full else th.rand(batch, dim, generator=gen, dtype=th.float64) + 0.2
    dist = Gaussian(th.randn(batch, dim, generator=gen, dtype=th.float64), scale)
    samples = th.randn(k, batch, dim, generator=gen, dtype=th.float64) * 2.0
    weights = th.softmax(th.randn(k, batch, generator=gen, dtype=th.float64), dim=0)
    expected = (weights * dist.log_prob(samples)).sum(0)
    moments = WeightedMoments.of(samples, weights, full=full)
    th.testing.assert_close(expected_log_prob(dist, moments), expected, rtol=1e-10, atol=1e-10)
    precision = dist.precision_factor()
    th.testing.assert_close(expected_log_prob(dist, moments, precision), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("full", [False, True])
def test_precision_factor_inverts_the_scale(full):
    gen = th.Generator().manual_seed(4)
    scale = _random_cholesky(4, 3, gen) if full else th.rand(4, 3, generator=gen, dtype=th.float64) + 0.2
    dist = Gaussian(th.zeros(4, 3, dtype=th.float64), scale)
    product = dist.precision_factor() @ scale if full else dist.precision_factor() * scale
    expected = th.eye(3, dtype=th.float64).expand(4, 3, 3) if full else th.ones(4, 3, dtype=th.float64)
    th.testing.assert_close(product, expected)
