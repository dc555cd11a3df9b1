"""CVPO against the Lagrangian baselines (SAC-Lag, TD3-Lag, PPO-Lag) on one task, for a given budget and seeds.

Each (algorithm, seed) trains with its task family's default hyperparameters (``sb3_safe/hyperparams/*.yml``) and
the same cost limit, in parallel worker processes. Prints a table of final return, final episode cost, training cost
rate and episodes over the limit, and writes the reward and cost curves (mean ± std over seeds, with the cost limit
line) to one PNG and every training episode to a CSV.

    python benchmarks/compare_safe.py                                    # SafetyPointGoal1-v0, 3 seeds, 100k steps
    python benchmarks/compare_safe.py --timesteps 5000 --seeds 0 --algorithms CVPO PPOLag
"""

from __future__ import annotations

import argparse
import csv
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ALGORITHMS = {"CVPO": "cvpo", "SACLag": "sac_lag", "TD3Lag": "td3_lag", "PPOLag": "ppo_lag"}
N_BINS = 10


def train_one(algorithm: str, env_id: str, seed: int, timesteps: int, n_envs: int, cost_limit: float) -> dict:
    """Train one (algorithm, seed); return its episode history and safety counters."""
    import torch

    import sb3_safe
    from sb3_safe.common.callbacks import EpisodeHistoryCallback
    from sb3_safe.hyperparams import load_hyperparams, split_run_settings

    torch.set_num_threads(1)
    hyperparams, _ = split_run_settings(load_hyperparams(ALGORITHMS[algorithm], env_id))
    hyperparams["cost_limit"] = cost_limit
    env = sb3_safe.make_vec_env(env_id, n_envs=n_envs, seed=seed, env_kwargs={"fast_reset": True})
    model = sb3_safe.get_algorithm(algorithm)(env=env, seed=seed, **hyperparams)
    history = EpisodeHistoryCallback()
    start = time.perf_counter()
    model.learn(timesteps, callback=history)
    return {
        "algorithm": algorithm,
        "seed": seed,
        "history": history.history,
        "cost_rate": model.cost_rate,
        "episodes_over_limit": model.episodes_over_limit,
        "seconds": time.perf_counter() - start,
    }


def _last_finite(values: np.ndarray) -> float:
    """The last bin that saw a finished episode (NaN if none did)."""
    finite = np.asarray(values)[np.isfinite(values)]
    return float(finite[-1]) if len(finite) else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="SafetyPointGoal1-v0")
    parser.add_argument("--algorithms", nargs="+", default=list(ALGORITHMS), choices=list(ALGORITHMS))
    parser.add_argument("--timesteps", type=int, default=100_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n-envs", type=int, default=4)
    parser.add_argument("--cost-limit", type=float, default=25.0)
    parser.add_argument("--workers", type=int, default=2, help="runs at once (one core each)")
    parser.add_argument("--out", type=Path, default=Path("runs/compare_safe"))
    args = parser.parse_args()
    from sb3_safe.common.plotting import binned_curves, plot_seed_curves

    args.out.mkdir(parents=True, exist_ok=True)
    jobs = [(algorithm, seed) for algorithm in args.algorithms for seed in args.seeds]
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        futures = [
            pool.submit(train_one, algorithm, args.env, seed, args.timesteps, args.n_envs, args.cost_limit)
            for algorithm, seed in jobs
        ]
        runs = [future.result() for future in futures]
    print(f"{args.env}: {len(args.seeds)} seed(s) x {args.timesteps} steps, limit {args.cost_limit:g}")
    print(f"trained in {time.perf_counter() - start:.0f} s\n")

    curves = {}
    header = (
        f"{'algorithm':10s} {'final return':>14s} {'final cost':>14s} {'cost rate':>10s} {'over limit':>11s} {'s':>6s}"
    )
    print(header)
    for algorithm in args.algorithms:
        mine = [run for run in runs if run["algorithm"] == algorithm]
        curves[algorithm] = binned_curves([run["history"] for run in mine], n_bins=N_BINS, total_steps=args.timesteps)
        final_return, final_cost = (_last_finite(curves[algorithm][f"{key}_mean"]) for key in ("return", "cost"))
        episodes = sum(len(run["history"]) for run in mine)
        print(
            f"{algorithm:10s} {final_return:14.2f} {final_cost:14.2f} {np.mean([r['cost_rate'] for r in mine]):10.4f} "
            f"{sum(r['episodes_over_limit'] for r in mine):5d}/{episodes:<5d} {sum(r['seconds'] for r in mine):6.0f}"
        )
    with open(args.out / "compare.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["algorithm", "seed", "timestep", "return", "cost"])
        for run in runs:
            for row in run["history"]:
                writer.writerow(
                    [run["algorithm"], run["seed"], row["timestep"], row["return"], row["cost"], row["length"]]
                )
    png = plot_seed_curves(curves, args.out / "compare.png", cost_limit=args.cost_limit, title=args.env)
    print(f"\nwrote {args.out / 'compare.csv'} and {png}")


if __name__ == "__main__":
    main()
