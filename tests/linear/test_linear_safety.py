"""Pessimistic cost model, safety radius and kappa against direct formulas (see docs/linear_agents.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sb3_safe.linear.gram import RidgeStatistics
from sb3_safe.linear.safety import beta_safe, cost_model, kappa

D, S, C = 5, 6, 4


def _stats(seed: int = 0, n: int = 40) -> tuple[RidgeStatistics, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    stats = RidgeStatistics(1, D, S, ridge=0.7)
    phis, costs = rng.normal(size=(n, D)), rng.normal(size=n)
    for phi, z in zip(phis, costs, strict=True):
        stats.add(0, phi, 0.0, float(z), -1)
    return stats, phis, costs


def _instance(seed: int = 1):
    rng = np.random.default_rng(seed)
    candidates = rng.normal(size=(S, C, D))
    safe_index = rng.integers(C, size=S)
    safe_features = candidates[np.arange(S), safe_index]
    safe_costs = rng.uniform(0.0, 0.3, size=S)
    return candidates, safe_index, safe_features, safe_costs


def test_projection_model_is_the_equality_constrained_ridge_and_its_norm():
    stats, phis, costs = _stats()
    candidates, safe_index, safe_features, safe_costs = _instance()
    model = cost_model(stats, 0, candidates, safe_index, safe_features, safe_costs, full=True)
    gram = 0.7 * np.eye(D) + phis.T @ phis
    for s in range(S):
        u = safe_features[s] / np.linalg.norm(safe_features[s])
        c_us = safe_costs[s] / np.linalg.norm(safe_features[s])
        # min ||z - Phi gamma||^2 + lambda ||gamma||^2  s.t.  <u, gamma> = c: the KKT system
        kkt = np.block([[gram, u[:, None]], [u[None, :], np.zeros((1, 1))]])
        gamma_s = np.linalg.solve(kkt, np.append(phis.T @ costs, c_us))[:D]
        expected_linear = candidates[s] @ gamma_s
        expected_linear[safe_index[s]] = safe_costs[s]
        np.testing.assert_allclose(model.linear[s], expected_linear, rtol=1e-10, atol=1e-10)
        # x^T M_s y with M_s = M - (M u)(M u)^T / (u^T M u); the diagonal is min_c ||x + c u||_M^2
        inverse = np.linalg.inv(gram)
        m_s = inverse - np.outer(inverse @ u, inverse @ u) / (u @ inverse @ u)
        expected_quadratic = candidates[s] @ m_s @ candidates[s].T
        expected_quadratic[safe_index[s], :] = expected_quadratic[:, safe_index[s]] = 0.0
        np.testing.assert_allclose(model.quadratic[s], expected_quadratic, rtol=1e-9, atol=1e-10)
        x = candidates[s, (safe_index[s] + 1) % C]
        shifts = np.linspace(-20, 20, 40001)
        grid_min = min(((x + c * u) @ inverse @ (x + c * u)) for c in shifts)
        assert expected_quadratic[(safe_index[s] + 1) % C, (safe_index[s] + 1) % C] <= grid_min + 1e-9
        # P_s A P_s is singular on u, and M_s is its pseudo-inverse on the complement
        projector = np.eye(D) - np.outer(u, u)
        np.testing.assert_allclose(m_s @ u, 0.0, atol=1e-12)
        np.testing.assert_allclose(np.linalg.pinv(projector @ gram @ projector), m_s, rtol=1e-8, atol=1e-10)
    diagonal = cost_model(stats, 0, candidates, safe_index, safe_features, safe_costs).quadratic
    np.testing.assert_allclose(diagonal, np.diagonal(model.quadratic, axis1=1, axis2=2), atol=1e-12)


def test_the_safe_candidate_costs_exactly_tau_h_with_no_bonus():
    stats, _, _ = _stats(n=5)
    candidates, safe_index, safe_features, safe_costs = _instance()
    for safety_model in ("projection", "difference"):
        model = cost_model(stats, 0, candidates, safe_index, safe_features, safe_costs, safety_model)
        costs = model.candidate_costs(beta=100.0)
        np.testing.assert_array_equal(costs[np.arange(S), safe_index], safe_costs)


def test_difference_model():
    stats, phis, costs = _stats()
    candidates, safe_index, safe_features, safe_costs = _instance()
    model = cost_model(stats, 0, candidates, safe_index, safe_features, safe_costs, "difference", full=True)
    inverse = np.linalg.inv(0.7 * np.eye(D) + phis.T @ phis)
    gamma_hat = inverse @ phis.T @ costs
    offsets = candidates - safe_features[:, None]
    np.testing.assert_allclose(model.linear, safe_costs[:, None] + offsets @ gamma_hat, atol=1e-10)
    np.testing.assert_allclose(model.quadratic, offsets @ inverse @ offsets.transpose(0, 2, 1), atol=1e-10)
    with pytest.raises(ValueError, match="safety_model"):
        cost_model(stats, 0, candidates, safe_index, safe_features, safe_costs, "optimistic")


def test_beta_safe_forms():
    assert beta_safe(100, 5, 0.5, 1.0, 0.01, math.sqrt(5)) == pytest.approx(
        0.5 * math.sqrt(5 * math.log(101 / 0.01)) + math.sqrt(5)
    )
    assert beta_safe(100, 5, 0.5, 2.0, 0.01, 1.0, "ay11") == pytest.approx(
        0.5 * math.sqrt(2 * math.log(100) + 5 * math.log(1 + 100 / 10)) + math.sqrt(2.0)
    )
    with pytest.raises(ValueError, match="beta_safe_form"):
        beta_safe(1, 1, 1.0, 1.0, 0.1, 1.0, "loose")


def test_kappa_values_floor_and_the_infinite_case():
    safe_costs = np.array([[0.0, 0.05, 0.1]])
    np.testing.assert_allclose(kappa(safe_costs, 0.1, 1000, 2.0, 0.05), [[20001.0, 40001.0, 40001.0]])
    with pytest.raises(ValueError, match=r"state\(s\) \[2\] costs tau itself"):
        kappa(safe_costs, 0.1, 1000, 2.0, None)
    np.testing.assert_allclose(kappa(safe_costs[:, :2], 0.1, 3, 0.0, None), [[1.0, 1.0]])
