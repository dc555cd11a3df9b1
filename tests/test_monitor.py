"""SafeMonitor: the episode cost beside SB3's return and length; a missing cost fails at the first step."""

from __future__ import annotations

import csv

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.env_util import is_wrapped
from stable_baselines3.common.monitor import Monitor

from sb3_safe.common.costs import MissingCostError
from sb3_safe.common.monitor import SafeMonitor


def _run_episode(env: gym.Env, action: float) -> dict:
    env.reset(seed=0)
    while True:
        _, _, terminated, truncated, info = env.step(np.array([action], dtype=np.float32))
        if terminated or truncated:
            return info


def test_episode_info_has_cost_beside_return_and_length(toy_env_id, tmp_path):
    env = SafeMonitor(gym.make(toy_env_id), filename=str(tmp_path / "run"))
    episode = _run_episode(env, 0.5)["episode"]
    # Moving +0.5 from ~0 for 20 steps: positions 2.0..3.0 (inside the hazard) are visited on a few steps.
    positions = env.unwrapped.position
    assert positions > 5.0
    assert episode["l"] == 20
    assert episode["c"] == pytest.approx(sum(env.costs))
    assert 1.0 <= episode["c"] <= 3.0
    assert episode["r"] == pytest.approx(sum(env.rewards), abs=1e-6)
    assert env.get_episode_costs() == [episode["c"]]
    env.close()
    with open(tmp_path / "run.monitor.csv") as handle:
        handle.readline()  # JSON header
        rows = list(csv.DictReader(handle))
    assert float(rows[0]["c"]) == pytest.approx(episode["c"])
    assert is_wrapped(env, Monitor)  # SB3 will not wrap it again


def test_cost_free_episode_has_zero_cost(toy_env_id):
    env = SafeMonitor(gym.make(toy_env_id))
    assert _run_episode(env, -1.0)["episode"]["c"] == 0.0


def test_missing_cost_is_an_error_at_the_first_step():
    env = SafeMonitor(gym.make("ToyNoCost-v0"))
    env.reset(seed=0)
    with pytest.raises(MissingCostError, match=r"'ToyNoCost-v0' did not report a cost"):
        env.step(np.array([0.1], dtype=np.float32))


@pytest.mark.parametrize("env_id", ["SafetyPointGoal1-v0", "SafetyBallCircle-v0"])
def test_gymnasiums_env_checker_passes_on_made_envs(env_id):
    """SafeMonitor records its arguments, so gymnasium can rebuild the env from its spec (and check_env passes)."""
    import warnings

    from gymnasium.utils.env_checker import check_env

    import sb3_safe

    env = sb3_safe.make_env(env_id)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its advice (float64 bounds and the like) is not under test
        check_env(env, skip_render_check=True)
    assert any(wrapper.name == "SafeMonitor" for wrapper in env.spec.additional_wrappers)
