"""The catalogue of safety-gymnasium tasks that sb3-safe supports, derived from safety-gymnasium's own registry.

Importing this module applies the compatibility shim and imports ``safety_gymnasium``, which registers its ids in
its ``safe_registry`` and in Gymnasium's registry. The catalogue snapshots those original specs
(:data:`SAFETY_SPECS`) before :func:`sb3_safe_safety_gymnasium.register` replaces the Gymnasium entries.

Supported: the single-agent navigation tasks with vector observations (Point/Car/Racecar/Doggo/Ant x
Goal/Button/Push/Circle levels 0-2, and Run0) and the velocity tasks (v0 and v1). Everything else that
safety-gymnasium registers is listed in :data:`EXCLUDED` with the reason.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from sb3_safe_safety_gymnasium import _shim

_shim.apply()

import gymnasium  # noqa: E402
from safety_gymnasium.utils.registration import safe_registry  # noqa: E402

Family = Literal["navigation", "velocity"]

_VISION_HINT = "sb3-safe supports vector observations only"

# Ids that safety-gymnasium registers but that cannot construct or step in this stack (beyond the rules in
# exclusion_reason), with the reason. Sweep of all 232 non-debug ids (safety_gymnasium.make, reset, 50 random steps;
# Python 3.11, gymnasium 1.4, mujoco 4.0, EGL): the only failures are the 30 Race/RaceVision ids, which hit
# "Error opening file .../textures/village_floor.PNG" at reset (the .PNG textures are missing from the 1.0.0 wheel).
# The supported ids are re-checked by plugins/safety-gymnasium/tests (reset, steps, SB3 check_env; -m slow: episodes).
_BROKEN: dict[str, str] = {}


@dataclass(frozen=True)
class Task:
    """One supported task.

    Attributes:
        id: the Gymnasium id, identical to safety-gymnasium's (e.g. ``"SafetyPointGoal1-v0"``).
        family: ``"navigation"`` (Builder worlds rebuilt at each reset) or ``"velocity"`` (MuJoCo locomotion).
        max_episode_steps: episode length, applied once by Gymnasium's ``TimeLimit``.
        entry_point: safety-gymnasium's creator of the raw (6-tuple) env.
        kwargs: safety-gymnasium's keyword arguments for that creator (read-only).
    """

    id: str
    family: Family
    max_episode_steps: int
    entry_point: str
    kwargs: MappingProxyType[str, Any] = field(default_factory=lambda: MappingProxyType({}))


def _snapshot_safety_specs() -> dict[str, gymnasium.envs.registration.EnvSpec]:
    """Copy safety-gymnasium's original Gymnasium specs, before sb3-safe registers its own under the same ids."""
    specs = {}
    for env_id in safe_registry:
        env_spec = gymnasium.registry.get(env_id)
        if env_spec is not None and str(env_spec.entry_point).startswith("safety_gymnasium."):
            specs[env_id] = copy.deepcopy(env_spec)
    return specs


#: safety-gymnasium's own specs for all of its single-agent ids (entry points that build 6-tuple envs).
SAFETY_SPECS: dict[str, gymnasium.envs.registration.EnvSpec] = _snapshot_safety_specs()


def exclusion_reason(env_id: str) -> str | None:
    """Why a safety-gymnasium id is not supported, or ``None`` if it is.

    Args:
        env_id: a safety-gymnasium id.

    Returns:
        A sentence naming the problem and the alternative, or ``None``.
    """
    name = env_id.partition("-")[0]
    base = re.sub(r"(Vision|Debug)$", "", name)
    vector_twin = f"{base}-{env_id.partition('-')[2]}"
    if re.search(r"Race\d", name):  # not "Racecar"
        return (
            f"{env_id} is a vision 'Race' task; the safety-gymnasium 1.0.0 wheel lacks its .PNG textures, so it fails "
            f"at reset ({_VISION_HINT})."
        )
    if name.endswith("Vision"):
        return (
            f"{env_id} is a vision task with image observations ({_VISION_HINT}). "
            f"Fix: use {vector_twin}, its vector-observation version."
        )
    if name.endswith("Debug"):
        return f"{env_id} is a keyboard-controlled debug task that needs a display. Fix: use {vector_twin}."
    if "Fading" in name:
        goal_twin = re.sub(r"Fading(Easy|Hard)", "Goal", vector_twin)
        return (
            f"{env_id} is a vision benchmark: the goal only fades in the rendered image, so with vector "
            f"observations it is the same task as {goal_twin} ({_VISION_HINT}). Fix: use {goal_twin}."
        )
    return _BROKEN.get(env_id)


def _family(env_spec: gymnasium.envs.registration.EnvSpec) -> Family:
    """Navigation tasks are built by ``safety_gymnasium.builder:Builder``; velocity tasks by MuJoCo env classes."""
    return "navigation" if str(env_spec.entry_point).endswith(":Builder") else "velocity"


def _build_catalogue() -> dict[str, Task]:
    """Collect the supported tasks, sorted by id."""
    tasks = {}
    for env_id in sorted(SAFETY_SPECS):
        env_spec = SAFETY_SPECS[env_id]
        if exclusion_reason(env_id) is not None or env_spec.max_episode_steps is None:
            continue
        tasks[env_id] = Task(
            id=env_id,
            family=_family(env_spec),
            max_episode_steps=int(env_spec.max_episode_steps),
            entry_point=str(env_spec.entry_point),
            kwargs=MappingProxyType(copy.deepcopy(dict(env_spec.kwargs))),
        )
    return tasks


#: Supported tasks by id.
TASKS: MappingProxyType[str, Task] = MappingProxyType(_build_catalogue())

#: safety-gymnasium ids that are registered but not supported, with the reason (and the fix).
EXCLUDED: MappingProxyType[str, str] = MappingProxyType(
    {env_id: reason for env_id in sorted(SAFETY_SPECS) if (reason := exclusion_reason(env_id)) is not None}
)


def task_ids() -> list[str]:
    """The ids of all supported tasks, sorted."""
    return list(TASKS)


def get_task(env_id: str) -> Task:
    """Look a supported task up.

    Args:
        env_id: a task id such as ``"SafetyPointGoal1-v0"``.

    Returns:
        The :class:`Task`.

    Raises:
        ValueError: if the id is excluded (the message says why and what to use instead) or unknown.
    """
    if env_id in TASKS:
        return TASKS[env_id]
    if env_id in EXCLUDED:
        raise ValueError(EXCLUDED[env_id])
    raise ValueError(
        f"unknown safety-gymnasium task {env_id!r}. Fix: use one of sb3_safe_safety_gymnasium.task_ids() "
        f"(e.g. 'SafetyPointGoal1-v0')."
    )
