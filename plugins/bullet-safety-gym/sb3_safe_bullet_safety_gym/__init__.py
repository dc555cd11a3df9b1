"""Bullet-Safety-Gym tasks for sb3-safe, as standard Gymnasium envs with a float cost in ``info["cost"]``.

Importing this package (which needs nothing from sb3-safe itself) imports ``bullet_safety_gym`` and registers
every task of it with Gymnasium under the task's own id (:func:`register`), so that each environment reports its
step cost as a Python float and ``reset(seed=...)`` is reproducible. Plain Gymnasium users can write::

    import gymnasium
    env = gymnasium.make("sb3_safe_bullet_safety_gym:SafetyCarCircle-v0")
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    info["cost"]  # a float
"""

from __future__ import annotations

from sb3_safe_bullet_safety_gym.registration import (
    EXCLUDED,
    PAPER_TASKS,
    FloatCost,
    QuietCStream,
    RenderMode,
    SeededReset,
    make_bullet_env,
    register,
    task_ids,
)

__all__ = [
    "EXCLUDED",
    "PAPER_TASKS",
    "FloatCost",
    "QuietCStream",
    "RenderMode",
    "SeededReset",
    "make_bullet_env",
    "register",
    "task_ids",
]

__version__ = "0.1.0"

register()
