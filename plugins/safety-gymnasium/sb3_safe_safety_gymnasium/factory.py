"""The Gymnasium entry point: build a safety-gymnasium task as a standard 5-tuple Gymnasium env.

This module applies the compatibility shim at its own import, so that processes which only unpickle the entry
point (e.g. the forkserver workers of SB3's ``SubprocVecEnv``) are patched before safety-gymnasium loads.
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Iterator
from typing import Any, SupportsFloat

from sb3_safe_safety_gymnasium import _shim

_shim.apply()

import gymnasium  # noqa: E402
import mujoco  # noqa: E402
from gymnasium.envs.registration import load_env_creator  # noqa: E402
from safety_gymnasium.wrappers import SafetyGymnasium2Gymnasium  # noqa: E402

from sb3_safe_safety_gymnasium._fast_reset import fast_assets  # noqa: E402
from sb3_safe_safety_gymnasium.catalogue import get_task  # noqa: E402

#: Keyword options accepted by :func:`make_env` (and so by ``gymnasium.make(id, **options)``).
OPTIONS: tuple[str, ...] = ("render_mode", "width", "height", "camera_id", "camera_name", "fast_reset")
RENDER_MODES: tuple[str, ...] = ("human", "rgb_array", "depth_array")


@contextlib.contextmanager
def _quiet_construction() -> Iterator[None]:
    """Silence the two harmless warnings that constructing a safety-gymnasium env emits on this stack."""
    previous = mujoco.get_mju_user_warning()

    def forward_other_warnings(message: str) -> None:
        # mujoco 4: half_cheetah.xml of the v4 locomotion envs uses the deprecated compiler attribute settotalmass
        if "settotalmass" in message:
            return
        if previous is not None:
            previous(message)
        else:
            print(f"WARNING: {message}", file=sys.stderr)  # what MuJoCo's default handler prints

    with warnings.catch_warnings():
        # gymnasium 1.x Box: comparing the agent's float32 ctrl ranges against float64 limits overflows in a cast
        warnings.filterwarnings("ignore", "overflow encountered in cast", RuntimeWarning, r"gymnasium\.spaces\.box")
        mujoco.set_mju_user_warning(forward_other_warnings)
        try:
            yield
        finally:
            mujoco.set_mju_user_warning(previous)


class SafetyGymnasiumEnv(SafetyGymnasium2Gymnasium):
    """A safety-gymnasium env seen through the standard Gymnasium API.

    ``step`` returns ``(obs, reward, terminated, truncated, info)`` with the per-step cost as a Python float in
    ``info["cost"]`` (navigation tasks also put its components, ``cost_hazards``, ..., ``cost_sum``, in ``info``).
    With ``fast_reset=True``, navigation worlds are rebuilt with cached assets and a built-in skybox (see
    :mod:`sb3_safe_safety_gymnasium._fast_reset`); trajectories are identical, only the rendered sky differs.
    """

    def __init__(self, env: gymnasium.Env, fast_reset: bool = False) -> None:
        """Wrap a raw (6-tuple) safety-gymnasium env.

        Args:
            env: the env built by safety-gymnasium's entry point.
            fast_reset: rebuild navigation worlds with cached assets and a built-in skybox.
        """
        super().__init__(env)
        self.fast_reset = fast_reset

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Reset the env (the navigation world is rebuilt at every reset).

        Args:
            seed: seed for the env's random generator.
            options: passed on to the env.

        Returns:
            The first observation and the info dict.
        """
        if not self.fast_reset:
            return self.env.reset(seed=seed, options=options)
        with fast_assets():
            return self.env.reset(seed=seed, options=options)

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        """Step the env.

        Args:
            action: an element of the action space.

        Returns:
            ``(obs, reward, terminated, truncated, info)``, with the cost in ``info["cost"]`` as a float.
        """
        obs, reward, terminated, truncated, info = super().step(action)
        info["cost"] = float(info["cost"])
        return obs, float(reward), bool(terminated), bool(truncated), info


def make_env(
    task_id: str,
    *,
    render_mode: str | None = None,
    width: int | None = None,
    height: int | None = None,
    camera_id: int | None = None,
    camera_name: str | None = None,
    fast_reset: bool = False,
    **unknown: Any,
) -> SafetyGymnasiumEnv:
    """Build one supported task; this is the entry point of every id registered by this package.

    Use it through ``gymnasium.make(task_id, **options)``, which also adds the time limit (the task's
    ``max_episode_steps``, once: safety-gymnasium's own step counter is switched off here).

    Args:
        task_id: the task id, e.g. ``"SafetyPointGoal1-v0"``.
        render_mode: ``None``, ``"rgb_array"`` (works headless through EGL), ``"depth_array"`` or ``"human"``.
        width: width of rendered frames (default: 256 for navigation, 480 for velocity tasks).
        height: height of rendered frames (same defaults).
        camera_id: MuJoCo camera id to render from (exclusive with ``camera_name``).
        camera_name: camera to render from; navigation tasks default to ``"vision"`` (the robot's view) and also
            have ``"track"``, ``"fixednear"`` and ``"fixedfar"``.
        fast_reset: navigation tasks only (a no-op for velocity tasks, which never rebuild): build worlds with
            cached assets and a built-in skybox, about 1.8x faster with resets, same trajectories.
        **unknown: rejected with a clear error.

    Returns:
        The env, without time limit.

    Raises:
        TypeError: on unknown options or a non-bool ``fast_reset``.
        ValueError: on an unsupported (e.g. vision) or unknown task id, or an unknown render mode.
    """
    task = get_task(task_id)
    if unknown:
        raise TypeError(
            f"{task_id}: unknown option(s) {sorted(unknown)}. Fix: use only {list(OPTIONS)} "
            "(plus gymnasium.make's own max_episode_steps, disable_env_checker)."
        )
    if not isinstance(fast_reset, bool):
        raise TypeError(f"{task_id}: fast_reset must be a bool, got {fast_reset!r}.")
    if render_mode is not None and render_mode not in RENDER_MODES:
        raise ValueError(f"{task_id}: unknown render_mode {render_mode!r}. Fix: use one of {list(RENDER_MODES)}.")
    kwargs = dict(task.kwargs)
    given = {"render_mode": render_mode, "width": width, "height": height, "camera_id": camera_id}
    kwargs.update({key: value for key, value in given.items() if value is not None})
    if camera_name is not None:
        kwargs["camera_name"] = camera_name
    with _quiet_construction():
        raw: Any = load_env_creator(task.entry_point)(**kwargs)
    if task.family == "navigation":
        raw.task.num_steps = sys.maxsize  # the Builder's own time limit; Gymnasium's TimeLimit is the only one
    return SafetyGymnasiumEnv(raw, fast_reset=fast_reset and task.family == "navigation")


make_env.metadata = {"render_modes": list(RENDER_MODES)}  # type: ignore[attr-defined]  # read by gymnasium.make
