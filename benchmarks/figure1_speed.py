"""Figure-1 engine speed: the lockstep runner (sb3_safe/linear/batched.py) on 20 default synthetic instances.

Times a few hundred lockstep episodes of each method kind (SLUCB-QVI, the oracle LSVI-UCB, one penalised LSVI-UCB;
the four penalised methods cost the same), prints the time per episode-batch (one episode on every instance) and per
phase (regression updates, safe sets, backward pass, simulation), and extrapolates the full Figure-1 run
(6 methods x K = 10,000 episodes on 20 instances, one job per method) on 2 worker processes, scheduled in the
order the example submits them. Worker start-up (imports, building the envs: a few seconds) is not included.

    python benchmarks/figure1_speed.py                       # 300 episodes per method kind
    python benchmarks/figure1_speed.py --episodes 1000 --methods slucb
"""

from __future__ import annotations

import argparse
import heapq
import math
import time

import numpy as np

import sb3_safe
from sb3_safe.linear.batched import PHASES, BatchedSyntheticRun

FULL_EPISODES = 10_000
TARGET_SECONDS = 120.0
JOBS = ("slucb", "known", "penalized", "penalized", "penalized", "penalized")
"""The six Figure-1 methods by kind, in the example's submission order."""


def time_method(method: str, instances: int, episodes: int, c_beta: float) -> tuple[float, dict[str, float]]:
    """Seconds per episode-batch and per phase for ``episodes`` lockstep episodes (after 20 warm-up ones)."""
    envs = [sb3_safe.make_env("LinearMDPSynthetic-v0", seed=seed) for seed in range(instances)]
    bounds = np.array(
        [max(math.sqrt(5), float(np.linalg.norm(env.unwrapped.gamma_star, axis=1).max())) for env in envs]
    )
    penalty = 0.8 if method == "penalized" else None
    run = BatchedSyntheticRun(envs, method, c_beta=c_beta, penalty=penalty, safety_norm_bounds=bounds, seed=0)
    run.start(FULL_EPISODES)
    for _ in range(20):
        run.play_episode()
    run.phase_seconds = dict.fromkeys(PHASES, 0.0)
    start = time.perf_counter()
    for _ in range(episodes):
        run.play_episode()
    total = (time.perf_counter() - start) / episodes
    return total, {phase: seconds / episodes for phase, seconds in run.phase_seconds.items()}


def makespan(durations: list[float], workers: int) -> float:
    """Wall time of jobs handed in order to the first free worker (ProcessPoolExecutor.map with chunksize 1)."""
    free_at = [0.0] * workers
    for duration in durations:
        heapq.heappush(free_at, heapq.heappop(free_at) + duration)
    return max(free_at)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=300, help="timed lockstep episodes per method kind")
    parser.add_argument("--instances", type=int, default=20)
    parser.add_argument("--methods", nargs="+", default=["slucb", "known", "penalized"])
    parser.add_argument("--c-beta", type=float, default=0.01)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    print(f"{args.instances} instances, {args.episodes} timed episodes per method (milliseconds per episode-batch)")
    print(f"{'method':10s} {'total':>7s} " + " ".join(f"{phase:>11s}" for phase in PHASES))
    per_episode: dict[str, float] = {}
    for method in args.methods:
        total, phases = time_method(method, args.instances, args.episodes, args.c_beta)
        per_episode[method] = total
        print(f"{method:10s} {1e3 * total:7.2f} " + " ".join(f"{1e3 * phases[phase]:11.3f}" for phase in PHASES))

    fallback = float(np.mean(list(per_episode.values())))  # kinds not timed cost the mean of the timed ones
    durations = [per_episode.get(kind, fallback) * FULL_EPISODES for kind in JOBS]
    wall = makespan(durations, args.workers)
    print(
        f"\nfull Figure 1 ({len(JOBS)} methods x {args.instances} instances x K = {FULL_EPISODES}): "
        f"{sum(durations):.0f} CPU s, extrapolated wall {wall:.0f} s on {args.workers} workers "
        f"(target < {TARGET_SECONDS:.0f} s{'' if wall < TARGET_SECONDS else ': MISSED'})"
    )


if __name__ == "__main__":
    main()
