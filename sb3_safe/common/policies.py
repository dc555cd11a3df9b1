"""Policies shared by the safe on-policy algorithms: SB3's actor-critic with a cost value head."""

from __future__ import annotations

from typing import Any

import torch as th
from stable_baselines3.common.policies import ActorCriticPolicy, MultiInputActorCriticPolicy
from stable_baselines3.common.type_aliases import PyTorchObs
from torch import nn


class _CostValueHead:
    """Adds ``cost_value_net`` (one output per constraint) on top of the value branch's latent features."""

    mlp_extractor: Any
    vf_features_extractor: Any
    extract_features: Any

    def __init__(self, *args: Any, n_costs: int = 1, **kwargs: Any) -> None:
        self.n_costs = n_costs
        super().__init__(*args, **kwargs)

    def _build_mlp_extractor(self) -> None:
        # SB3's _build creates the optimizer after this call, so the head's parameters are optimised too.
        super()._build_mlp_extractor()  # type: ignore[misc]
        self.cost_value_net = nn.Linear(self.mlp_extractor.latent_dim_vf, self.n_costs)

    def predict_cost_values(self, obs: PyTorchObs) -> th.Tensor:
        """Cost value estimates V_c(s), shape ``(batch, n_costs)``."""
        features = self.extract_features(obs, self.vf_features_extractor)
        return self.cost_value_net(self.mlp_extractor.forward_critic(features))

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {**super()._get_constructor_parameters(), "n_costs": self.n_costs}  # type: ignore[misc]


class SafeActorCriticPolicy(_CostValueHead, ActorCriticPolicy):
    """SB3's :class:`ActorCriticPolicy` with a cost value head ``V_c(s)`` per constraint.

    Args:
        *args: Arguments of SB3's ActorCriticPolicy.
        n_costs: Number of constraints (outputs of the cost value head).
        **kwargs: Keyword arguments of SB3's ActorCriticPolicy.
    """


class SafeMultiInputActorCriticPolicy(_CostValueHead, MultiInputActorCriticPolicy):
    """SB3's :class:`MultiInputActorCriticPolicy` (dict observations) with a cost value head per constraint."""
