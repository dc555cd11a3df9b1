"""The cost protocol shared by every part of sb3-safe.

Every safe environment is a standard Gymnasium 5-tuple environment whose per-step cost is a float in
``info["cost"]``. With several constraints the per-constraint costs are a 1-D array in ``info["costs"]``
and ``info["cost"]`` is their sum. A missing cost is an error at the first step, never a silent zero.

Cost limits are stated per episode and undiscounted, as users think of them; algorithms convert them
with :func:`cost_limit_to_q_threshold`.

A cost that is not a number is an :class:`InvalidCostError`; a NaN or infinite reward, cost or observation
stops training and evaluation with a :class:`NonFiniteDataError` (training can skip such transitions instead,
see :class:`~sb3_safe.common.safe_algorithm.SafeAlgorithmMixin`).
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


class InvalidCostError(MissingCostError):
    """A step's ``info["cost"]`` (or ``info["costs"]``) is there but is not one number (one per constraint)."""


class NonFiniteDataError(ValueError):
    """A reward, cost or observation from the environment was NaN or infinite."""


NONFINITE_KEY = "nonfinite"
"""``info`` key that marks a transition skipped for non-finite data (``nonfinite="skip"``): the names of the
fields that were not finite, e.g. ``("reward",)``."""


def _missing_cost_message(info: Mapping[str, Any], env_name: str | None) -> str:
    where = f"environment '{env_name}'" if env_name else "the environment"
    keys = ", ".join(sorted(map(str, info.keys()))) or "none"
    return (
        f"{where} did not report a cost: sb3-safe needs the per-step cost as a float in info['cost'] "
        f"(info keys at this step: {keys}). Use an environment from an sb3-safe plugin "
        "(see sb3_safe.list_envs()), or wrap yours so that step() puts its constraint cost in info['cost']."
    )


def _found(value: Any) -> str:
    """What a cost value is, for messages: its type, its shape when it is an array, and its value."""
    name = "numpy array" if isinstance(value, np.ndarray) else type(value).__name__
    article = "an" if name[:1].lower() in "aeiou" else "a"
    shape = getattr(value, "shape", None)
    text = repr(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    return f"{article} {name}" + (f" of shape {tuple(shape)}" if shape is not None else "") + f": {text}"


def _numeric(value: Any, key: str, env_name: str | None) -> np.ndarray:
    """``value`` as a float64 array, or an :class:`InvalidCostError` naming ``info[key]`` and what was found."""
    array = None
    if not isinstance(value, str | bytes):
        try:
            array = np.asarray(value)
        except (TypeError, ValueError):  # e.g. ragged sequences
            array = None
    if array is None or array.dtype.kind not in "biuf":
        where = f"environment '{env_name}'" if env_name else "the environment"
        raise InvalidCostError(
            f"info['{key}'] of {where} holds {_found(value)}, not {'numbers' if key == COSTS_KEY else 'a number'}: "
            "info['cost'] must be one float per step "
            "(several constraints: a 1-D array of floats in info['costs'], with info['cost'] their sum, and "
            "n_costs set to their number)."
        )
    return array.astype(np.float64)


def _as_cost(value: Any, env_name: str | None) -> float:
    """One step's total cost from ``info["cost"]``, checked: a number (or a one-element array)."""
    array = _numeric(value, COST_KEY, env_name)
    if array.size != 1:
        where = f"environment '{env_name}'" if env_name else "the environment"
        raise InvalidCostError(
            f"info['cost'] of {where} holds {_found(value)}; it must be one float per step. With several "
            "constraints put the per-constraint costs in info['costs'] (a 1-D array), info['cost'] their sum, and "
            "pass n_costs equal to their number."
        )
    return float(array.reshape(-1)[0])


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
        InvalidCostError: If the cost is not a number (e.g. a string, or an array in ``info["cost"]``).
    """
    if n_costs > 1 or COSTS_KEY in info:
        if COSTS_KEY not in info:
            if n_costs == 1 and COST_KEY in info:
                return np.array([_as_cost(info[COST_KEY], env_name)])
            raise MissingCostError(
                f"{_missing_cost_message(info, env_name)} With n_costs={n_costs} constraints the per-constraint "
                "costs must also be a 1-D array in info['costs']."
            )
        costs = _numeric(info[COSTS_KEY], COSTS_KEY, env_name).reshape(-1)
        if costs.shape[0] != n_costs:
            raise MissingCostError(
                f"info['costs'] has {costs.shape[0]} entries but the algorithm was set up for n_costs={n_costs} "
                "constraints: pass n_costs equal to the number of constraints the environment reports."
            )
        return costs
    if COST_KEY not in info:
        raise MissingCostError(_missing_cost_message(info, env_name))
    return np.array([_as_cost(info[COST_KEY], env_name)])


def step_cost(info: Mapping[str, Any], env_name: str | None = None) -> float:
    """The total cost of one step (``info["cost"]``), with the protocol's clear error when it is missing.

    Raises:
        MissingCostError: If the step carries no cost.
        InvalidCostError: If the cost is not one number (e.g. a string, or an array in ``info["cost"]``).
    """
    if COST_KEY in info:
        return _as_cost(info[COST_KEY], env_name)
    if COSTS_KEY in info:
        return float(np.sum(_numeric(info[COSTS_KEY], COSTS_KEY, env_name)))
    raise MissingCostError(_missing_cost_message(info, env_name))


def describe_nonfinite(value: Any) -> str | None:
    """Where a number, an array or a dict of arrays is NaN or infinite, for messages; ``None`` if all is finite.

    Examples: ``"is nan"`` (a number), ``"entries [0, 3] of shape (8,) are inf, nan"`` (an array),
    ``"['position'] is -inf"`` (a dict).
    """
    if isinstance(value, Mapping):
        parts = [f"['{key}'] {text}" for key, item in value.items() if (text := describe_nonfinite(item)) is not None]
        return "; ".join(parts) or None
    array = np.asarray(value)
    if array.dtype.kind not in "fc" or np.isfinite(array).all():  # integers and booleans are always finite
        return None
    bad = ~np.isfinite(array)
    values = ", ".join(sorted({str(v) for v in array[bad].reshape(-1).tolist()}))
    if array.size == 1:
        return f"is {values}"
    where = np.argwhere(bad)
    index = [int(i[0]) if array.ndim == 1 else tuple(int(j) for j in i) for i in where[:5]]
    more = f" and {len(where) - 5} more" if len(where) > 5 else ""
    return f"entries {index}{more} of shape {array.shape} are {values}"


def nonfinite_message(problems: Sequence[str], env_name: str | None, where: str, remedy: str) -> str:
    """The text of a :class:`NonFiniteDataError`: the environment, where (env index, step), what was bad, what to do."""
    env = f"environment '{env_name}'" if env_name else "the environment (it has no registered id)"
    return f"Non-finite data from {env} {where}: {'; '.join(problems)}. {remedy}"


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
    d / T, as in the CVPO paper's code (Liu et al. 2022); see docs/cost_protocol.md, 'Cost limits and thresholds'.
    For gamma = 1 this is d.

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
