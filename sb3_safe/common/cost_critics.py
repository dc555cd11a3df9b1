"""Cost critics shared by the safe off-policy agents (CVPO, SAC-Lag, TD3-Lag): ensembles, targets, threshold.

A cost critic ``Q_c,j(s, a)`` estimates the discounted cost of constraint j; each constraint has an ensemble of
them, combined pessimistically (max, or mean; never the optimistic min). Their Bellman target is
``y_j = sum_k gamma^k c_j,t+k + gamma^n (1 - terminated) Qbar_c,j(s_t+n, a')`` (truncations bootstrap, SB3's
convention), and the per-episode limit d_j becomes the per-state threshold ``eps_j = d_j (1 - gamma^T) /
((1 - gamma) T)`` that ``E_s[Q_c,j(s, pi(s))]`` is held to (Liu et al. 2022, Eq. 2 with a uniform spread of the
episode's cost over its T steps).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.policies import ContinuousCritic
from stable_baselines3.common.type_aliases import PyTorchObs
from torch import nn

from sb3_safe.common.costs import cost_limit_to_q_threshold, episode_length_of

COST_CRITIC_REDUCTIONS = ("max", "mean")
"""How a cost ensemble may be combined."""


class CostCritics(nn.ModuleList):
    """One cost-critic ensemble per constraint, with the optimizer they share."""

    optimizer: th.optim.Optimizer

    def ensembles(self) -> list[ContinuousCritic]:
        """The ensembles, typed."""
        return list(self)  # type: ignore[arg-type]


def check_cost_reduce(reduce: str) -> None:
    """Refuse a cost-ensemble reduction other than ``"max"`` or ``"mean"``, explaining why not ``"min"``."""
    if reduce == "min":
        raise ValueError(
            "cost_critic_reduce='min' would take the most optimistic member of the cost ensemble, an unsafe "
            "underestimate of the cost: use 'max' (default) or 'mean'."
        )
    if reduce not in COST_CRITIC_REDUCTIONS:
        raise ValueError(f"cost_critic_reduce must be one of {COST_CRITIC_REDUCTIONS}, got {reduce!r}.")


def reduce_cost_ensemble(values: tuple[th.Tensor, ...], reduce: str) -> th.Tensor:
    """Combine a cost-critic ensemble's outputs ``(B, 1)`` each: ``"max"`` (pessimistic) or ``"mean"``."""
    stacked = th.cat(values, dim=-1)
    if reduce == "max":
        return stacked.max(dim=-1, keepdim=True).values
    if reduce == "mean":
        return stacked.mean(dim=-1, keepdim=True)
    raise ValueError(f"cost_critic_reduce must be one of {COST_CRITIC_REDUCTIONS}, got {reduce!r}.")


def cost_bellman_targets(costs: th.Tensor, bootstrap: th.Tensor | float, next_cost_q: th.Tensor) -> th.Tensor:
    """``y_j = c_j + bootstrap * Qbar_c,j(s', a')`` for every constraint: ``(m, B, 1)``.

    Args:
        costs: The (n-step summed) costs of the batch, ``(B, m)``.
        bootstrap: ``gamma^n (1 - terminated)``, ``(B, 1)`` or a float.
        next_cost_q: The target ensembles, reduced, at the next state and action, ``(m, B, 1)``.
    """
    return costs.T.unsqueeze(-1) + bootstrap * next_cost_q


def cost_regression_losses(critics: CostCritics, obs: PyTorchObs, actions: th.Tensor, targets: th.Tensor) -> th.Tensor:
    """Per constraint, the summed MSE of its ensemble's members to ``targets[j]``: ``(m,)``, differentiable."""
    mse = nn.functional.mse_loss
    return th.stack(
        [
            th.stack([mse(q, targets[j]) for q in critic(obs, actions)]).sum()
            for j, critic in enumerate(critics.ensembles())
        ]
    )


def cost_q_threshold(env: Any, cost_limit: Any, gamma: float, episode_length: int | None) -> tuple[int, np.ndarray]:
    """The horizon T (``episode_length``, else the env's) and ``eps = d (1 - gamma^T) / ((1 - gamma) T)``, ``(m,)``.

    Raises:
        ValueError: If T is neither given nor known from the env (the message says how to pass it).
    """
    horizon = episode_length_of(env, episode_length)
    threshold = cost_limit_to_q_threshold(cost_limit, gamma, horizon)
    return horizon, np.atleast_1d(np.asarray(threshold, dtype=np.float64))


__all__ = [
    "COST_CRITIC_REDUCTIONS",
    "CostCritics",
    "check_cost_reduce",
    "cost_bellman_targets",
    "cost_q_threshold",
    "cost_regression_losses",
    "reduce_cost_ensemble",
]
