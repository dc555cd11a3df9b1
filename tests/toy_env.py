"""A tiny, fast constrained environment for unit tests (in addition to the real safety-gymnasium tasks).

A point on a line starts at 0 and moves by its action (clipped to [-1, 1]) towards a goal at +5. Reward is
the progress towards the goal; the cost is 1 on steps that end inside a hazard [2, 3]. Episodes last
``horizon`` steps (truncation). Variants: no cost in ``info`` (bad input), several constraints,
discrete actions, no known horizon.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

GOAL = 5.0
HAZARD = (2.0, 3.0)


class ToyConstrainedEnv(gym.Env):
    """Line world with a hazard; see the module docstring."""

    metadata = {"render_modes": []}  # noqa: RUF012

    def __init__(self, emit_cost: bool = True, n_costs: int = 1, discrete: bool = False) -> None:
        self.emit_cost = emit_cost
        self.n_costs = n_costs
        self.observation_space = spaces.Box(-10.0, 10.0, shape=(2,), dtype=np.float32)
        self.action_space = spaces.Discrete(3) if discrete else spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        self.position = 0.0

    def _obs(self) -> np.ndarray:
        return np.array([self.position, GOAL - self.position], dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.position = float(self.np_random.uniform(-0.5, 0.5))
        return self._obs(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        move = (
            float(action) - 1.0 if isinstance(self.action_space, spaces.Discrete) else float(np.clip(action, -1, 1)[0])
        )
        before = abs(GOAL - self.position)
        self.position = float(np.clip(self.position + move, -10.0, 10.0))
        reward = before - abs(GOAL - self.position)
        cost = float(HAZARD[0] <= self.position <= HAZARD[1])
        info: dict[str, Any] = {}
        if self.emit_cost:
            if self.n_costs > 1:
                # A second constraint: moving fast (|action| > 0.5) costs 0.5.
                costs = np.array([cost, 0.5 * float(abs(move) > 0.5)][: self.n_costs])
                info["costs"] = costs
                info["cost"] = float(costs.sum())
            else:
                info["cost"] = cost
        return self._obs(), reward, False, False, info


class ToyTradeoffEnv(gym.Env):
    """A CMDP whose unconstrained optimum violates its limit: reward a and cost max(a, 0) per step, a in [-1, 1].

    The observation is the fraction of the episode left. Unconstrained, a = 1 earns the whole horizon in reward and
    in cost; under a per-episode limit d the best policy spends a = d / horizon on average.
    """

    metadata = {"render_modes": []}  # noqa: RUF012

    def __init__(self, horizon: int = 20) -> None:
        self.horizon = horizon
        self.observation_space = spaces.Box(0.0, 1.0, shape=(1,), dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        self.t = 0

    def _obs(self) -> np.ndarray:
        return np.array([1.0 - self.t / self.horizon], dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        a = float(np.clip(action, -1.0, 1.0)[0])
        self.t += 1
        return self._obs(), a, False, False, {"cost": max(a, 0.0)}


TOY_ID = "ToyConstrained-v0"
TOY_HORIZON = 20
TRADEOFF_ID = "ToyTradeoff-v0"


def register_toy_envs() -> list[str]:
    """Register the toy variants with Gymnasium (idempotent) and return their ids."""
    variants = {
        TOY_ID: {},
        "ToyNoCost-v0": {"emit_cost": False},
        "ToyTwoCosts-v0": {"n_costs": 2},
        "ToyDiscrete-v0": {"discrete": True},
    }
    for env_id, kwargs in variants.items():
        if env_id not in gym.registry:
            gym.register(env_id, entry_point=ToyConstrainedEnv, kwargs=kwargs, max_episode_steps=TOY_HORIZON)
    if TRADEOFF_ID not in gym.registry:
        gym.register(TRADEOFF_ID, entry_point=ToyTradeoffEnv, max_episode_steps=TOY_HORIZON)
    if "ToyNoHorizon-v0" not in gym.registry:
        gym.register("ToyNoHorizon-v0", entry_point=ToyConstrainedEnv)
    return [*variants, TRADEOFF_ID, "ToyNoHorizon-v0"]
