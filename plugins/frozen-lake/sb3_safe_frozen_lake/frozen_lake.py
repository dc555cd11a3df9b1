"""``FrozenLake10x10Safe-v0``: Gymnasium's FrozenLake on CISR's 10x10 map as an exact safe linear MDP.

The model (transitions, phi, mu*, gamma*, theta*, a_0) is built by :mod:`sb3_safe_frozen_lake.frozen_lake_model`.
This module adds the episode: the Dict observation of the linear-MDP protocol, truncation after H steps, the goal
and hole handling, the observed cost, the rewards and the protocol methods (choices explained in the plugin README).
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
from gymnasium.envs.toy_text.frozen_lake import FrozenLakeEnv
from gymnasium.error import DependencyNotInstalled

from sb3_safe_frozen_lake._validation import check_bool, check_choice, check_int, check_real, check_slip
from sb3_safe_frozen_lake.frozen_lake_model import (
    COST_TIE_TOLERANCE,
    DEFAULT_SLIP,
    MAP_10X10_SAFE,
    N_ACTIONS,
    FrozenLakeModel,
    cached_model,
    cell_of,
)
from sb3_safe_frozen_lake.protocol import FloatArray, LinearMDPEnvMixin, read_only

REWARD_MODELS = ("linear", "tabular")
GOAL_MODES = ("absorbing", "terminal")
COST_NOISES = ("bernoulli", "gaussian")
BERNOULLI_COST_SIGMA = 0.5
"""A {0, 1} cost indicator minus its mean is 1/2-sub-Gaussian."""
TASK_GOAL_REWARD = 6.0
TASK_STEP_REWARD = 0.01
CISR_STEP_PENALTY = -0.01
"""The paper's task reward: 6 on first reaching the goal, 0.01 for every earlier step."""


class FrozenLakeSafeEnv(LinearMDPEnvMixin, FrozenLakeEnv):
    """The safe 10x10 Frozen Lake of Amani et al. (2021, Figure 2) with exact linear features.

    Dynamics: the intended move w.p. ``slip[0]`` and each orthogonal move w.p. ``slip[1]``, ``slip[2]``; walls keep
    the agent in place. With d = n_states = 100 and M* = [mu*(s')] ~ N(0, I_d) column-wise, phi(s,a) solves
    M*^T phi = P(.|s,a), so P(s'|s,a) = <phi(s,a), mu*(s')> exactly (to ~1e-14). The cost is
    c(s,a) = <phi, gamma*> = P(next cell is a hole | s,a) with gamma* = sum_{holes} mu*(s).

    Episodes: start at (0,0); entering a hole terminates (``terminated=True``, ``info["failed"]=True``); after
    ``horizon`` steps the env truncates by itself. With ``goal_mode="absorbing"`` (default) the goal is an
    absorbing state where every action earns the toward-goal reward, success is recorded at first entry and the
    rollout continues to H; with ``"terminal"`` entering the goal terminates.

    Observation ``{"state": s, "step": h}`` (h = index of the next decision). ``step`` returns the learning reward
    (``reward_model="linear"``: <phi(s,a), theta*>, exactly linear; ``"tabular"``: r_target(s,a)) and ``info`` with:

    - ``cost``: the observed cost z (``"bernoulli"``: 1{s' is a hole}; ``"gaussian"``: c(s,a) + N(0, cost_sigma^2));
    - ``true_cost``: c(s,a), the expected cost of the action taken (for counting violations, never for learning);
    - ``is_success``: the goal has been reached in this episode (sticky from the first entry on);
    - ``failed``: this step entered a hole;
    - ``task_reward``: the paper's task reward, 6 on the step that first enters the goal, 0.01 on every step before
      it (a step into a hole included) and 0 afterwards; its episode sum is the paper's task return;
    - ``cisr_reward``: CISR's scale, 6 on the step that first enters the goal, -0.01 on every step before the goal
      or a hole is reached, 0 on the step into a hole and afterwards; its episode sum is
      6 1{success} - 0.01 (steps before success or failure).

    Safety: with the default tau = 0.1 six states (``boundary_states``) have best cost exactly tau; a_0 is
    certified there at equality, and ``min_safety_gap`` (0.05, the smallest positive gap tau - tau(s)) is the
    floor agents should use in kappa_h(s). ``safe_cost`` and ``true_cost`` return the exact tabular hole
    probabilities, so a_0 costs exactly tau at those states (not tau plus rounding error).

    Args:
        render_mode: None, "ansi" (Gymnasium's text rendering), "rgb_array" or "human" (these need pygame).
        slip: (intended, orthogonal (a-1)%4, orthogonal (a+1)%4) move probabilities, >= 0, summing to 1.
        tau: The cost threshold, > 0. It must be at least the best cost of every non-terminal state (0.1 for the
            default slip), otherwise some state has no safe action and a ``ValueError`` is raised.
        mu_seed: Seed of mu*.
        reward_model: "linear" or "tabular".
        goal_mode: "absorbing" or "terminal".
        cost_noise: "bernoulli" or "gaussian".
        cost_sigma: Standard deviation of the Gaussian cost noise (used only with ``cost_noise="gaussian"``).
        normalize_features: Rescale phi and mu* jointly so that max ||phi|| = 1 (see ``feature_scale``).
        horizon: H, steps per episode.
    """

    def __init__(
        self,
        render_mode: str | None = None,
        slip: tuple[float, float, float] = DEFAULT_SLIP,
        tau: float = 0.1,
        mu_seed: int = 0,
        reward_model: str = "linear",
        goal_mode: str = "absorbing",
        cost_noise: str = "bernoulli",
        cost_sigma: float = 0.01,
        normalize_features: bool = False,
        horizon: int = 1000,
    ) -> None:
        self.slip = check_slip(slip)
        self.cost_threshold = check_real("tau", tau, positive=True)
        self.mu_seed = check_int("mu_seed", mu_seed, 0)
        self.reward_model = check_choice("reward_model", reward_model, REWARD_MODELS)
        self.goal_mode = check_choice("goal_mode", goal_mode, GOAL_MODES)
        self.cost_noise = check_choice("cost_noise", cost_noise, COST_NOISES)
        self.cost_sigma = check_real("cost_sigma", cost_sigma, nonnegative=True)
        self.normalize_features = check_bool("normalize_features", normalize_features)
        self.horizon = check_int("horizon", horizon, 1)
        _check_render_mode(render_mode, self.metadata["render_modes"])

        super().__init__(render_mode=render_mode, desc=list(MAP_10X10_SAFE), is_slippery=True)
        self.model: FrozenLakeModel = cached_model(MAP_10X10_SAFE, self.slip, self.mu_seed, self.normalize_features)
        model = self.model

        # Protocol constants (sb3_safe_frozen_lake.protocol).
        self.n_states = model.n_states
        self.n_actions = N_ACTIONS
        self.feature_dim = model.features.shape[-1]
        self.time_homogeneous = True
        self.mu_star = read_only(model.mu_star[None].copy())
        self.theta_star = read_only(model.theta_star[None].copy())
        self.gamma_star = read_only(model.gamma_star[None].copy())
        self.cost_noise_sigma = BERNOULLI_COST_SIGMA if self.cost_noise == "bernoulli" else self.cost_sigma
        self.feature_scale = model.feature_scale
        self.max_feature_norm = float(np.linalg.norm(model.features, axis=-1).max())
        self.reward_is_linear = self.reward_model == "linear"
        self.start_state = model.start
        self.goal_state = model.goal
        self.hole_states = model.holes

        self._safe_costs = read_only(model.safe_costs.copy())
        self._rewards = read_only(model.features @ model.theta_star if self.reward_is_linear else model.reward_target)
        self._terminal = np.zeros(self.n_states, dtype=bool)
        self._terminal[list(model.holes)] = True
        if self.goal_mode == "terminal":
            self._terminal[model.goal] = True
        self._check_safe_actions_exist()
        self.boundary_states, self.min_safety_gap = self._safety_margins()

        cumulative = np.cumsum(model.transitions, axis=2)
        self._cumulative = cumulative / cumulative[:, :, -1:]  # last entry exactly 1: a uniform u < 1 always lands
        self.P = self._gymnasium_transition_dict()
        self.reward_range = (float(self._rewards.min()), float(self._rewards.max()))  # type: ignore[assignment]
        self.observation_space = self._protocol_observation_space()  # type: ignore[assignment]

        self._h = 0
        self._reached_goal = False
        self._episode_over = True  # until the first reset

    # ----------------------------------------------------------------------------------------------- construction
    def _non_terminal_states(self) -> list[int]:
        """The 89 cells that are neither holes nor the goal (every action at G costs 0 anyway)."""
        return [s for s in range(self.n_states) if not self._terminal[s] and s != self.goal_state]

    def _check_safe_actions_exist(self) -> None:
        """Assumption 4 needs a_0(s) with tau(s) <= tau at every state where the agent acts."""
        safe_costs = self.model.safe_costs
        unsafe = [s for s in self._non_terminal_states() if safe_costs[s] > self.cost_threshold + COST_TIE_TOLERANCE]
        if unsafe:
            worst = max(float(safe_costs[s]) for s in unsafe)
            cells = ", ".join(str(cell_of(s)) for s in unsafe)
            raise ValueError(
                f"tau={self.cost_threshold!r} is below the best achievable cost at the cells {cells} (up to "
                f"{worst:.6g}): those states have no safe action, so Assumption 4 fails. Use tau >= {worst:.6g}."
            )

    def _safety_margins(self) -> tuple[tuple[int, ...], float | None]:
        """States whose best cost equals tau (to 1e-12) and the smallest positive gap tau - tau(s)."""
        gaps = {s: self.cost_threshold - float(self.model.safe_costs[s]) for s in self._non_terminal_states()}
        boundary = tuple(s for s, gap in gaps.items() if abs(gap) <= COST_TIE_TOLERANCE)
        positive = [gap for gap in gaps.values() if gap > COST_TIE_TOLERANCE]
        return boundary, (min(positive) if positive else None)

    def _gymnasium_transition_dict(self) -> dict[int, dict[int, list[tuple[float, int, float, bool]]]]:
        """Gymnasium's ``P[s][a] = [(prob, next_state, reward, terminated)]``, rebuilt from this model."""
        table: dict[int, dict[int, list[tuple[float, int, float, bool]]]] = {}
        for s in range(self.n_states):
            table[s] = {}
            for a in range(N_ACTIONS):
                row = self.model.transitions[s, a]
                table[s][a] = [
                    (float(row[t]), int(t), float(self._rewards[s, a]), bool(self._terminal[t]))
                    for t in np.flatnonzero(row)
                ]
        return table

    # --------------------------------------------------------------------------------------------------- episode
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.int64], dict[str, Any]]:
        """Start an episode at (0,0), step 0. ``seed`` seeds the transition and cost-noise randomness."""
        state, _ = super().reset(seed=seed, options=options)
        self._h = 0
        self._reached_goal = False
        self._episode_over = False
        return self._observation(state, 0), {}

    def step(self, action: Any) -> tuple[dict[str, np.int64], float, bool, bool, dict[str, Any]]:
        """Play ``action`` (LEFT 0, DOWN 1, RIGHT 2, UP 3); see the class docstring for the returned values."""
        if self._episode_over:
            raise RuntimeError("The episode is over (or never started): call reset() before step().")
        a = self._check_action(action)
        s = int(self.s)
        u = self.np_random.random()
        next_state = int(np.searchsorted(self._cumulative[s, a], u, side="right"))
        true_cost = float(self.model.cost[s, a])
        failed = next_state in self.hole_states
        if self.cost_noise == "bernoulli":
            observed_cost = float(failed)
        else:
            observed_cost = true_cost + self.cost_sigma * float(self.np_random.standard_normal())

        if next_state == self.goal_state and not self._reached_goal:
            task_reward = cisr_reward = TASK_GOAL_REWARD
            self._reached_goal = True
        else:
            task_reward = 0.0 if self._reached_goal else TASK_STEP_REWARD
            cisr_reward = 0.0 if self._reached_goal or failed else CISR_STEP_PENALTY

        self.s, self.lastaction = next_state, a
        self._h += 1
        terminated = bool(self._terminal[next_state])
        truncated = not terminated and self._h >= self.horizon
        self._episode_over = terminated or truncated
        info = {
            "cost": observed_cost,
            "true_cost": true_cost,
            "is_success": self._reached_goal,
            "failed": failed,
            "task_reward": task_reward,
            "cisr_reward": cisr_reward,
        }
        if self.render_mode == "human":
            self.render()
        return self._observation(next_state, self._h), float(self._rewards[s, a]), terminated, truncated, info

    def _check_action(self, action: Any) -> int:
        if isinstance(action, np.ndarray) and action.size == 1:
            action = action.reshape(()).item()
        if isinstance(action, bool) or not isinstance(action, int | np.integer) or not 0 <= action < N_ACTIONS:
            raise ValueError(f"action must be an int in 0..3 (LEFT, DOWN, RIGHT, UP), got {action!r}.")
        return int(action)

    # -------------------------------------------------------------------------------------------------- protocol
    def features(self, s: int) -> FloatArray:
        """phi(s, .), (n_actions, d), read-only."""
        return self.model.features[self._check_state(s)]

    def feature_table(self) -> FloatArray:
        """phi for all states and actions, (n_states, n_actions, d), read-only."""
        return self.model.features

    def safe_action(self, s: int) -> int:
        """a_0(s): the least-cost action, ties toward the goal."""
        return int(self.model.safe_actions[self._check_state(s)])

    def safe_cost(self, s: int, h: int) -> float:
        """tau_h(s) = <phi(s, a_0(s)), gamma*>, returned as the exact hole probability (the same for every h)."""
        self._check_step(h)
        return float(self._safe_costs[self._check_state(s)])

    def is_terminal(self, s: int) -> bool:
        """Holes; the goal too with ``goal_mode="terminal"``."""
        return bool(self._terminal[self._check_state(s)])

    def true_cost(self, s: int, action: Any, h: int) -> float:
        """Ground truth c(s,a) = P(hole | s,a) = <phi(s,a), gamma*> (to ~1e-14)."""
        self._check_step(h)
        return float(self.model.cost[self._check_state(s), self._check_action(action)])

    def true_reward(self, s: int, action: Any, h: int) -> float:
        """Ground truth r(s,a): the env's learning reward (linear or tabular)."""
        self._check_step(h)
        return float(self._rewards[self._check_state(s), self._check_action(action)])

    def transition_probabilities(self, s: int, action: Any, h: int) -> FloatArray:
        """Ground truth P(.|s,a), (n_states,), read-only."""
        self._check_step(h)
        return self.model.transitions[self._check_state(s), self._check_action(action)]

    def reward_table(self) -> FloatArray:
        """Ground truth r(s,a) for all pairs, (n_states, n_actions), read-only."""
        return self._rewards

    def cost_table(self) -> FloatArray:
        """Ground truth c(s,a) for all pairs, (n_states, n_actions), read-only."""
        return self.model.cost

    def transition_table(self) -> FloatArray:
        """Ground truth P(s'|s,a), (n_states, n_actions, n_states), read-only."""
        return self.model.transitions


def _check_render_mode(render_mode: str | None, render_modes: list[str]) -> None:
    """Reject unknown render modes, and the pygame ones when pygame is missing (with the install command)."""
    if render_mode is not None and render_mode not in render_modes:
        raise ValueError(f"render_mode={render_mode!r} is not supported; valid values: None, {render_modes}.")
    if render_mode in ("rgb_array", "human") and importlib.util.find_spec("pygame") is None:
        raise DependencyNotInstalled(
            f"render_mode={render_mode!r} needs pygame, which is not installed: run `pip install pygame`. "
            "render_mode='ansi' works without it."
        )
