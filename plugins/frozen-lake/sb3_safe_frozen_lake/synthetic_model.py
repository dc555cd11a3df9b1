"""The random instance of the synthetic star-convex linear MDP and the projection onto D(s).

Drawn from ``numpy.random.default_rng(seed)`` in this order:

1. theta_h* ~ N(0, I_d) for every h, then gamma_h* ~ N(0, I_d) for every h;
2. mu_h* rows e_j^T mu_h* ~ Dirichlet(1_{n_S}) (so phi @ mu_h* is a distribution for every phi in the simplex);
3. phi_0(s) ~ Dirichlet(1_d), resampled (up to ``PHI0_ATTEMPTS`` draws) until max_h <phi_0(s), gamma_h*> < tau;
   failing that, the vertex e_j minimising max_h gamma_h*[j]; if even that vertex costs >= tau, gamma* is
   redrawn and step 3 restarts (at most ``GAMMA_ATTEMPTS`` times);
4. the segment endpoints x_i(s) ~ Dirichlet(1_d), i = 1..N.

D(s) = union_i [phi_0(s), x_i(s)] lies in the simplex and is star-convex around phi_0(s) (Definition 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sb3_safe_frozen_lake.protocol import FloatArray, read_only

PHI0_ATTEMPTS = 1000
GAMMA_ATTEMPTS = 1000


@dataclass(frozen=True)
class SyntheticInstance:
    """One draw of the synthetic linear MDP (all arrays read-only).

    Attributes:
        theta_star: (H, d).
        gamma_star: (H, d).
        mu_star: (H, d, n_S); every row mu_star[h, j] is a distribution over next states.
        phi0: (n_S, d), the safe feature phi_0(s) = phi(s, a_0(s)).
        endpoints: (n_S, N, d), the segment endpoints x_i(s).
        vertex_fallbacks: How many states got the vertex phi_0(s) = e_j because rejection sampling failed.
        gamma_redraws: How many times gamma* had to be redrawn (normally 0).
    """

    theta_star: FloatArray
    gamma_star: FloatArray
    mu_star: FloatArray
    phi0: FloatArray
    endpoints: FloatArray
    vertex_fallbacks: int
    gamma_redraws: int


def _draw_phi0(rng: np.random.Generator, gamma: FloatArray, n_states: int, tau: float) -> tuple[FloatArray, int] | None:
    """phi_0(s) with max_h <phi_0(s), gamma_h> < tau for every s and the number of vertex fallbacks, or None if
    gamma must be redrawn."""
    d = gamma.shape[1]
    phi0 = np.empty((n_states, d))
    vertex = int(np.argmin(gamma.max(axis=0)))
    fallbacks = 0
    for s in range(n_states):
        candidates = rng.dirichlet(np.ones(d), size=PHI0_ATTEMPTS)
        feasible = np.flatnonzero((candidates @ gamma.T).max(axis=1) < tau)
        if feasible.size:
            phi0[s] = candidates[feasible[0]]
        elif gamma[:, vertex].max() < tau:
            phi0[s] = np.eye(d)[vertex]
            fallbacks += 1
        else:
            return None
    return phi0, fallbacks


def draw_instance(d: int, n_states: int, n_segments: int, horizon: int, tau: float, seed: int) -> SyntheticInstance:
    """Draw the instance from ``seed`` (see the module docstring for the order of the draws).

    Raises:
        ValueError: If no gamma* admitting a safe phi_0 is found (only for a tau far below the typical costs).
    """
    rng = np.random.default_rng(seed)
    theta = rng.standard_normal((horizon, d))
    gamma = rng.standard_normal((horizon, d))
    mu = rng.dirichlet(np.ones(n_states), size=(horizon, d))
    redraws = 0
    while (drawn := _draw_phi0(rng, gamma, n_states, tau)) is None:
        redraws += 1
        if redraws > GAMMA_ATTEMPTS:
            raise ValueError(
                f"tau={tau!r} is too small: after {GAMMA_ATTEMPTS} redraws of gamma* no safe phi_0(s) with "
                "max_h <phi_0(s), gamma_h*> < tau was found. Use a larger tau."
            )
        gamma = rng.standard_normal((horizon, d))
    phi0, fallbacks = drawn
    endpoints = rng.dirichlet(np.ones(d), size=(n_states, n_segments))
    return SyntheticInstance(
        theta_star=read_only(theta),
        gamma_star=read_only(gamma),
        mu_star=read_only(mu),
        phi0=read_only(phi0),
        endpoints=read_only(endpoints),
        vertex_fallbacks=fallbacks,
        gamma_redraws=redraws,
    )


def project_onto_segments(x: FloatArray, phi0: FloatArray, endpoints: FloatArray) -> tuple[FloatArray, float]:
    """The nearest point of D = union_i [phi0, x_i] to ``x``, and its Euclidean distance.

    On segment i the nearest point is phi0 + alpha_i (x_i - phi0) with
    alpha_i = clip(<x - phi0, x_i - phi0> / ||x_i - phi0||^2, 0, 1); the best segment wins.
    """
    directions = endpoints - phi0  # (N, d)
    lengths = np.einsum("nd,nd->n", directions, directions)
    offset = x - phi0
    alpha = np.clip(np.divide(directions @ offset, lengths, out=np.zeros_like(lengths), where=lengths > 0), 0.0, 1.0)
    points = phi0 + alpha[:, None] * directions
    distances = np.linalg.norm(points - x, axis=1)
    best = int(np.argmin(distances))
    return points[best], float(distances[best])
