"""Video recording of a policy on a real safety-gymnasium task: files read back, fields, errors, atomic write."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import imageio.v3 as iio
import numpy as np
import pytest
from gymnasium import spaces

from sb3_safe.experiment.video import SUPPORTED_VIDEO_SUFFIXES, VideoResult, record_video

TASK = "SafetyPointGoal1-v0"
SMALL = {"fast_reset": True, "width": 65, "height": 49}  # odd sizes on purpose (H.264 needs even ones)


class RandomPolicy:
    """SB3's predict interface on top of ``action_space.sample()``."""

    def __init__(self, action_space: spaces.Space, seed: int = 0) -> None:
        self.action_space = action_space
        self.action_space.seed(seed)
        self.calls: list[bool] = []

    def predict(self, observation: Any, deterministic: bool = False) -> tuple[Any, None]:
        assert self.action_space.contains(self.action_space.sample())
        self.calls.append(deterministic)
        return self.action_space.sample(), None


@pytest.fixture(scope="module")
def point_action_space() -> spaces.Space:
    from sb3_safe.registry import make_env

    env = make_env(TASK, fast_reset=True)
    try:
        return env.action_space
    finally:
        env.close()


def _read_frames(path: Path) -> np.ndarray:
    return np.stack(list(iio.imiter(path)))


def _no_leftovers(directory: Path, keep: set[str]) -> None:
    assert {p.name for p in directory.iterdir()} == keep


@pytest.mark.parametrize("suffix", SUPPORTED_VIDEO_SUFFIXES)
def test_random_policy_video_reads_back(tmp_path: Path, point_action_space: spaces.Space, suffix: str) -> None:
    policy = RandomPolicy(point_action_space)
    path = tmp_path / "nested" / "dir" / f"episode{suffix}"
    result = record_video(policy, TASK, path, env_kwargs=SMALL, max_steps=30, seed=1, fps=20)

    assert isinstance(result, VideoResult)
    assert result.path == path
    assert result.n_frames == 30
    assert result.fps == 20.0
    assert len(policy.calls) == 29 and all(policy.calls)  # one frame after reset, one per step; deterministic
    assert len(result.returns) == len(result.costs) == 1  # 1000-step episode cut by max_steps
    assert all(isinstance(c, float) and c >= 0.0 for c in result.costs)
    assert all(isinstance(r, float) and np.isfinite(r) for r in result.returns)
    assert path.is_file() and path.stat().st_size > 0
    _no_leftovers(path.parent, {path.name})

    frames = _read_frames(path)
    assert frames.dtype == np.uint8
    assert frames.shape[0] == result.n_frames
    # mp4 pads odd sizes to even ones with a black bottom row / right column; gif keeps the size
    expected_hw = (50, 66) if suffix == ".mp4" else (49, 65)
    assert frames.shape[1:] == (*expected_hw, 3)
    assert frames.std() > 1.0  # an actual rendered scene, not a blank image


def test_real_model_multiple_episodes_and_default_fps(tmp_path: Path) -> None:
    from stable_baselines3 import SAC

    from sb3_safe.registry import make_env

    env = make_env(TASK, fast_reset=True, max_episode_steps=12)
    model = SAC("MlpPolicy", env, learning_starts=0, buffer_size=100, policy_kwargs={"net_arch": [16]}, device="cpu")
    env.close()
    path = tmp_path / "sac.mp4"
    result = record_video(
        model, TASK, path, env_kwargs={"fast_reset": True, "max_episode_steps": 12}, n_episodes=2, seed=0
    )

    assert result.fps == 30.0  # safety-gymnasium's metadata["render_fps"]
    assert result.n_frames == 2 * (12 + 1)  # two full (truncated) episodes: reset frame + one per step
    assert len(result.returns) == len(result.costs) == 2
    assert all(isinstance(c, float) and c >= 0.0 for c in result.costs)
    frames = _read_frames(path)
    assert frames.shape == (result.n_frames, 256, 256, 3)  # the task's default render size
    meta = iio.immeta(path)
    assert meta["codec"] == "h264" and meta["fps"] == pytest.approx(30.0)
    _no_leftovers(tmp_path, {"sac.mp4"})


def test_deterministic_same_seed_same_returns(tmp_path: Path, point_action_space: spaces.Space) -> None:
    results = [
        record_video(RandomPolicy(point_action_space, seed=3), TASK, tmp_path / f"v{i}.gif", env_kwargs=SMALL,
                     max_steps=15, seed=7)
        for i in range(2)
    ]  # fmt: skip
    assert results[0].returns == results[1].returns
    assert results[0].costs == results[1].costs


def test_gif_frame_duration_matches_fps(tmp_path: Path, point_action_space: spaces.Space) -> None:
    path = tmp_path / "clip.gif"
    record_video(RandomPolicy(point_action_space), TASK, path, env_kwargs=SMALL, max_steps=5, fps=10)
    assert iio.immeta(path, index=0, plugin="pillow")["duration"] == pytest.approx(100, abs=10)  # ms per frame


@pytest.mark.parametrize("name", ["out.avi", "out.webm", "out", "out.mp4.txt"])
def test_bad_suffix_is_rejected_before_anything(tmp_path: Path, name: str) -> None:
    class NoPredict:
        def predict(self, *args: Any, **kwargs: Any) -> tuple[Any, None]:
            raise AssertionError("no rollout may start")

    with pytest.raises(ValueError, match=r"\.mp4.*\.gif"):
        # an unknown env id proves the suffix is checked before any environment is built
        record_video(NoPredict(), "NoSuchEnv-v0", tmp_path / "sub" / name)
    assert list(tmp_path.iterdir()) == []


def test_bad_n_episodes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="n_episodes"):
        record_video(RandomPolicy(spaces.Discrete(2)), TASK, tmp_path / "v.mp4", n_episodes=0)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.filterwarnings("ignore:.*render_mode")  # Gymnasium warns that rgb_array is not among its modes
def test_env_without_render_mode_support(tmp_path: Path, toy_env_id: str) -> None:
    policy = RandomPolicy(spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32))
    with pytest.raises(ValueError, match=rf"'{toy_env_id}' cannot render frames.*render_mode"):
        record_video(policy, toy_env_id, tmp_path / "toy.gif")
    assert list(tmp_path.iterdir()) == []


class _FixedFrameEnv(gym.Env):
    """Accepts render_mode='rgb_array' and renders the given ``frame`` (nothing usable by default); cost 1 a step."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 5}  # noqa: RUF012

    def __init__(self, render_mode: str | None = None, frame: Any = None) -> None:
        self.render_mode = render_mode
        self.frame = frame
        self.observation_space = spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        return np.zeros(1, dtype=np.float32), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        return np.zeros(1, dtype=np.float32), 0.5, False, False, {"cost": 1.0}  # TimeLimit truncates

    def render(self) -> Any:
        return self.frame


@pytest.mark.filterwarnings("ignore:.*RGB-array rendering should return")  # Gymnasium's passive checker agrees
@pytest.mark.parametrize(
    ("frame", "reason"),
    [(None, "returned None"), (np.zeros((8, 8), dtype=np.uint8), "not HxWx3"), ("text", "not HxWx3")],
)
def test_env_whose_render_gives_no_rgb_frame(tmp_path: Path, frame: Any, reason: str) -> None:
    env_id = "VideoTestNoFrames-v0"
    if env_id not in gym.registry:
        gym.register(env_id, entry_point=_FixedFrameEnv, max_episode_steps=3)
    policy = RandomPolicy(spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32))
    with pytest.raises(ValueError, match=rf"'{env_id}' cannot render frames.*{reason}"):
        record_video(policy, env_id, tmp_path / "v.mp4", env_kwargs={"frame": frame})
    assert list(tmp_path.iterdir()) == []


def test_renderable_toy_env_multiple_episodes_and_overwrite(tmp_path: Path) -> None:
    env_id = "VideoTestFrames-v0"
    if env_id not in gym.registry:
        gym.register(env_id, entry_point=_FixedFrameEnv, max_episode_steps=3)
    path = tmp_path / "v.gif"
    path.write_bytes(b"old")
    frame = np.full((6, 4, 3), 200, dtype=np.uint8)
    result = record_video(
        RandomPolicy(spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)),
        env_id,
        path,
        env_kwargs={"frame": frame},
        n_episodes=3,
    )
    assert result.fps == 5.0  # the env's render_fps
    assert result.n_frames == 3 * (1 + 3)  # each episode: reset frame + 3 steps (then truncated)
    assert result.returns == [1.5, 1.5, 1.5] and result.costs == [3.0, 3.0, 3.0]
    assert path.read_bytes()[:3] == b"GIF"  # the old file was replaced
    _no_leftovers(tmp_path, {"v.gif"})


@pytest.mark.parametrize("suffix", SUPPORTED_VIDEO_SUFFIXES)
def test_failure_mid_recording_leaves_no_file(tmp_path: Path, point_action_space: spaces.Space, suffix: str) -> None:
    class Crashes(RandomPolicy):
        def predict(self, observation: Any, deterministic: bool = False) -> tuple[Any, None]:
            if len(self.calls) == 3:
                raise RuntimeError("policy crashed")
            return super().predict(observation, deterministic)

    path = tmp_path / f"v{suffix}"
    path.write_bytes(b"previous video")
    with pytest.raises(RuntimeError, match="policy crashed"):
        record_video(Crashes(point_action_space), TASK, path, env_kwargs=SMALL, max_steps=20)
    assert path.read_bytes() == b"previous video"  # untouched: the new video was never moved into place
    _no_leftovers(tmp_path, {path.name})  # and its temporary file is gone


def test_write_is_atomic_replace_from_same_directory(
    tmp_path: Path, point_action_space: spaces.Space, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sb3_safe.experiment.video as video

    moves: list[tuple[Path, Path]] = []
    real_replace = video.os.replace

    def spy(src: Any, dst: Any) -> None:
        moves.append((Path(src), Path(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(video.os, "replace", spy)
    path = tmp_path / "out" / "clip.gif"
    record_video(RandomPolicy(point_action_space), TASK, path, env_kwargs=SMALL, max_steps=4)
    assert len(moves) == 1
    src, dst = moves[0]
    assert dst == path and src != path
    assert src.parent == path.parent and src.suffix == ".gif"  # same filesystem, same format hint
    _no_leftovers(path.parent, {"clip.gif"})
