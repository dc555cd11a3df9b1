"""``LinearMDPSynthetic-v0``: the synthetic safe linear MDP with finite star-convex action sets.

The action at state s is a feature point x of D(s) = union_i [phi_0(s), x_i(s)] (Definition 1 of Amani et al. 2021):

    r_h(s, x) = <x, theta_h*>,   c_h(s, x) = <x, gamma_h*>,   P_h(.|s, x) = x @ mu_h*,   z = c_h(s, x) + N(0, sigma^2)

The instance is drawn once from the constructor's ``seed`` (:mod:`sb3_safe_frozen_lake.synthetic_model`);
``reset(seed=...)`` only seeds the episode randomness (initial state, transitions, cost noise).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from sb3_safe_frozen_lake._validation import check_bool, check_int, check_real
from sb3_safe_frozen_lake.protocol import FloatArray, LinearMDPEnvMixin
from sb3_safe_frozen_lake.synthetic_model import SyntheticInstance, draw_instance, project_onto_segments

ON_SET_TOLERANCE = 1e-9
"""An action within this Euclidean distance of D(s) is on the set."""


class LinearMDPSyntheticEnv(LinearMDPEnvMixin, gym.Env[dict[str, Any], FloatArray]):
    """The synthetic linear MDP of Amani et al. (2021, Figure 1), constructed as described in the plugin README.

    States are uniform at reset; nothing is terminal; the env truncates after ``horizon`` steps. The action space
    is ``Box(0, 1, (d,), float64)`` (float64 because membership in D(s) is checked to 1e-9). An action must be a
    point phi_0(s) + alpha (x_i(s) - phi_0(s)), alpha in [0, 1], of a segment returned by :meth:`segments`:

    - by default an off-set action (distance to D(s) above 1e-9, e.g. the random actions of SB3's ``check_env``)
      is replaced by its nearest point of D(s), and ``info["action_projection"]`` reports the distance
      (0.0 for on-set actions, which are used exactly as given);
    - with ``strict_actions=True`` an off-set action raises a ``ValueError``.

    ``info``: ``cost`` (z), ``true_cost`` (c_h(s, x) of the point played), ``is_success`` and ``failed`` (always
    False: there is no goal and no failure state), ``action_projection``.

    Args:
        d: Feature dimension.
        n_states: Number of states.
        n_segments: N, segments per state.
        horizon: H.
        tau: Cost threshold, > 0.
        sigma: Standard deviation of the observed-cost noise, >= 0.
        seed: Seed of the instance (theta*, gamma*, mu*, phi_0, x_i); ``make_env(..., seed=3)`` gives instance 3.
        strict_actions: Raise on off-set actions instead of projecting them.
        render_mode: None or "ansi" (one line: step, state).
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}  # noqa: RUF012

    def __init__(
        self,
        d: int = 5,
        n_states: int = 20,
        n_segments: int = 100,
        horizon: int = 3,
        tau: float = 0.5,
        sigma: float = 0.01,
        seed: int = 0,
        strict_actions: bool = False,
        render_mode: str | None = None,
    ) -> None:
        self.feature_dim = check_int("d", d, 1)
        self.n_states = check_int("n_states", n_states, 1)
        self.n_segments = check_int("n_segments", n_segments, 1)
        self.horizon = check_int("horizon", horizon, 1)
        self.cost_threshold = check_real("tau", tau, positive=True)
        self.sigma = check_real("sigma", sigma, nonnegative=True)
        self.instance_seed = check_int("seed", seed, 0)
        self.strict_actions = check_bool("strict_actions", strict_actions)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode={render_mode!r} is not supported; valid values: None, 'ansi'.")
        self.render_mode = render_mode

        self.instance: SyntheticInstance = draw_instance(
            self.feature_dim, self.n_states, self.n_segments, self.horizon, self.cost_threshold, self.instance_seed
        )
        self.time_homogeneous = False
        self.mu_star = self.instance.mu_star
        self.theta_star = self.instance.theta_star
        self.gamma_star = self.instance.gamma_star
        self.cost_noise_sigma = self.sigma
        self.min_safety_gap: float | None = None  # tau_h(s) < tau strictly by construction: no floor needed

        self.observation_space = self._protocol_observation_space()
        self.action_space = spaces.Box(0.0, 1.0, shape=(self.feature_dim,), dtype=np.float64)
        self._state = 0
        self._h = 0
        self._episode_over = True  # until the first reset

    # --------------------------------------------------------------------------------------------------- episode
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.int64], dict[str, Any]]:
        """Draw the initial state uniformly; ``seed`` seeds the episode randomness, never the instance."""
        super().reset(seed=seed)
        self._state = int(self.np_random.integers(self.n_states))
        self._h = 0
        self._episode_over = False
        return self._observation(self._state, 0), {}

    def step(self, action: Any) -> tuple[dict[str, np.int64], float, bool, bool, dict[str, Any]]:
        """Play the feature point ``action`` (see the class docstring for off-set actions)."""
        if self._episode_over:
            raise RuntimeError("The episode is over (or never started): call reset() before step().")
        s, h = self._state, self._h
        x, distance = self.resolve_action(s, action)
        true_cost = float(x @ self.gamma_star[h])
        reward = float(x @ self.theta_star[h])
        observed_cost = true_cost + self.sigma * float(self.np_random.standard_normal())
        probabilities = np.clip(x @ self.mu_star[h], 0.0, None)  # clip rounding noise of points on a segment
        self._state = int(self.np_random.choice(self.n_states, p=probabilities / probabilities.sum()))
        self._h += 1
        truncated = self._h >= self.horizon
        self._episode_over = truncated
        info = {
            "cost": observed_cost,
            "true_cost": true_cost,
            "is_success": False,
            "failed": False,
            "action_projection": distance,
        }
        return self._observation(self._state, self._h), reward, False, truncated, info

    def resolve_action(self, s: int, action: Any) -> tuple[FloatArray, float]:
        """The feature point played for ``action`` at ``s`` and its distance to D(s) (0.0 if on the set).

        Raises:
            ValueError: If ``action`` is not a finite (d,) vector, or if it is off the set with
                ``strict_actions=True``.
        """
        state = self._check_state(s)
        x = self._as_point(action)
        nearest, distance = project_onto_segments(x, self.instance.phi0[state], self.instance.endpoints[state])
        if distance <= ON_SET_TOLERANCE:
            return x, 0.0
        if self.strict_actions:
            raise ValueError(
                f"action {x} is not in D(s) at state {state}: it is {distance:.3g} away from the nearest segment "
                f"[phi_0(s), x_i(s)] (tolerance {ON_SET_TOLERANCE}). Play a point phi_0(s) + alpha (x_i(s) - "
                "phi_0(s)) with alpha in [0, 1] (env.unwrapped.segments(s)), or use strict_actions=False to have "
                "off-set actions projected onto D(s)."
            )
        return nearest, distance

    def render(self) -> str | None:
        """``"ansi"``: the current step and state."""
        if self.render_mode == "ansi":
            return f"step {self._h}/{self.horizon}, state {self._state}\n"
        return None

    # -------------------------------------------------------------------------------------------------- protocol
    def segments(self, s: int) -> tuple[FloatArray, FloatArray]:
        """(phi_0(s), x_i(s)): shapes (d,) and (N, d), read-only."""
        state = self._check_state(s)
        return self.instance.phi0[state], self.instance.endpoints[state]

    def segment_table(self) -> tuple[FloatArray, FloatArray]:
        """(phi_0 for all states (n_states, d), endpoints (n_states, N, d)), read-only."""
        return self.instance.phi0, self.instance.endpoints

    def safe_action(self, s: int) -> FloatArray:
        """a_0(s) = phi_0(s), (d,): the action is the feature point itself."""
        return self.instance.phi0[self._check_state(s)].copy()

    def safe_cost(self, s: int, h: int) -> float:
        """tau_h(s) = <phi_0(s), gamma_h*> (< tau by construction)."""
        return float(self.instance.phi0[self._check_state(s)] @ self.gamma_star[self._check_step(h)])

    def is_terminal(self, s: int) -> bool:
        """Nothing is terminal."""
        self._check_state(s)
        return False

    def true_cost(self, s: int, action: Any, h: int) -> float:
        """Ground truth c_h(s, x) = <x, gamma_h*> of the feature point ``action`` (as given, not projected)."""
        self._check_state(s)
        return float(self._as_point(action) @ self.gamma_star[self._check_step(h)])

    def true_reward(self, s: int, action: Any, h: int) -> float:
        """Ground truth r_h(s, x) = <x, theta_h*> of the feature point ``action`` (as given, not projected)."""
        self._check_state(s)
        return float(self._as_point(action) @ self.theta_star[self._check_step(h)])

    def transition_probabilities(self, s: int, action: Any, h: int) -> FloatArray:
        """Ground truth P_h(.|s, x) = x @ mu_h*, (n_states,)."""
        self._check_state(s)
        return self._as_point(action) @ self.mu_star[self._check_step(h)]

    def _as_point(self, action: Any) -> FloatArray:
        """``action`` as a float64 (d,) vector, or a ``ValueError``."""
        try:
            x = np.asarray(action, dtype=np.float64)
        except (TypeError, ValueError):
            x = np.full(1, np.nan)
        if x.shape != (self.feature_dim,) or not np.all(np.isfinite(x)):
            raise ValueError(f"action must be a finite feature point of shape ({self.feature_dim},), got {action!r}.")
        return x
