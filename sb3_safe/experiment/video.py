"""Headless video recording of a trained policy (``sb3-safe eval RUN_DIR --video out.mp4|out.gif``).

The policy is rolled out in a fresh ``render_mode="rgb_array"`` environment made by
:func:`sb3_safe.registry.make_env`; one frame is rendered after every reset and after every step, and the frames
are streamed into an ``.mp4`` (H.264 through the ffmpeg binary that imageio-ffmpeg ships) or a ``.gif`` (Pillow).

Headless rendering: importing this module sets ``MUJOCO_GL=egl`` unless ``MUJOCO_GL`` is already set. MuJoCo reads
the variable once, at its first import, so this module must be imported before anything imports ``mujoco``
(EGL works without a display, e.g. with Mesa's llvmpipe software renderer). Set ``MUJOCO_GL=osmesa`` (or
``glfw`` with a display) beforehand to choose another backend.

Example::

    from sb3_safe.experiment.video import record_video

    result = record_video(model, "SafetyPointGoal1-v0", "runs/cvpo/episode.mp4", n_episodes=2, seed=0)
    print(result.n_frames, result.returns, result.costs)
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from sb3_safe.common.files import atomic_path

# Headless GL before the first `import mujoco` (nothing above imports it); see the module docstring.
os.environ.setdefault("MUJOCO_GL", "egl")

SUPPORTED_VIDEO_SUFFIXES = (".mp4", ".gif")
"""File suffixes :func:`record_video` can write (case-insensitive)."""

DEFAULT_FPS = 30.0
"""Frame rate used when the environment's metadata has no ``render_fps``."""


class _Predictor(Protocol):
    def predict(self, observation: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]: ...


class _FrameWriter(Protocol):
    def append(self, frame: np.ndarray) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class VideoResult:
    """What :func:`record_video` wrote.

    Attributes:
        path: The video file.
        n_frames: Number of frames rendered and written (one per reset and one per step). A ``.gif`` may hold
            fewer distinct frames: Pillow merges identical consecutive frames into one longer frame.
        fps: Frame rate of the video.
        returns: Undiscounted return of each recorded episode (the last one partial if ``max_steps`` cut it).
        costs: Undiscounted cost (sum of ``info["cost"]``) of each recorded episode, likewise.
    """

    path: Path
    n_frames: int
    fps: float
    returns: list[float]
    costs: list[float]


def _check_suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_VIDEO_SUFFIXES:
        shown = f"'{path.suffix}'" if path.suffix else "no suffix"
        raise ValueError(
            f"Cannot write a video to '{path}': {shown} is not a supported video format. "
            f"Use one of {', '.join(SUPPORTED_VIDEO_SUFFIXES)}."
        )
    return suffix


def _cannot_render(env_id: str, reason: str) -> ValueError:
    return ValueError(
        f"Environment '{env_id}' cannot render frames for a video: {reason}. Recording needs an environment "
        "that supports render_mode='rgb_array' and whose render() returns an HxWx3 RGB image."
    )


def _as_frame(frame: Any, env_id: str, shape: tuple[int, ...] | None) -> np.ndarray:
    """Check one rendered frame and return it as a contiguous ``uint8`` HxWx3 array."""
    if frame is None:
        raise _cannot_render(env_id, "render() returned None")
    array = np.asarray(frame)
    if array.ndim != 3 or array.shape[2] != 3 or array.shape[0] == 0 or array.shape[1] == 0:
        raise _cannot_render(env_id, f"render() returned an array of shape {array.shape}, not HxWx3")
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise _cannot_render(env_id, f"render() returned an array of dtype {array.dtype}, not an image")
    if array.dtype != np.uint8:
        array = np.clip(array, 0, 255).astype(np.uint8)
    if shape is not None and array.shape != shape:
        raise ValueError(
            f"Environment '{env_id}' changed its frame size during recording ({shape} -> {array.shape}); "
            "a video needs frames of one size."
        )
    return np.ascontiguousarray(array)


def _pad_to_even(frame: np.ndarray) -> np.ndarray:
    """Pad a frame with black on the bottom/right to even height and width (H.264 in yuv420p needs them)."""
    pad_h, pad_w = frame.shape[0] % 2, frame.shape[1] % 2
    if not (pad_h or pad_w):
        return frame
    return np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)))


class _GifWriter:
    def __init__(self, path: Path, fps: float) -> None:
        import imageio.v3 as iio

        self._file = iio.imopen(path, "w", plugin="pillow", extension=".gif")
        self._duration_ms = 1000.0 / fps

    def append(self, frame: np.ndarray) -> None:
        # Pillow buffers the frames and encodes them on close; `duration` is in milliseconds per frame.
        self._file.write(frame, is_batch=False, duration=self._duration_ms, loop=0)

    def close(self) -> None:
        self._file.close()


class _Mp4Writer:
    def __init__(self, path: Path, fps: float) -> None:
        import imageio.v2 as iio2

        self._writer = iio2.get_writer(
            path,
            format="FFMPEG",
            mode="I",
            fps=fps,
            codec="libx264",
            pixelformat="yuv420p",  # plays everywhere; needs even sizes, hence _pad_to_even
            macro_block_size=1,  # no resizing by imageio: odd sizes are padded instead
            ffmpeg_log_level="error",
        )

    def append(self, frame: np.ndarray) -> None:
        self._writer.append_data(_pad_to_even(frame))

    def close(self) -> None:
        self._writer.close()


@contextlib.contextmanager
def _atomic_writer(path: Path, suffix: str, fps: float) -> Iterator[_FrameWriter]:
    """A frame writer on a temporary file beside ``path``, moved onto ``path`` only if everything succeeded."""
    with atomic_path(path) as temp_path:
        writer: _FrameWriter = _GifWriter(temp_path, fps) if suffix == ".gif" else _Mp4Writer(temp_path, fps)
        try:
            yield writer
        finally:
            writer.close()


def _make_render_env(env_id: str, env_kwargs: dict[str, Any] | None) -> Any:
    from sb3_safe.registry import make_env

    kwargs = dict(env_kwargs or {})
    if "render_mode" in kwargs and kwargs["render_mode"] != "rgb_array":
        raise ValueError(
            f"record_video renders with render_mode='rgb_array'; env_kwargs has render_mode={kwargs['render_mode']!r}."
        )
    kwargs["render_mode"] = "rgb_array"
    try:
        env = make_env(env_id, **kwargs)
    except TypeError as error:  # Gymnasium: the environment's constructor does not take render_mode
        if "render_mode" in str(error):
            raise _cannot_render(env_id, f"it does not accept render_mode='rgb_array' ({error})") from error
        raise
    render_mode = getattr(env, "render_mode", None)
    if render_mode != "rgb_array":
        env.close()
        raise _cannot_render(env_id, f"its render_mode is {render_mode!r}, not 'rgb_array'")
    return env


def record_video(
    model: _Predictor,
    env_id: str,
    path: str | os.PathLike[str],
    *,
    env_kwargs: dict[str, Any] | None = None,
    n_episodes: int = 1,
    deterministic: bool = True,
    fps: float | None = None,
    max_steps: int | None = None,
    seed: int | None = None,
    progress_bar: bool = False,
) -> VideoResult:
    """Roll out a policy in a rendering environment and write the frames to an ``.mp4`` or ``.gif`` file.

    One frame is rendered after each reset and after each step. The file is written atomically: frames go to a
    temporary file in the destination directory, which replaces ``path`` only once the video is complete.

    Args:
        model: Anything with SB3's ``predict(obs, deterministic=...) -> (action, state)``, e.g. a trained
            sb3-safe or Stable-Baselines3 model. It receives single, un-vectorised observations.
        env_id: Environment id, made with :func:`sb3_safe.registry.make_env` and ``render_mode="rgb_array"``.
        path: Output file; its suffix (``.mp4`` or ``.gif``) selects the format. Parent directories are created.
        env_kwargs: Extra keyword arguments for the environment (e.g. ``{"width": 320, "height": 240}``).
        n_episodes: Number of episodes to record, one after the other.
        deterministic: Passed to ``model.predict``.
        fps: Frame rate; defaults to the environment's ``metadata["render_fps"]``, else 30. A ``.gif`` stores frame
            durations in hundredths of a second, so its playback rate is approximate.
        max_steps: Upper bound on the number of frames; the recording stops early when it is reached.
        seed: Seed of the first reset (later resets continue the environment's random stream).
        progress_bar: Show a tqdm progress bar (over frames when ``max_steps`` is given, else over episodes).

    Returns:
        A :class:`VideoResult` with the path, the number of frames, the frame rate and each episode's return and
        cost. H.264 needs even frame sizes: an ``.mp4`` of odd-sized frames is padded with one black row/column.

    Raises:
        ValueError: If the suffix is not supported (checked before any environment is built), ``n_episodes`` or
            ``max_steps`` is not positive, ``fps`` is not positive, or the environment cannot render RGB frames.
        sb3_safe.common.costs.MissingCostError: If the environment does not report ``info["cost"]``.
    """
    from sb3_safe.common.costs import step_cost

    out_path = Path(path)
    suffix = _check_suffix(out_path)
    if int(n_episodes) != n_episodes or n_episodes < 1:
        raise ValueError(f"n_episodes must be an integer >= 1, got {n_episodes!r}.")
    if max_steps is not None and (int(max_steps) != max_steps or max_steps < 1):
        raise ValueError(f"max_steps must be None or an integer >= 1, got {max_steps!r}.")
    if fps is not None and not (np.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number, got {fps!r}.")

    env = _make_render_env(env_id, env_kwargs)
    returns: list[float] = []
    costs: list[float] = []
    n_frames = 0
    bar: Any = None
    try:
        frame_fps = float(fps if fps is not None else (env.metadata.get("render_fps") or DEFAULT_FPS))
        obs, _ = env.reset(seed=seed)
        try:
            first = env.render()
        except Exception as error:  # a render_mode the env claims but cannot honour
            raise _cannot_render(env_id, f"render() raised {type(error).__name__}: {error}") from error
        frame = _as_frame(first, env_id, None)
        shape = frame.shape
        if progress_bar:
            from tqdm.auto import tqdm

            bar = tqdm(total=max_steps or n_episodes, unit="frame" if max_steps else "episode", desc="video")

        with _atomic_writer(out_path, suffix, frame_fps) as writer:
            for episode in range(n_episodes):
                if episode > 0:
                    obs, _ = env.reset()
                    frame = _as_frame(env.render(), env_id, shape)
                writer.append(frame)
                n_frames += 1
                if bar is not None and max_steps:
                    bar.update(1)
                episode_return, episode_cost = 0.0, 0.0
                done = False
                while not done and (max_steps is None or n_frames < max_steps):
                    action, _ = model.predict(obs, deterministic=deterministic)
                    obs, reward, terminated, truncated, info = env.step(action)
                    episode_return += float(reward)
                    episode_cost += step_cost(info, env_id)
                    writer.append(_as_frame(env.render(), env_id, shape))
                    n_frames += 1
                    if bar is not None and max_steps:
                        bar.update(1)
                    done = bool(terminated or truncated)
                returns.append(episode_return)
                costs.append(episode_cost)
                if bar is not None and not max_steps:
                    bar.update(1)
                if max_steps is not None and n_frames >= max_steps:
                    break
    finally:
        if bar is not None:
            bar.close()
        env.close()
    return VideoResult(path=out_path, n_frames=n_frames, fps=frame_fps, returns=returns, costs=costs)
