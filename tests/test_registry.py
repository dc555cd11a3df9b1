"""Plugin discovery through real entry points (a throwaway dist-info on sys.path), and its errors."""

from __future__ import annotations

import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

import sb3_safe
from sb3_safe.common.costs import MissingCostError
from sb3_safe.common.monitor import SafeMonitor
from sb3_safe.registry import PluginWarning, reload_plugins


def _write_distribution(root: Path, name: str, entry_points: str, module: str, source: str) -> None:
    dist_info = root / f"{name}-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    (root / f"{module}.py").write_text(textwrap.dedent(source))


@pytest.fixture
def plugins_on_path(tmp_path, monkeypatch):
    """Two throwaway plugins: one that registers a toy env, one whose register() raises."""
    tests_dir = Path(__file__).parent
    _write_distribution(
        tmp_path,
        "toy-plugin",
        """
        [sb3_safe.envs]
        toy = toy_plugin:register
        [sb3_safe.algorithms]
        ToyAlgo = toy_plugin:ToyAlgo
        BrokenAlgo = toy_plugin_missing:Nothing
        """,
        "toy_plugin",
        f"""
        import sys
        sys.path.insert(0, {str(tests_dir)!r})
        import gymnasium as gym
        from toy_env import ToyConstrainedEnv

        class ToyAlgo:
            pass

        def register():
            if "PluginToy-v0" not in gym.registry:
                gym.register("PluginToy-v0", entry_point=ToyConstrainedEnv, max_episode_steps=20)
            return ["PluginToy-v0"]
        """,
    )
    _write_distribution(
        tmp_path,
        "broken-plugin",
        "[sb3_safe.envs]\nbroken = broken_plugin:register\n",
        "broken_plugin",
        "def register():\n    raise RuntimeError('simulated import failure')\n",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    reload_plugins()
    yield
    reload_plugins()


def test_discovers_plugin_envs_and_warns_about_the_broken_one(plugins_on_path):
    with pytest.warns(
        PluginWarning, match=r"plugin 'broken \(broken-plugin\)'.*simulated import failure.*other plugins"
    ):
        env_ids = sb3_safe.list_envs()
    assert "PluginToy-v0" in env_ids
    assert sb3_safe.env_providers()["PluginToy-v0"] == "toy (toy-plugin)"
    env = sb3_safe.make_env("PluginToy-v0")
    assert isinstance(env, SafeMonitor)
    env.reset(seed=0)
    assert "cost" in env.step(np.array([0.5], dtype=np.float32))[4]


def test_algorithm_entry_points(plugins_on_path):
    assert {"ToyAlgo", "BrokenAlgo", "UnconstrainedSAC"} <= set(sb3_safe.list_algorithms())
    assert sb3_safe.get_algorithm("ToyAlgo").__name__ == "ToyAlgo"
    assert sb3_safe.get_algorithm("UnconstrainedSAC") is sb3_safe.UnconstrainedSAC
    with pytest.warns(PluginWarning, match="BrokenAlgo"), pytest.raises(ImportError, match="could not be imported"):
        sb3_safe.get_algorithm("BrokenAlgo")
    with pytest.raises(
        sb3_safe.UnknownAlgorithmError,
        match=r"(?s)Unknown algorithm 'ToyAlgoo'.*Did you mean: ToyAlgo.*toy-plugin: BrokenAlgo, ToyAlgo",
    ):
        sb3_safe.get_algorithm("ToyAlgoo")


def test_unknown_env_lists_close_matches_and_providers(plugins_on_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginWarning)
        with pytest.raises(sb3_safe.UnknownEnvironmentError) as error:
            sb3_safe.make_env("PluginToy-v1")
    message = str(error.value)
    assert "Unknown environment 'PluginToy-v1'" in message
    assert "Did you mean: PluginToy-v0" in message
    assert "toy (toy-plugin): PluginToy-v0" in message
    assert "broken (broken-plugin) failed to load" in message
    assert "pip install" in message


def test_gymnasium_env_without_cost_fails_at_first_step():
    env = sb3_safe.make_env("Pendulum-v1")
    env.reset(seed=0)
    with pytest.raises(MissingCostError, match=r"'Pendulum-v1' did not report a cost"):
        env.step(env.action_space.sample())
