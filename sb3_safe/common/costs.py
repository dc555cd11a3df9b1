"""The cost protocol shared by every part of sb3-safe.

Every safe environment is a standard Gymnasium 5-tuple environment whose per-step cost is a float in
``info["cost"]``. With several constraints the per-constraint costs are a 1-D array in ``info["costs"]``
and ``info["cost"]`` is their sum. A missing cost is an error at the first step, never a silent zero.

Cost limits are stated per episode and undiscounted, as users think of them; algorithms convert them
with :func:`cost_limit_to_q_threshold`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

COST_KEY = "cost"
"""``info`` key of the per-step (total) cost."""
COSTS_KEY = "costs"
"""``info`` key of the per-constraint costs when an environment has several constraints."""
EPISODE_COST_KEY = "c"
"""Key of the episode cost in ``info["episode"]``, beside SB3's ``r`` (return) and ``l`` (length)."""


class MissingCostError(ValueError):
    """An environment step did not report its cost in ``info["cost"]``."""


def _missing_cost_message(info: Mapping[str, Any], env_name: str | None) -> str:
    where = f"environment '{env_name}'" if env_name else "the environment"
    keys = ", ".join(sorted(map(str, info.keys()))) or "none"
    return (
        f"{where} did not report a cost: sb3-safe needs the per-step cost as a float in info['cost'] "
        f"(info keys at this step: {keys}). Use an environment from an sb3-safe plugin "
        "(see sb3_safe.list_envs()), or wrap yours so that step() puts its constraint cost in info['cost']."
    )


def step_costs(info: Mapping[str, Any], n_costs: int = 1, env_name: str | None = None) -> np.ndarray:
    """Read one step's per-constraint costs from an ``info`` dict.

    Args:
        info: The ``info`` returned by ``env.step``.
        n_costs: Number of constraints expected.
        env_name: Name used in error messages.

    Returns:
        A float array of shape ``(n_costs,)``.

    Raises:
        MissingCostError: If the step carries no cost, or not ``n_costs`` of them.
    """
    if n_costs > 1 or COSTS_KEY in info:
        if COSTS_KEY not in info:
            if n_costs == 1 and COST_KEY in info:
                return np.array([float(info[COST_KEY])])
            raise MissingCostError(
                f"{_missing_cost_message(info, env_name)} With n_costs={n_costs} constraints the per-constraint "
                "costs must also be a 1-D array in info['costs']."
            )
        costs = np.asarray(info[COSTS_KEY], dtype=np.float64).reshape(-1)
        if costs.shape[0] != n_costs:
            raise MissingCostError(
                f"info['costs'] has {costs.shape[0]} entries but the algorithm was set up for n_costs={n_costs} "
                "constraints: pass n_costs equal to the number of constraints the environment reports."
            )
        return costs
    if COST_KEY not in info:
        raise MissingCostError(_missing_cost_message(info, env_name))
    return np.array([float(info[COST_KEY])])


def step_cost(info: Mapping[str, Any], env_name: str | None = None) -> float:
    """The total cost of one step (``info["cost"]``), with the protocol's clear error when it is missing."""
    if COST_KEY in info:
        return float(info[COST_KEY])
    if COSTS_KEY in info:
        return float(np.sum(info[COSTS_KEY]))
    raise MissingCostError(_missing_cost_message(info, env_name))


def costs_from_infos(infos: Sequence[Mapping[str, Any]], n_costs: int = 1, env_name: str | None = None) -> np.ndarray:
    """Stack the per-constraint costs of a VecEnv step: shape ``(n_envs, n_costs)``."""
    return np.stack([step_costs(info, n_costs, env_name) for info in infos]).astype(np.float32)


def validate_cost_limit(cost_limit: float | Sequence[float] | np.ndarray, n_costs: int = 1) -> np.ndarray:
    """Check a per-episode cost limit and return it as an array of shape ``(n_costs,)``.

    Raises:
        ValueError: If a limit is negative or not finite, or the number of limits does not match ``n_costs``.
    """
    limits = np.atleast_1d(np.asarray(cost_limit, dtype=np.float64))
    if limits.ndim != 1 or (limits.shape[0] not in (1, n_costs)):
        raise ValueError(f"cost_limit must be a number or {n_costs} numbers (one per constraint), got {cost_limit!r}.")
    if not np.all(np.isfinite(limits)) or np.any(limits < 0):
        raise ValueError(
            f"cost_limit must be finite and >= 0 (a per-episode, undiscounted budget), got {cost_limit!r}. "
            "Use 0 to forbid any cost."
        )
    return np.broadcast_to(limits, (n_costs,)).copy()


def episode_length_of(env: Any, episode_length: int | None = None) -> int:
    """The fixed episode length T of an environment.

    Taken from ``episode_length`` when given, else from ``env.spec.max_episode_steps``, else from a
    ``gymnasium.wrappers.TimeLimit`` in the wrapper chain (for a VecEnv, from its first sub-environment).

    Raises:
        ValueError: If none is available: cost thresholds per state assume a known, fixed horizon.
    """
    if episode_length is not None:
        if int(episode_length) != episode_length or episode_length <= 0:
            raise ValueError(f"episode_length must be a positive integer, got {episode_length!r}.")
        return int(episode_length)
    spec = _spec_of(env)
    horizon = getattr(spec, "max_episode_steps", None) if spec is not None else None
    if horizon is None:
        horizon = _time_limit_of(env)
    if horizon is None:
        name = getattr(spec, "id", None) or type(getattr(env, "unwrapped", env)).__name__
        raise ValueError(
            f"The episode length of '{name}' is not known: it has no spec.max_episode_steps. "
            "Converting a per-episode cost limit into a per-state threshold needs a fixed horizon T. "
            "Register the environment with max_episode_steps (or wrap it in gymnasium.wrappers.TimeLimit), "
            "or pass episode_length=T explicitly."
        )
    return int(horizon)


def _time_limit_of(env: Any) -> int | None:
    """``max_episode_steps`` of a TimeLimit wrapper around ``env`` (or a VecEnv's first env), if any."""
    from stable_baselines3.common.vec_env import VecEnv

    try:
        if isinstance(env, VecEnv):
            return env.get_attr("_max_episode_steps", indices=[0])[0]
        return env.get_wrapper_attr("_max_episode_steps") if env is not None else None
    except AttributeError:
        return None


def env_name_of(env: Any) -> str | None:
    """The id of an environment (or of a VecEnv's first sub-environment), for messages; ``None`` if unknown."""
    spec = _spec_of(env)
    return getattr(spec, "id", None)


def _spec_of(env: Any) -> gym.envs.registration.EnvSpec | None:
    from stable_baselines3.common.vec_env import VecEnv

    if isinstance(env, VecEnv):
        specs = env.get_attr("spec")
        return specs[0] if specs else None
    return getattr(env, "spec", None)


def cost_limit_to_q_threshold(
    cost_limit: float | Sequence[float] | np.ndarray, gamma: float, episode_length: int | None
) -> float | np.ndarray:
    """Convert a per-episode cost limit d into a per-state threshold on the discounted cost critic.

    ``eps1 = d (1 - gamma^T) / ((1 - gamma) T)``: the discounted T-step return of a constant per-step cost
    d / T (CVPO paper, Liu et al. 2022, App. B.1; specs/cvpo.md §2.1). For gamma = 1 this is d.

    Args:
        cost_limit: Per-episode, undiscounted limit d (one per constraint, or a scalar).
        gamma: Discount factor in (0, 1].
        episode_length: The fixed horizon T (see :func:`episode_length_of`).

    Returns:
        A float for a scalar limit, else an array with one threshold per constraint.

    Raises:
        ValueError: If the limit is negative, gamma is outside (0, 1], or T is unknown or not positive.
    """
    if episode_length is None:
        raise ValueError(
            "cost_limit_to_q_threshold needs the fixed episode length T, got None: a per-state threshold "
            "cannot be derived from a per-episode limit without it (see episode_length_of)."
        )
    horizon = episode_length_of(None, episode_length)
    if not 0.0 < gamma <= 1.0:
        raise ValueError(f"gamma must be in (0, 1], got {gamma}.")
    limits = validate_cost_limit(cost_limit, n_costs=np.size(cost_limit))
    scale = 1.0 if gamma == 1.0 else (1.0 - gamma**horizon) / ((1.0 - gamma) * horizon)
    thresholds = limits * scale
    return float(thresholds[0]) if np.ndim(cost_limit) == 0 else thresholds


def per_constraint_keys(prefix: str, values: float | Sequence[float] | np.ndarray) -> dict[str, float]:
    """Logger keys for per-constraint values: ``{prefix: v}`` for one constraint, else ``{prefix_0: v0, ...}``."""
    flat = np.asarray(values, dtype=float).reshape(-1)
    if flat.size == 1:
        return {prefix: float(flat[0])}
    return {f"{prefix}_{j}": float(v) for j, v in enumerate(flat)}


class EpisodeCostTracker:
    """Running per-constraint episode costs of ``n_envs`` parallel environments.

    ``update`` adds one step's costs and returns, for the environments whose episode just ended, the
    episode's cost per constraint; those accumulators then restart from zero.
    """

    def __init__(self, n_envs: int, n_costs: int = 1) -> None:
        self.running = np.zeros((n_envs, n_costs), dtype=np.float64)

    def update(self, costs: np.ndarray, dones: np.ndarray | Sequence[bool]) -> dict[int, np.ndarray]:
        """Add ``costs`` (shape ``(n_envs, n_costs)``); return ``{env_index: episode_costs}`` of finished episodes."""
        self.running += np.asarray(costs, dtype=np.float64).reshape(self.running.shape)
        finished = {int(i): self.running[i].copy() for i in np.flatnonzero(np.asarray(dones, dtype=bool))}
        for i in finished:
            self.running[i] = 0.0
        return finished
