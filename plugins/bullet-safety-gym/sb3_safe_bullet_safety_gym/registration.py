"""Registering Bullet-Safety-Gym's tasks with Gymnasium, each wrapped so that its cost is a float.

bullet-safety-gym 1.4.0 registers its tasks at import time with an entry point that returns the raw environment.
That environment runs unchanged on gymnasium 1.x, with rough edges that this module smooths over:

- ``info["cost"]`` is a Python ``int`` on most tasks (``float`` on some): :class:`FloatCost` makes it a float;
- ``reset(seed=...)`` ignores the seed: initial states are drawn from NumPy's and Python's *global* random
  generators, and state of the previous episode carries over a reset, so seeded resets were not reproducible.
  :class:`SeededReset` seeds those two generators when a seed is given (a process-wide side effect, the only lever
  the package offers) and rebuilds a used env first (obstacle draws made at construction stay outside its reach
  on a new env's first reset);
- building the observation space casts infinite float64 bounds to float32, which NumPy reports as a
  ``RuntimeWarning: overflow encountered in cast`` on every ``make``: it is silenced while the env is built;
- it predates Gymnasium's ``render_mode`` constructor argument (it renders with ``render(mode)``):
  :class:`RenderMode` accepts ``render_mode="rgb_array"`` (videos, ``sb3-safe eval --video``);
- its ``RedirectStream`` (which hides pybullet's C-level output while connecting) looks the C stream up by the
  Python stream's *name*, so it raises ``ValueError: ... undefined symbol`` whenever ``sys.stdout`` is not the
  original one (pytest's capture, Ray workers, notebooks): :class:`QuietCStream` replaces it.

:func:`register` replaces each of the package's registry entries with one whose entry point is
:func:`make_bullet_env` (same id, kwargs and episode limit), so ``gymnasium.make("SafetyCarCircle-v0")`` and
``sb3_safe.make_env("SafetyCarCircle-v0")`` both return the wrapped environment.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import os
import random
import sys
import warnings
from collections.abc import Callable
from typing import Any, SupportsFloat, TextIO

import gymnasium as gym
import numpy as np

ORIGINAL_ENTRY_POINT = "bullet_safety_gym.envs.builder:EnvironmentBuilder"
ENTRY_POINT = "sb3_safe_bullet_safety_gym.registration:make_bullet_env"

PAPER_TASKS = (
    "SafetyCarCircle-v0",
    "SafetyBallCircle-v0",
    "SafetyCarRun-v0",
    "SafetyBallRun-v0",
    "SafetyAntRun-v0",
    "SafetyDroneCircle-v0",
)
"""The Circle and Run tasks the CVPO paper and FSRL's benchmark train on."""

EXCLUDED: dict[str, str] = {}
"""Task ids of bullet-safety-gym 1.4.0 that are not offered, with the reason (none: all 18 reset and step here)."""


class FloatCost(gym.Wrapper):
    """Makes ``info["cost"]`` a Python float (bullet-safety-gym reports an ``int`` on most tasks)."""

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        observation, reward, terminated, truncated, info = self.env.step(action)
        if "cost" in info:
            info["cost"] = float(info["cost"])
        return observation, reward, terminated, truncated, info


class RenderMode(gym.Wrapper):
    """Gymnasium's ``render_mode`` on an env whose ``render`` takes the mode as an argument (old Gym API)."""

    def __init__(self, env: gym.Env, render_mode: str | None) -> None:
        super().__init__(env)
        self._render_mode = render_mode
        seconds_per_step = getattr(env.unwrapped, "dt", None)  # physics time step x frame skip
        if seconds_per_step:  # real-time playback for videos (10 fps for most tasks, 30 for the Ant)
            self.metadata = {**env.metadata, "render_fps": round(1.0 / seconds_per_step)}

    @property
    def render_mode(self) -> str | None:  # type: ignore[override]
        return self._render_mode

    def render(self) -> Any:
        if self._render_mode is None:
            return None
        unwrapped: Any = self.env.unwrapped
        return unwrapped.render(mode=self._render_mode)


class SeededReset(gym.Wrapper):
    """Makes ``reset(seed=s)`` reproducible: the same seed gives the same episode, on a fresh env or a used one.

    bullet-safety-gym 1.4.0 ignores the ``seed`` argument of ``reset`` and samples start poses, goals and obstacle
    placements with ``numpy.random`` and ``random``; and its reset restores the simulator's saved state while other
    state carries over from the previous episode (the agents' last actions and joint motors, the obstacles' motion),
    so the first steps after two equal resets differ. With a seed, this wrapper seeds both global generators (and
    the env's own ``np_random``) and, if the env has stepped since it was built, first builds it anew with
    ``rebuild``. Without a seed, resets continue as before. Seeding is process-wide: envs in one process share
    the two generators, as they already did.

    Not covered: on the first reset of a new env, the obstacle orientations and motion phases of the Reach, Push and
    Gather tasks were drawn when it was built; seed ``numpy.random`` and ``random`` before ``gymnasium.make`` to
    fix those too.

    Args:
        env: The raw bullet-safety-gym environment.
        rebuild: Builds a new raw environment with the same arguments (None: never rebuild).
    """

    def __init__(self, env: gym.Env, rebuild: Callable[[], gym.Env] | None = None) -> None:
        super().__init__(env)
        self._rebuild = rebuild
        self._stepped = False

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        self._stepped = True
        return self.env.step(action)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        if seed is not None:
            if self._stepped and self._rebuild is not None:
                self.env.close()
                self.env = self._rebuild()  # before seeding: a build draws from the global generators too
                self._stepped = False
            np.random.seed(seed)
            random.seed(seed)
            gym.Env.reset(self.unwrapped, seed=seed)  # sets the unused but expected env.np_random
        return self.env.reset(seed=seed, options=options)


class QuietCStream:
    """Sends a stream's file descriptor to /dev/null for a while (C-level output included); a no-op without one.

    Replaces bullet-safety-gym's ``RedirectStream``, which fails when ``sys.stdout`` is not the process's original
    stream. C buffers are flushed with ``fflush(NULL)`` instead of a symbol looked up by the stream's name.
    """

    def __init__(self, stream: TextIO | None = None, file: str = os.devnull) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.file = file
        self._saved: int | None = None
        self._fd = -1

    def __enter__(self) -> QuietCStream:
        try:
            self._fd = self.stream.fileno()
        except (AttributeError, OSError, io.UnsupportedOperation):
            return self  # no file descriptor (e.g. a StringIO): nothing to silence at the C level
        self.stream.flush()
        self._saved = os.dup(self._fd)
        target = os.open(self.file, os.O_WRONLY)
        os.dup2(target, self._fd)
        os.close(target)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._saved is None:
            return
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).fflush(None)
        os.dup2(self._saved, self._fd)
        os.close(self._saved)
        self._saved = None


def _import_builder() -> Any:
    """Import bullet-safety-gym's env builder with the original standard streams, then patch its stream redirect."""
    current = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = sys.__stdout__ or sys.stdout, sys.__stderr__ or sys.stderr
    try:
        from bullet_safety_gym.envs import builder  # type: ignore[import-untyped]
    finally:
        sys.stdout, sys.stderr = current
    builder.RedirectStream = QuietCStream
    return builder


def make_bullet_env(render_mode: str | None = None, **kwargs: Any) -> gym.Env:
    """Build a Bullet-Safety-Gym environment (``EnvironmentBuilder(**kwargs)``) with a float cost and seeded resets.

    Args:
        render_mode: None, or ``"rgb_array"`` for ``render()`` to return camera images (``"human"`` opens
            pybullet's GUI window).
        **kwargs: The task's builder arguments (agent, task, obstacles, world), as registered.
    """
    builder = _import_builder()

    def build() -> gym.Env:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="overflow encountered in cast", category=RuntimeWarning)
            return builder.EnvironmentBuilder(**kwargs)

    return RenderMode(FloatCost(SeededReset(build(), rebuild=build)), render_mode)


def _package_specs() -> list[gym.envs.registration.EnvSpec]:
    return [spec for spec in gym.registry.values() if spec.entry_point in (ORIGINAL_ENTRY_POINT, ENTRY_POINT)]


def register() -> list[str]:
    """Register every Bullet-Safety-Gym task (importing ``bullet_safety_gym`` first); returns the ids.

    Idempotent: a second call finds the entries already pointing at :func:`make_bullet_env`.

    Raises:
        ImportError: If bullet-safety-gym is not installed (the message gives the install command).
    """
    try:
        import bullet_safety_gym  # noqa: F401  (registers the raw tasks)
    except ImportError as error:
        raise ImportError(
            f"{error}. Install the package with `pip install --no-deps bullet-safety-gym==1.4.0 pybullet==3.2.7` "
            "(--no-deps: its gymnasium pin conflicts with gymnasium 1.x, on which it runs unmodified)."
        ) from error
    ids = []
    for spec in _package_specs():
        if spec.id in EXCLUDED:
            continue
        if spec.entry_point != ENTRY_POINT:
            del gym.registry[spec.id]
            gym.register(
                id=spec.id,
                entry_point=ENTRY_POINT,
                max_episode_steps=spec.max_episode_steps,
                kwargs=dict(spec.kwargs),
            )
        ids.append(spec.id)
    return sorted(ids)


def task_ids() -> list[str]:
    """The ids this plugin provides (registering them if needed)."""
    return register()
