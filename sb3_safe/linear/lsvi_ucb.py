"""LSVI-UCB (Jin et al. 2020, Algorithm 1) and the two baselines of Amani et al. 2021 built on it.

``Q_h(s,a) = <w_h, phi(s,a)> + beta_Q ||phi(s,a)||_{Lambda_h^{-1}}``, ``V_h = min{max_a Q_h, H}``, with
``beta_Q = c_beta d H sqrt(log(2 d T / delta))`` (docs/linear_agents.md, 'LSVI-UCB and its modes'). Three modes:

- ``safety="none"``: maximise over every action (every point of the star-convex set);
- ``safety="known"``: the oracle that knows gamma*: only actions with true cost <= tau, and on star-convex sets the
  exactly certified part of each segment, alpha*_i = min(1, (tau - tau_h) / (c_i - tau_h)); it never violates;
- ``safety="penalized"`` (``cost_penalty=lambda'``): regress on r - lambda' z and maximise over everything; it can
  violate the constraint.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from stable_baselines3.common.type_aliases import GymEnv

from sb3_safe.linear.adapter import LinearQVIAlgorithm, LinearQVIPolicy
from sb3_safe.linear.planning import backward_pass

SAFETY_MODES = ("none", "known", "penalized")


def certified_segment_points(
    safe_features: np.ndarray, ends: np.ndarray, safe_costs: np.ndarray, end_costs: np.ndarray, tau: float
) -> np.ndarray:
    """Shrink every segment [phi_0, x_i] to its certified part: the point phi_0 + alpha_i (x_i - phi_0).

    The cost along a segment is affine in alpha, tau_h + alpha (c_i - tau_h), so the largest certified alpha is
    ``1`` if c_i <= tau and ``(tau - tau_h) / (c_i - tau_h)`` otherwise (docs/linear_agents.md, 'SLUCB-QVI:
    certified actions and segments').

    Args:
        safe_features: phi_0(s) ``(n_states, d)``.
        ends: Segment end points ``(n_states, N, d)``.
        safe_costs: tau_h(s) ``(n_states,)``.
        end_costs: The (true or pessimistic) cost of every end point ``(n_states, N)``.
        tau: The threshold.

    Returns:
        The certified end points ``(n_states, N, d)``.
    """
    excess = end_costs - safe_costs[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = np.where(end_costs <= tau, 1.0, (tau - safe_costs[:, None]) / excess)
    alpha = np.clip(alpha, 0.0, 1.0)
    return safe_features[:, None, :] + alpha[..., None] * (ends - safe_features[:, None, :])


class LSVIUCB(LinearQVIAlgorithm):
    """LSVI-UCB with SB3's interface, unconstrained, with the oracle safe set, or penalising the cost.

    Args:
        env: The environment (id or instance) exposing the linear-MDP protocol.
        safety: ``"none"``, ``"known"`` (oracle: knows gamma*) or ``"penalized"``; giving ``cost_penalty``
            selects ``"penalized"``.
        cost_penalty: lambda' of the penalised baseline (the paper uses 0.8-0.95).
        **kwargs: :class:`~sb3_safe.linear.adapter.LinearQVIAlgorithm` arguments (ridge, delta, c_beta, ...).
    """

    def __init__(
        self,
        env: GymEnv | str | None,
        safety: str | None = None,
        cost_penalty: float | None = None,
        policy: str | type[LinearQVIPolicy] = LinearQVIPolicy,
        _init_setup_model: bool = True,
        **kwargs: Any,
    ) -> None:
        if safety is None:
            safety = "none" if cost_penalty is None else "penalized"
        if safety not in SAFETY_MODES:
            raise ValueError(f"safety must be one of {SAFETY_MODES}, got {safety!r}.")
        if safety == "penalized" and (cost_penalty is None or cost_penalty < 0):
            raise ValueError(f"safety='penalized' needs cost_penalty >= 0 (e.g. 0.8), got {cost_penalty}.")
        if safety != "penalized" and cost_penalty is not None:
            raise ValueError(f"cost_penalty={cost_penalty} only applies to safety='penalized', not {safety!r}.")
        self.safety = safety
        self.cost_penalty = float(cost_penalty or 0.0)
        super().__init__(env, policy=policy, _init_setup_model=_init_setup_model, **kwargs)

    def _setup_model(self) -> None:
        super()._setup_model()
        self._candidates, self._allowed = self._candidate_sets()

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_candidates", "_allowed"]

    def _candidate_sets(self) -> tuple[np.ndarray, np.ndarray | None]:
        """Candidate features ``(1 or H, n_states, C, d)`` and the allowed mask (oracle mode on finite sets)."""
        spec = self.spec
        if self.safety != "known":
            return spec.candidates[None], None
        if spec.gamma_star is None:
            raise ValueError(
                "LSVIUCB(safety='known') is the oracle baseline: it needs the true cost parameters, but the "
                "environment exposes no gamma_star. Use safety='none' or 'penalized', or the safe agents."
            )
        costs = np.einsum("scd,hd->hsc", spec.candidates, spec.gamma_star)  # (1 or H, n_states, C)
        if spec.kind == "finite":
            allowed = costs <= spec.cost_threshold + 1e-12
            allowed[:, np.arange(spec.n_states), spec.safe_index] = True
            return spec.candidates[None], allowed
        layers = []
        for layer in range(len(costs)):
            safe_costs = spec.safe_costs[min(layer, spec.horizon - 1)]
            ends = certified_segment_points(
                spec.safe_features, spec.candidates[:, 1:], safe_costs, costs[layer][:, 1:], spec.cost_threshold
            )
            layers.append(np.concatenate([spec.safe_features[:, None], ends], axis=1))
        return np.stack(layers), None

    def _plan(self) -> dict[str, float]:
        spec = self.spec
        plan = backward_pass(
            self.stats,
            self.group_of,
            self._candidates,
            spec.safe_index,
            spec.terminal,
            np.full((spec.horizon, spec.n_states), self.beta_q),
            self._clip_levels(),
            allowed=self._allowed,
            cost_penalty=self.cost_penalty,
        )
        self._store_plan(self._candidates, plan.choice)
        return {"beta_q": self.beta_q, "kappa_max": 1.0, "value_start_max": float(plan.values[0].max())}
