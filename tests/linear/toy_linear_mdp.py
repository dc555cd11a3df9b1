"""A tiny tabular MDP written as a linear MDP (one-hot features), exposing the linear-MDP protocol for tests."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class ToyLinearMDP(gym.Env):
    """n_states x n_actions one-hot features (d = n_states * n_actions): every tabular MDP is exactly linear.

    Random transitions, rewards in [0, 1], costs in [0, 1] with a known cheapest action per state; action 0 of every
    state is the most rewarding and costs more than tau, so an unconstrained agent violates the constraint.
    Observed cost: the expected cost plus Gaussian noise of scale ``noise``.
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012

    def __init__(
        self,
        n_states: int = 4,
        n_actions: int = 3,
        horizon: int = 5,
        tau: float = 0.5,
        seed: int = 0,
        noise: float = 0.05,
        terminal_state: bool = False,
    ) -> None:
        rng = np.random.default_rng(seed)
        self.n_states, self.n_actions, self.horizon = n_states, n_actions, horizon
        self.feature_dim = n_states * n_actions
        self.cost_threshold = tau
        self.time_homogeneous = True
        self.noise = noise
        self.transitions = rng.dirichlet(np.ones(n_states), size=(n_states, n_actions))  # (S, A, S')
        self.rewards = rng.uniform(0.0, 0.5, size=(n_states, n_actions))
        self.rewards[:, 0] = 1.0
        self.costs = rng.uniform(0.0, 0.3, size=(n_states, n_actions))
        self.costs[:, 0] = 0.9
        self.terminal = np.zeros(n_states, dtype=bool)
        if terminal_state:
            self.terminal[-1] = True
            self.transitions[-1] = np.eye(n_states)[-1]
        self.mu_star = self.transitions.reshape(self.feature_dim, n_states)[None]  # (1, d, S)
        self.theta_star = self.rewards.reshape(1, -1)
        self.gamma_star = self.costs.reshape(1, -1)
        self.observation_space = spaces.Dict({"state": spaces.Discrete(n_states), "step": spaces.Discrete(horizon + 1)})
        self.action_space = spaces.Discrete(n_actions)
        self._state, self._step = 0, 0

    # linear-MDP protocol
    def feature_table(self) -> np.ndarray:
        return np.eye(self.feature_dim).reshape(self.n_states, self.n_actions, self.feature_dim)

    def features(self, state: int) -> np.ndarray:
        return self.feature_table()[state]

    def safe_action(self, state: int) -> int:
        return int(self.costs[state].argmin())

    def safe_cost(self, state: int, step: int) -> float:
        return float(self.costs[state].min())

    def is_terminal(self, state: int) -> bool:
        return bool(self.terminal[state])

    def _obs(self) -> dict[str, int]:
        return {"state": self._state, "step": self._step}

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict[str, int], dict]:
        super().reset(seed=seed)
        self._state, self._step = 0, 0
        return self._obs(), {}

    def step(self, action: Any) -> tuple[dict[str, int], float, bool, bool, dict]:
        action = int(action)
        state = self._state
        true_cost = float(self.costs[state, action])
        info = {
            "cost": true_cost + self.noise * float(self.np_random.normal()),
            "true_cost": true_cost,
            "is_success": False,
            "failed": False,
        }
        self._state = int(self.np_random.choice(self.n_states, p=self.transitions[state, action]))
        self._step += 1
        terminated = bool(self.terminal[self._state])
        truncated = self._step >= self.horizon and not terminated
        return self._obs(), float(self.rewards[state, action]), terminated, truncated, info
