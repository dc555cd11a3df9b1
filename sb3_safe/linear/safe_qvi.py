"""What SLUCB-QVI and RSLUCB-QVI share: the safety radius, kappa and the bonus scales (see docs/linear_agents.md)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from stable_baselines3.common.type_aliases import GymEnv

from sb3_safe.linear.adapter import LinearQVIAlgorithm, LinearQVIPolicy
from sb3_safe.linear.safety import BETA_MODES, BETA_SAFE_FORMS, SAFETY_MODELS, CostModel, beta_safe, cost_model, kappa


class SafeLinearQVI(LinearQVIAlgorithm):
    """Base of the safe agents: certified safe sets from the pessimistic cost, and Q bonuses scaled by kappa.

    Args:
        env: The environment (id or instance) exposing the linear-MDP protocol.
        sigma: Sub-Gaussian scale of the observed cost (default: the environment's ``cost_noise_sigma``).
        beta_mode: ``"single"`` (the paper: beta = max(beta_Q, beta_safe) everywhere) or ``"split"`` (safe sets use
            beta_safe; the Q bonus is beta_Q + (kappa - 1) beta_safe).
        beta_safe_form: ``"default"`` or ``"ay11"`` (see :func:`sb3_safe.linear.safety.beta_safe`).
        safety_radius_scale: Multiplies beta_safe.
        safety_norm_bound: S, the bound on ||gamma*|| in beta_safe (default sqrt(d)).
        kappa_coef: kappa_h(s) = kappa_coef H / (tau - tau_h(s)) + 1 (Lemma 2: 2).
        min_safety_gap: Floor on tau - tau_h(s) in kappa (default: the environment's hint, else none).
        safety_model: ``"projection"`` (the paper's) or ``"difference"``.
        **kwargs: :class:`~sb3_safe.linear.adapter.LinearQVIAlgorithm` arguments (ridge, delta, c_beta, ...).
    """

    def __init__(
        self,
        env: GymEnv | str | None,
        sigma: float | None = None,
        beta_mode: str = "single",
        beta_safe_form: str = "default",
        safety_radius_scale: float = 1.0,
        safety_norm_bound: float | None = None,
        kappa_coef: float = 2.0,
        min_safety_gap: float | None = None,
        safety_model: str = "projection",
        policy: str | type[LinearQVIPolicy] = LinearQVIPolicy,
        _init_setup_model: bool = True,
        **kwargs: Any,
    ) -> None:
        for name, value, choices in (
            ("beta_mode", beta_mode, BETA_MODES),
            ("beta_safe_form", beta_safe_form, BETA_SAFE_FORMS),
            ("safety_model", safety_model, SAFETY_MODELS),
        ):
            if value not in choices:
                raise ValueError(f"{name} must be one of {choices}, got {value!r}.")
        if kappa_coef < 0 or safety_radius_scale < 0:
            raise ValueError("kappa_coef and safety_radius_scale must be >= 0.")
        if min_safety_gap is not None and min_safety_gap <= 0:
            raise ValueError(f"min_safety_gap must be > 0 (or None), got {min_safety_gap}.")
        self.beta_mode = beta_mode
        self.beta_safe_form = beta_safe_form
        self.safety_radius_scale = float(safety_radius_scale)
        self.kappa_coef = float(kappa_coef)
        self.safety_model = safety_model
        self._sigma, self._safety_norm_bound, self._min_safety_gap = sigma, safety_norm_bound, min_safety_gap
        super().__init__(env, policy=policy, _init_setup_model=_init_setup_model, **kwargs)

    def _setup_model(self) -> None:
        spec = self.spec
        self.sigma = self._sigma if self._sigma is not None else spec.cost_noise_sigma
        if self.sigma is None:
            raise ValueError(
                f"{type(self).__name__} needs the sub-Gaussian scale of the observed cost: pass sigma=..., or use an "
                "environment that states cost_noise_sigma."
            )
        self.safety_norm_bound = (
            math.sqrt(spec.feature_dim) if self._safety_norm_bound is None else float(self._safety_norm_bound)
        )
        self.min_safety_gap = self._min_safety_gap if self._min_safety_gap is not None else spec.min_safety_gap
        decision_costs = np.where(spec.terminal, 0.0, spec.safe_costs)  # no decision is made at terminal states
        self.kappa = kappa(decision_costs, spec.cost_threshold, spec.horizon, self.kappa_coef, self.min_safety_gap)
        self.beta_safe_values = np.zeros(spec.horizon)
        super()._setup_model()

    def _layers(self) -> list[tuple[int, int]]:
        """(step h, statistics group) per distinct safe set: one when pooled and the safe costs do not vary with h."""
        spec = self.spec
        if self.share_across_h and np.all(spec.safe_costs == spec.safe_costs[0]):
            return [(0, 0)]
        return [(h, self.group_of(h)) for h in range(spec.horizon)]

    def _cost_model(self, step: int, group: int, full: bool = False) -> CostModel:
        """The pessimistic cost model of every candidate at ``step`` with the statistics of ``group``."""
        spec = self.spec
        return cost_model(
            self.stats,
            group,
            spec.candidates,
            spec.safe_index,
            spec.safe_features,
            spec.safe_costs[step],
            self.safety_model,
            full=full,
        )

    def _beta_values(self) -> tuple[np.ndarray, np.ndarray]:
        """The radius used in the safe sets and the Q-bonus scale, per step: ``(H,)`` and ``(H, n_states)``."""
        spec = self.spec
        counts = self.stats.n
        radius = np.array(
            [
                self.safety_radius_scale
                * beta_safe(
                    int(counts[self.group_of(h)]),
                    spec.feature_dim,
                    float(self.sigma),  # type: ignore[arg-type]
                    self.ridge,
                    self.delta,
                    self.safety_norm_bound,
                    self.beta_safe_form,
                )
                for h in range(spec.horizon)
            ]
        )
        self.beta_safe_values = radius
        if self.beta_mode == "single":
            beta = np.maximum(self.beta_q, radius)
            return beta, self.kappa * beta[:, None]
        return radius, self.beta_q + (self.kappa - 1.0) * radius[:, None]

    def _safety_logs(self, set_radius: np.ndarray) -> dict[str, float]:
        return {
            "beta_q": self.beta_q,
            "beta_safe": float(self.beta_safe_values.max()),
            "beta_sets": float(set_radius.max()),
            "kappa_max": float(self.kappa[:, ~self.spec.terminal].max()),
        }
