"""Linear-MDP agents: time per episode against the number of episodes K, which must stay flat (total cost linear in K).

With Sherman-Morrison updates the statistics cost O(d^2) per sample however many episodes came before, so a run of K
episodes should take time proportional to K (docs/linear_agents.md, 'Regression statistics'); rebuilding the Gram
matrices from all past data each episode would make it quadratic. For each environment this trains LSVI-UCB (the
oracle mode, whose episodes rarely end early, so episode lengths stay comparable) for growing K, prints the time per
episode and per step, and fits the exponent b of total_time ~ K^b (target: b close to 1, well below 2).

    python benchmarks/linear_mdp.py            # FrozenLake10x10Safe-v0 and LinearMDPSynthetic-v0
    python benchmarks/linear_mdp.py --quick    # fewer, shorter runs
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import sb3_safe
from sb3_safe.linear import LSVIUCB

EPISODE_COUNTS = {
    "FrozenLake10x10Safe-v0": [4, 8, 16, 32],
    "LinearMDPSynthetic-v0": [500, 1000, 2000, 4000],
}


def time_run(env_id: str, episodes: int, seed: int) -> tuple[float, float, int]:
    """Seconds for ``episodes`` episodes of LSVI-UCB, the share spent in the backward passes, and the steps taken."""
    model = LSVIUCB(sb3_safe.make_env(env_id), safety="known", seed=seed)  # default instance; seed: the episodes
    horizon = model.spec.horizon
    plan_seconds = 0.0
    original_plan = model._plan

    def timed_plan() -> dict[str, float]:
        nonlocal plan_seconds
        start = time.perf_counter()
        logs = original_plan()
        plan_seconds += time.perf_counter() - start
        return logs

    model._plan = timed_plan  # type: ignore[method-assign]
    start = time.perf_counter()
    model.learn(episodes * horizon, log_interval=0)
    seconds = time.perf_counter() - start
    return seconds, plan_seconds / seconds, model.num_timesteps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="two short runs per environment")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for env_id, counts in EPISODE_COUNTS.items():
        counts = counts[:2] if args.quick else counts
        print(f"\n== LSVI-UCB on {env_id} ==")
        print(f"{'K':>6s} {'steps':>7s} {'total s':>9s} {'ms/episode':>11s} {'us/step':>8s} {'backward share':>15s}")
        totals = []
        for episodes in counts:
            seconds, plan_share, steps = time_run(env_id, episodes, args.seed)
            totals.append(seconds)
            print(
                f"{episodes:6d} {steps:7d} {seconds:9.2f} {1e3 * seconds / episodes:11.2f} "
                f"{1e6 * seconds / steps:8.1f} {plan_share:15.0%}"
            )
        exponent = np.polyfit(np.log(counts), np.log(totals), 1)[0]
        verdict = "linear" if exponent < 1.3 else "NOT linear"
        print(f"fitted exponent of total time ~ K^b: b = {exponent:.2f} ({verdict}; rebuilding would give ~2)")


if __name__ == "__main__":
    main()
