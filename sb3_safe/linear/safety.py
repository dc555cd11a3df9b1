"""Pessimistic cost estimates, safety radii and kappa for the safe linear-MDP agents.

See docs/linear_agents.md, 'The safety model' and 'kappa and the gap floor'.

With the safe feature phi_0(s), u_s = phi_0(s) / ||phi_0(s)|| and the known cost c_{h,s} = tau_h(s) / ||phi_0(s)|| of
the direction u_s, the projection model (the paper's, default) estimates gamma by ridge regression constrained to
<u_s, gamma> = c_{h,s}:

    gamma_{h,s} = gammahat - ((u_s^T gammahat - c_{h,s}) / (u_s^T M u_s)) M u_s,      gammahat = M b_z
    M_s         = M - (M u_s)(M u_s)^T / (u_s^T M u_s)

and the pessimistic cost of a mixture theta over the candidate features Phi_s (the rows of ``candidates[s]``) is

    chat(theta) = g^T theta + beta sqrt(theta^T G theta),    g = Phi_s gamma_{h,s},   G = Phi_s M_s Phi_s^T.

The safe candidate has cost tau_h(s) and zero bonus exactly (M_s u_s = 0); it is given those values analytically.
The ``"difference"`` model (an option, more conservative) uses g = tau_h(s) + (Phi_s - phi_0) gammahat and
G = (Phi_s - phi_0) M (Phi_s - phi_0)^T instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sb3_safe.linear.gram import RidgeStatistics

SAFETY_MODELS = ("projection", "difference")
BETA_SAFE_FORMS = ("default", "ay11")
BETA_MODES = ("single", "split")
BOUNDARY_GAP = 1e-9


def beta_safe(
    n_samples: int,
    feature_dim: int,
    sigma: float,
    ridge: float,
    delta: float,
    norm_bound: float,
    form: str = "default",
) -> float:
    """Radius of the cost confidence ellipsoid after ``n_samples`` samples (docs/linear_agents.md, 'The safety model').

    ``"default"``: sigma sqrt(d log((1 + n / lambda) / delta)) + sqrt(lambda) S;
    ``"ay11"`` (Abbasi-Yadkori et al. 2011): sigma sqrt(2 log(1 / delta) + d log(1 + n / (lambda d))) + sqrt(lambda) S.
    """
    if form == "default":
        radius = sigma * math.sqrt(feature_dim * math.log((1.0 + n_samples / ridge) / delta))
    elif form == "ay11":
        radius = sigma * math.sqrt(
            2.0 * math.log(1.0 / delta) + feature_dim * math.log(1.0 + n_samples / (ridge * feature_dim))
        )
    else:
        raise ValueError(f"beta_safe_form must be one of {BETA_SAFE_FORMS}, got {form!r}.")
    return radius + math.sqrt(ridge) * norm_bound


def kappa(
    safe_costs: np.ndarray, tau: float, horizon: int, kappa_coef: float, min_safety_gap: float | None
) -> np.ndarray:
    """``kappa_h(s) = kappa_coef H / max(tau - tau_h(s), min_safety_gap) + 1`` (Amani et al. 2021, Lemma 2; floored).

    See docs/linear_agents.md, 'kappa and the gap floor'.

    Raises:
        ValueError: If some tau - tau_h(s) is (numerically) 0 and no ``min_safety_gap`` floors it: kappa would be
            infinite there.
    """
    gaps = tau - np.asarray(safe_costs, dtype=np.float64)
    if min_safety_gap is None:
        if (gaps < BOUNDARY_GAP).any():
            _steps, states = np.nonzero(gaps < BOUNDARY_GAP)
            raise ValueError(
                f"The safe action of state(s) {sorted(set(states.tolist()))} costs tau itself, so "
                f"kappa_h(s) = {kappa_coef} H / (tau - tau_h(s)) + 1 is infinite there. Pass min_safety_gap (the "
                "smallest positive gap is a natural choice, e.g. 0.05 on Frozen Lake) or raise tau."
            )
    else:
        gaps = np.maximum(gaps, min_safety_gap)
    return kappa_coef * horizon / gaps + 1.0


@dataclass
class CostModel:
    """Pessimistic cost of mixtures over each state's candidates: ``g^T theta + beta sqrt(theta^T G theta)``.

    Attributes:
        linear: g, ``(n_states, C)``.
        quadratic: G, ``(n_states, C, C)``, or only its diagonal ``(n_states, C)`` when built with ``full=False``.
    """

    linear: np.ndarray
    quadratic: np.ndarray

    def candidate_costs(self, beta: float) -> np.ndarray:
        """Pessimistic cost of every single candidate, ``g_c + beta sqrt(G_cc)``, ``(n_states, C)``."""
        diagonal = self.quadratic if self.quadratic.ndim == 2 else np.diagonal(self.quadratic, axis1=1, axis2=2)
        return self.linear + beta * np.sqrt(np.maximum(diagonal, 0.0))


def cost_model(
    stats: RidgeStatistics,
    group: int,
    candidates: np.ndarray,
    safe_index: np.ndarray,
    safe_features: np.ndarray,
    safe_costs: np.ndarray,
    safety_model: str = "projection",
    full: bool = False,
) -> CostModel:
    """The pessimistic cost model of one statistics group and step (see the module docstring).

    Args:
        stats: Ridge statistics with the observed-cost sums.
        group: The group to use.
        candidates: Candidate features ``(n_states, C, d)``.
        safe_index: The safe candidate per state ``(n_states,)``.
        safe_features: phi_0(s) ``(n_states, d)``.
        safe_costs: tau_h(s) at this step ``(n_states,)``.
        safety_model: ``"projection"`` (the paper's) or ``"difference"``.
        full: Build the whole G (randomised policies) or only its diagonal (single candidates).
    """
    M = stats.M[group]
    gamma_hat = stats.cost_estimate(group)
    states = np.arange(len(safe_index))
    if safety_model == "projection":
        norms = np.linalg.norm(safe_features, axis=1)
        direction = safe_features / norms[:, None]  # u_s
        m_u = direction @ M  # (M u_s)^T, M symmetric
        u_m_u = np.einsum("sd,sd->s", m_u, direction)
        excess = (direction @ gamma_hat - safe_costs / norms) / u_m_u
        gamma_s = gamma_hat[None, :] - excess[:, None] * m_u  # (n_states, d)
        linear = np.einsum("scd,sd->sc", candidates, gamma_s)
        projected = candidates @ M  # x^T M
        along = np.einsum("scd,sd->sc", candidates, m_u)  # x^T M u_s
        if full:
            quadratic = (
                projected @ candidates.transpose(0, 2, 1) - along[:, :, None] * along[:, None, :] / u_m_u[:, None, None]
            )
        else:
            quadratic = np.einsum("scd,scd->sc", projected, candidates) - along**2 / u_m_u[:, None]
    elif safety_model == "difference":
        offsets = candidates - safe_features[:, None, :]
        linear = safe_costs[:, None] + offsets @ gamma_hat
        projected = offsets @ M
        quadratic = projected @ offsets.transpose(0, 2, 1) if full else np.einsum("scd,scd->sc", projected, offsets)
    else:
        raise ValueError(f"safety_model must be one of {SAFETY_MODELS}, got {safety_model!r}.")
    # The safe candidate: cost tau_h(s) and no uncertainty, exactly (never the round-off value).
    linear[states, safe_index] = safe_costs
    if full:
        quadratic[states, safe_index, :] = 0.0
        quadratic[states, :, safe_index] = 0.0
    else:
        quadratic[states, safe_index] = 0.0
    return CostModel(linear=linear, quadratic=quadratic)
