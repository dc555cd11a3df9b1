"""Register the supported tasks with Gymnasium under their own ids (``gymnasium.make("SafetyPointGoal1-v0")``).

safety-gymnasium already put these ids in Gymnasium's registry, with entry points that build its 6-tuple envs.
:func:`register` replaces them with :func:`sb3_safe_safety_gymnasium.factory.make_env` (standard 5-tuple envs,
cost in ``info["cost"]``) and points ``safety_gymnasium.make`` at the original specs kept in
:data:`sb3_safe_safety_gymnasium.catalogue.SAFETY_SPECS`, so that it keeps returning 6-tuple envs.
"""

from __future__ import annotations

from typing import Any

import gymnasium

from sb3_safe_safety_gymnasium import _shim

_shim.apply()

import safety_gymnasium.utils.registration as safety_registration  # noqa: E402

from sb3_safe_safety_gymnasium.catalogue import EXCLUDED, SAFETY_SPECS, TASKS  # noqa: E402

ENTRY_POINT = "sb3_safe_safety_gymnasium.factory:make_env"


def _find_safety_spec(env_id: str) -> Any:
    """``_find_spec`` for ``safety_gymnasium.make``: prefer safety-gymnasium's original spec of an id."""
    if env_id in SAFETY_SPECS:
        return SAFETY_SPECS[env_id]
    return _gymnasium_find_spec(env_id)


_gymnasium_find_spec = safety_registration._find_spec


def _keep_safety_make_working() -> None:
    """Make ``safety_gymnasium.make`` resolve ids to safety-gymnasium's own specs, not to ours. Idempotent."""
    safety_registration._find_spec = _find_safety_spec


def _register_one(env_id: str, max_episode_steps: int | None) -> None:
    """Register ``env_id`` with :data:`ENTRY_POINT`, replacing safety-gymnasium's entry silently, once."""
    current = gymnasium.registry.get(env_id)
    if current is not None and current.entry_point == ENTRY_POINT:
        return  # already ours: registering again would only warn
    if current is not None and env_id in SAFETY_SPECS:
        del gymnasium.registry[env_id]  # safety-gymnasium's 6-tuple entry, kept in SAFETY_SPECS
    gymnasium.register(
        id=env_id,
        entry_point=ENTRY_POINT,
        max_episode_steps=max_episode_steps,
        kwargs={"task_id": env_id},
    )


def register() -> list[str]:
    """Register every supported task with Gymnasium under its own id. Idempotent.

    The ids of unsupported tasks (vision, debug) are registered too, but making them raises a ``ValueError``
    that explains why and names the alternative; they are not in the returned list.

    Returns:
        The ids of the supported tasks, sorted (``sb3_safe.envs`` entry-point contract).
    """
    _keep_safety_make_working()
    for task in TASKS.values():
        _register_one(task.id, task.max_episode_steps)
    for env_id in EXCLUDED:
        _register_one(env_id, None)
    return list(TASKS)
