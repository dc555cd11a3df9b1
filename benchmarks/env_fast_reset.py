"""Env throughput with and without ``fast_reset`` on SafetyPointGoal1-v0, resetting every 1000 steps.

Usage::

    python benchmarks/env_fast_reset.py --steps 20000

Both variants run in the same process, one after the other, with the same seed and random actions; the ratio of
their steps/s is printed last.
"""

from __future__ import annotations

import argparse
import time

import gymnasium
import numpy as np

import sb3_safe_safety_gymnasium  # noqa: F401  (registers the tasks)

ENV_ID = "SafetyPointGoal1-v0"


def measure(fast_reset: bool, steps: int, seed: int) -> float:
    """Step one env ``steps`` times with random actions (episodes of 1000 steps) and return steps/s.

    Args:
        fast_reset: build worlds with cached assets and a built-in skybox.
        steps: number of env steps to time (resets included).
        seed: seed of the env and of the actions.

    Returns:
        Env steps per second, resets included.
    """
    env = gymnasium.make(ENV_ID, fast_reset=fast_reset)
    space = env.action_space
    assert isinstance(space, gymnasium.spaces.Box)
    actions = np.random.default_rng(seed).uniform(space.low, space.high, size=(steps, *space.shape))
    env.reset(seed=seed)  # the first reset compiles the world twice; keep it out of the timing
    start = time.perf_counter()
    for action in actions:
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
    elapsed = time.perf_counter() - start
    env.close()
    return steps / elapsed


def main() -> None:
    """Parse the options, run both variants and print steps/s and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10_000, help="env steps per variant (default: 10000)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    results = {}
    for fast_reset in (False, True):
        results[fast_reset] = measure(fast_reset, args.steps, args.seed)
        print(f"{ENV_ID} fast_reset={fast_reset!s:5}: {results[fast_reset]:8.0f} steps/s ({args.steps} steps)")
    print(f"ratio fast_reset/default: {results[True] / results[False]:.2f}x")


if __name__ == "__main__":
    main()
