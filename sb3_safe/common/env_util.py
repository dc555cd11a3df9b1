"""Vectorised cost-aware environments."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import gymnasium as gym
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv


def make_vec_env(
    env_id: str,
    n_envs: int = 1,
    seed: int | None = None,
    vec_env_cls: type[DummyVecEnv] | type[SubprocVecEnv] | None = None,
    env_kwargs: dict[str, Any] | None = None,
    vec_env_kwargs: dict[str, Any] | None = None,
    monitor_dir: str | None = None,
) -> VecEnv:
    """``n_envs`` copies of a cost-aware environment (see :func:`sb3_safe.make_env`) in a VecEnv.

    Like SB3's ``make_vec_env``, but each copy is wrapped in a
    :class:`~sb3_safe.common.monitor.SafeMonitor`, so episode infos carry the cost.

    Args:
        env_id: Environment id.
        n_envs: Number of environments.
        seed: Seed of the first environment; environment i gets ``seed + i``.
        vec_env_cls: ``DummyVecEnv`` (default) or ``SubprocVecEnv``.
        env_kwargs: Keyword arguments for each environment.
        vec_env_kwargs: Keyword arguments for the VecEnv class.
        monitor_dir: Folder for the monitor CSV files (``None``: none).

    Returns:
        The VecEnv.

    Raises:
        ValueError: If ``n_envs`` is not an integer >= 1.
    """
    from sb3_safe.registry import make_env

    if isinstance(n_envs, bool) or not isinstance(n_envs, int) or n_envs < 1:
        raise ValueError(f"n_envs must be an integer >= 1 (the number of parallel environments), got {n_envs!r}.")
    env_kwargs = dict(env_kwargs or {})

    def factory(rank: int) -> Callable[[], gym.Env]:
        def build() -> gym.Env:
            monitor_file = os.path.join(monitor_dir, str(rank)) if monitor_dir is not None else None
            env = make_env(env_id, monitor_file=monitor_file, **env_kwargs)
            if seed is not None:
                env.action_space.seed(seed + rank)
            return env

        return build

    if monitor_dir is not None:
        os.makedirs(monitor_dir, exist_ok=True)
    vec_env = (vec_env_cls or DummyVecEnv)([factory(i) for i in range(n_envs)], **(vec_env_kwargs or {}))
    if seed is not None:
        vec_env.seed(seed)
    return vec_env
