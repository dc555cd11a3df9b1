"""CVPO learning curves: a short multi-seed run that should show the cost driven under the limit.

Trains CVPO with the task family's default hyperparameters on one task for several seeds (in parallel worker
processes), then prints mean episode reward and cost per step bin against the cost limit, and writes a CSV and a
PNG of the curves (mean ± std over seeds).

    python benchmarks/cvpo_learning.py                           # SafetyPointCircle1-v0, 3 seeds, 100k steps
    python benchmarks/cvpo_learning.py --timesteps 20000 --seeds 0
"""

from __future__ import annotations

import argparse
import csv
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

N_BINS = 10


def train_one(env_id: str, seed: int, timesteps: int, n_envs: int) -> list[dict[str, float]]:
    """Train one seed and return its training-episode history."""
    import torch

    import sb3_safe
    from sb3_safe.common.callbacks import EpisodeHistoryCallback
    from sb3_safe.hyperparams import load_hyperparams, split_run_settings

    torch.set_num_threads(1)
    hyperparams, _ = split_run_settings(load_hyperparams("cvpo", env_id))
    env = sb3_safe.make_vec_env(env_id, n_envs=n_envs, seed=seed, env_kwargs={"fast_reset": True})
    model = sb3_safe.CVPO(env=env, seed=seed, **hyperparams)
    history = EpisodeHistoryCallback()
    model.learn(timesteps, callback=history)
    return history.history


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="SafetyPointCircle1-v0")
    parser.add_argument("--timesteps", type=int, default=100_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n-envs", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2, help="seeds trained at once (one core each)")
    parser.add_argument("--out", type=Path, default=Path("runs/cvpo_learning"))
    args = parser.parse_args()

    from sb3_safe.common.plotting import binned_curves, plot_seed_curves
    from sb3_safe.hyperparams import load_hyperparams

    cost_limit = float(load_hyperparams("cvpo", args.env)["cost_limit"])
    args.out.mkdir(parents=True, exist_ok=True)
    print(
        f"CVPO on {args.env}: seeds {args.seeds}, {args.timesteps} steps each, {args.n_envs} envs, limit {cost_limit}"
    )
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        futures = [pool.submit(train_one, args.env, seed, args.timesteps, args.n_envs) for seed in args.seeds]
        histories = [future.result() for future in futures]
    print(f"trained in {time.perf_counter() - start:.0f} s")

    curves = binned_curves(histories, n_bins=N_BINS, total_steps=args.timesteps)
    print(f"\n{'steps':>9}  {'reward':>16}  {'cost':>16}  (limit {cost_limit:g})")
    for i, steps in enumerate(curves["steps"]):
        print(
            f"{steps:9.0f}  {curves['return_mean'][i]:8.2f} ± {curves['return_std'][i]:5.2f}  "
            f"{curves['cost_mean'][i]:8.2f} ± {curves['cost_std'][i]:5.2f}"
            f"{'  over' if curves['cost_mean'][i] > cost_limit else ''}"
        )
    final_cost = curves["cost_mean"][-1]
    verdict = "under" if np.isfinite(final_cost) and final_cost <= cost_limit else "NOT under"
    print(f"final mean episode cost {final_cost:.2f}: {verdict} the limit {cost_limit:g}")

    with open(args.out / "curves.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["seed", "timestep", "return", "cost", "length"])
        for seed, history in zip(args.seeds, histories, strict=True):
            writer.writerows([seed, row["timestep"], row["return"], row["cost"], row["length"]] for row in history)
    png = plot_seed_curves(
        {"CVPO": curves}, args.out / "curves.png", cost_limit=cost_limit, title=f"CVPO on {args.env}"
    )
    print(f"wrote {args.out / 'curves.csv'} and {png}")


if __name__ == "__main__":
    main()
