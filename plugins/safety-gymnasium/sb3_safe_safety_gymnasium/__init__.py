"""safety-gymnasium tasks for sb3-safe, as standard Gymnasium envs with the cost in ``info["cost"]``.

Importing this package (which needs nothing from sb3-safe itself):

1. sets ``MUJOCO_GL=egl`` unless already set, so that ``render_mode="rgb_array"`` works headless;
2. applies the compatibility shim (:mod:`sb3_safe_safety_gymnasium._shim`) and imports ``safety_gymnasium``;
3. registers every supported task with Gymnasium under its own id (:func:`register`).

Example::

    import gymnasium
    env = gymnasium.make("sb3_safe_safety_gymnasium:SafetyPointGoal1-v0", fast_reset=True)
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    info["cost"]  # a float
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # before anything imports mujoco / OpenGL

from sb3_safe_safety_gymnasium import _shim

_shim.apply()

from sb3_safe_safety_gymnasium.catalogue import EXCLUDED, TASKS, Task, get_task, task_ids  # noqa: E402
from sb3_safe_safety_gymnasium.factory import OPTIONS, SafetyGymnasiumEnv, make_env  # noqa: E402
from sb3_safe_safety_gymnasium.registration import register  # noqa: E402

__all__ = [
    "EXCLUDED",
    "OPTIONS",
    "TASKS",
    "SafetyGymnasiumEnv",
    "Task",
    "get_task",
    "make_env",
    "register",
    "task_ids",
]

__version__ = "0.1.0"

register()
