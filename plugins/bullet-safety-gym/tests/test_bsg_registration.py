"""The plugin registers Bullet-Safety-Gym's tasks with Gymnasium and sb3-safe discovers them."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import sb3_safe_bullet_safety_gym as plugin

import sb3_safe
from sb3_safe.registry import reload_plugins


def test_register_is_idempotent_and_covers_the_paper_tasks() -> None:
    first = plugin.register()
    assert plugin.register() == first == plugin.task_ids()
    assert len(first) == 18 and set(plugin.PAPER_TASKS) <= set(first)
    assert all(
        gym.registry[task].entry_point == "sb3_safe_bullet_safety_gym.registration:make_bullet_env" for task in first
    )


def test_sb3_safe_discovers_the_plugin() -> None:
    reload_plugins()
    providers = sb3_safe.env_providers()
    assert set(plugin.PAPER_TASKS) <= set(sb3_safe.list_envs())
    assert providers["SafetyCarCircle-v0"].startswith("bullet_safety_gym")
    assert providers["SafetyCarCircle1-v0"].startswith("safety_gymnasium")  # no clash with safety-gymnasium's ids


def test_namespaced_make_for_plain_gymnasium_users() -> None:
    env = gym.make("sb3_safe_bullet_safety_gym:SafetyBallCircle-v0")
    env.reset(seed=0)
    _, _, _, _, info = env.step(env.action_space.sample())
    assert isinstance(info["cost"], float)
    env.close()


def test_make_env_reports_the_episode_cost() -> None:
    env = sb3_safe.make_env("SafetyBallRun-v0")
    env.reset(seed=1)
    total, done, info = 0.0, False, {}
    while not done:
        _, _, terminated, truncated, info = env.step(env.action_space.sample())
        total += info["cost"]
        done = terminated or truncated
    episode = info["episode"]
    assert episode["l"] == 100 and episode["c"] == total
    env.close()


def test_envs_build_whatever_sys_stdout_is(tmp_path, monkeypatch) -> None:
    """bullet-safety-gym's own stream redirect fails unless sys.stdout is the original (Ray workers, notebooks)."""
    import io

    with open(tmp_path / "worker.out", "w") as log_file:  # a Ray worker's stdout: a file with a path as its name
        for stream in (log_file, io.StringIO()):
            monkeypatch.setattr("sys.stdout", stream)
            env = gym.make("SafetyCarRun-v0")
            env.reset(seed=0)
            env.close()
    from sb3_safe_bullet_safety_gym.registration import _import_builder

    assert _import_builder().RedirectStream is plugin.QuietCStream


def test_quiet_c_stream_silences_the_file_descriptor(tmp_path) -> None:
    import os

    out = tmp_path / "out.txt"
    with open(out, "w") as stream:
        stream.write("before\n")
        with plugin.QuietCStream(stream):
            os.write(stream.fileno(), b"hidden\n")  # C-level writes go to /dev/null
        stream.write("after\n")
    assert out.read_text() == "before\nafter\n"


def test_rgb_array_rendering_for_videos() -> None:
    env = gym.make("SafetyBallCircle-v0", render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert env.render_mode == "rgb_array" and env.metadata["render_fps"] == 10  # 1/60 s physics steps x 6
    assert frame.ndim == 3 and frame.shape[2] == 3 and frame.dtype == np.uint8 and frame.std() > 0
    env.close()
    plain = gym.make("SafetyBallCircle-v0")
    plain.reset(seed=0)
    assert plain.render() is None  # no render_mode: nothing rendered
    plain.close()
