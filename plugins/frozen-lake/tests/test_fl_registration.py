"""Registration through sb3-safe's plugin registry, SB3's check_env, and the linear-MDP protocol surface."""

from __future__ import annotations

import warnings

import gymnasium
import numpy as np
import pytest
from stable_baselines3.common.env_checker import check_env

import sb3_safe
import sb3_safe_frozen_lake
from sb3_safe.common.monitor import SafeMonitor
from sb3_safe_frozen_lake import (
    FiniteActionLinearMDP,
    FrozenLakeSafeEnv,
    LinearMDP,
    LinearMDPSyntheticEnv,
    StarConvexLinearMDP,
)

IDS = ["FrozenLake10x10Safe-v0", "LinearMDPSynthetic-v0"]
UNAVOIDABLE_BOX_WARNINGS = ("symmetric and normalized Box action space", "dtype float64")
"""The synthetic action is a float64 feature point in [0, 1]^d: SB3's two Box recommendations."""


def test_register_is_idempotent_and_returns_the_sorted_ids():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # re-registering must not warn about overriding
        assert sb3_safe_frozen_lake.register() == IDS
        assert sb3_safe_frozen_lake.register() == IDS
    for env_id in IDS:
        spec = gymnasium.spec(env_id)
        assert spec.max_episode_steps is None and spec.entry_point.startswith("sb3_safe_frozen_lake.")


def test_ids_are_listed_and_made_through_sb3_safe():
    assert set(IDS) <= set(sb3_safe.list_envs())
    assert sb3_safe.env_providers()["FrozenLake10x10Safe-v0"] == "frozen_lake (sb3-safe-frozen-lake)"
    lake = sb3_safe.make_env("FrozenLake10x10Safe-v0", horizon=50)
    assert isinstance(lake, SafeMonitor) and isinstance(lake.unwrapped, FrozenLakeSafeEnv)
    assert lake.unwrapped.horizon == 50
    synthetic = sb3_safe.make_env("LinearMDPSynthetic-v0", seed=3)
    assert isinstance(synthetic.unwrapped, LinearMDPSyntheticEnv) and synthetic.unwrapped.instance_seed == 3
    np.testing.assert_array_equal(synthetic.unwrapped.gamma_star, LinearMDPSyntheticEnv(seed=3).gamma_star)


def test_protocol_types():
    lake, synthetic = FrozenLakeSafeEnv(), LinearMDPSyntheticEnv()
    assert isinstance(lake, FiniteActionLinearMDP) and isinstance(lake, LinearMDP)
    assert isinstance(synthetic, StarConvexLinearMDP) and not isinstance(synthetic, FiniteActionLinearMDP)
    assert not isinstance(lake, StarConvexLinearMDP)
    assert isinstance(lake.safe_action(0), int) and isinstance(lake.safe_cost(0, 0), float)
    assert synthetic.safe_action(0).shape == (5,) and isinstance(synthetic.safe_cost(0, 2), float)


@pytest.mark.parametrize("env_id", IDS)
def test_sb3_check_env_passes(env_id):
    env = sb3_safe.make_env(env_id, monitor=False)
    for candidate in (env, env.unwrapped):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            check_env(candidate)
        messages = [str(warning.message) for warning in caught]
        allowed = UNAVOIDABLE_BOX_WARNINGS if env_id == "LinearMDPSynthetic-v0" else ()
        unexpected = [m for m in messages if not any(fragment in m for fragment in allowed)]
        assert unexpected == []


@pytest.mark.parametrize("env_id", IDS)
def test_episode_through_the_monitor(env_id):
    env = sb3_safe.make_env(env_id, horizon=30)
    obs, _ = env.reset(seed=0)
    done, steps = False, 0
    while not done:
        obs, _, terminated, truncated, info = env.step(env.action_space.sample())
        assert {"cost", "true_cost", "is_success", "failed"} <= set(info)
        done, steps = terminated or truncated, steps + 1
    assert "episode" in info and info["episode"]["l"] == steps
    if not terminated:
        assert steps == 30 and int(obs["step"]) == 30


@pytest.mark.parametrize("env_id", IDS)
def test_ansi_rendering_through_make_env_does_not_warn(env_id):
    env = sb3_safe.make_env(env_id, render_mode="ansi")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        env.reset(seed=0)
        text = env.render()
    assert isinstance(text, str) and text
