"""CVPO on the paper's own Bullet-Safety-Gym tasks, against FSRL's published CVPO curves.

Trains CVPO with the ``bullet`` family's defaults (``sb3_safe/hyperparams/cvpo.yml``: FSRL's Bullet settings,
cost limit 10, gamma 0.97, n-step 2, K = 16) on SafetyCarCircle-v0 and SafetyBallCircle-v0 for a budget given on
the command line, 3 seeds each, through ``sb3-safe``'s benchmark runner (one run directory per seed). It prints
training-episode reward and cost (mean ± std over seeds) at evenly spaced step counts, the cost limit, and FSRL's
reference values where this run reaches the step count they were read at (read off FSRL's benchmark figures,
±10%: CarCircle ≈430 reward, cost ≈5-8 at 1.5M steps; BallCircle ≈690 / ≈9 at 0.8M), and writes a PNG with the
references marked.

    python benchmarks/cvpo_bullet.py                        # short run: 10k steps per seed, locally (~4 min)
    python benchmarks/cvpo_bullet.py --timesteps 1500000 --backend ray --out runs/cvpo_bullet_full

The default budget shows the machinery and the early learning curve, not FSRL's final numbers, which need
0.8-1.5M steps per seed (hours per seed on a CPU).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Reference:
    """FSRL's CVPO result read off its published curves (training episodes, 3 seeds, approximate ±10%)."""

    steps: int
    reward: float
    cost: str


FSRL = {
    "SafetyCarCircle-v0": Reference(1_500_000, 430.0, "5-8"),
    "SafetyBallCircle-v0": Reference(800_000, 690.0, "9"),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=list(FSRL), help="Bullet-Safety-Gym task ids")
    parser.add_argument("--timesteps", type=int, default=10_000, help="training budget per seed")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds")
    parser.add_argument("--n-envs", type=int, default=None, help="parallel envs per run (default: the YAML's 10)")
    parser.add_argument("--points", type=int, default=5, help="step counts in the printed table")
    parser.add_argument("--backend", choices=("local", "ray"), default="local")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: runs/cvpo_bullet-<time>)")
    return parser.parse_args()


def _table(records: list, env_id: str, limit: float, points: int, budget: int) -> list[str]:
    from sb3_safe.common.plotting import binned_curves

    runs = [record for record in records if record.env == env_id and record.episodes]
    if not runs:
        return [f"{env_id}: no finished training episode (raise --timesteps)"]
    curves = binned_curves([record.episodes for record in runs], n_bins=points, total_steps=budget)
    lines = [f"{env_id} ({len(runs)} seeds, cost limit {limit:g}; training episodes, mean ± std over seeds)"]
    lines.append(f"  {'steps':>10}  {'reward':>16}  {'cost':>14}")
    for i, step in enumerate(curves["steps"]):
        reward = f"{curves['return_mean'][i]:.1f} ± {curves['return_std'][i]:.1f}"
        cost = f"{curves['cost_mean'][i]:.1f} ± {curves['cost_std'][i]:.1f}"
        lines.append(f"  {int(step):>10}  {reward:>16}  {cost:>14}")
    reference = FSRL.get(env_id)
    if reference is not None:
        reached = "" if budget >= reference.steps else f" (not reached: this run stops at {budget})"
        lines.append(f"  FSRL CVPO at {reference.steps}: reward ≈{reference.reward:g}, cost ≈{reference.cost}{reached}")
    return lines


def _plot(records: list, envs: list[str], limits: dict[str, float], budget: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sb3_safe.common.plotting import binned_curves

    figure, axes = plt.subplots(len(envs), 2, figsize=(10, 3.6 * len(envs)), squeeze=False, constrained_layout=True)
    for row, env_id in zip(axes, envs, strict=True):
        runs = [record for record in records if record.env == env_id and record.episodes]
        if runs:
            curves = binned_curves([record.episodes for record in runs], n_bins=20, total_steps=budget)
            finite = np.isfinite(curves["return_mean"])  # bins in which no seed finished an episode are skipped
            steps = curves["steps"][finite]
            for axis, key in zip(row, ("return", "cost"), strict=True):
                mean, std = curves[f"{key}_mean"][finite], curves[f"{key}_std"][finite]
                axis.plot(steps, mean, marker="o", markersize=3, label=f"sb3-safe CVPO ({len(runs)} seeds)")
                axis.fill_between(steps, mean - std, mean + std, alpha=0.2)
        reference = FSRL.get(env_id)
        if reference is not None and budget >= reference.steps:
            row[0].plot([reference.steps], [reference.reward], "k*", markersize=12, label="FSRL CVPO")
        elif reference is not None:  # the reference lies beyond the plotted range: show its level
            row[0].axhline(reference.reward, color="gray", linestyle=":", label=f"FSRL at {reference.steps:,} steps")
        row[1].axhline(limits[env_id], color="black", linestyle="--", label=f"cost limit ({limits[env_id]:g})")
        for axis, key in zip(row, ("return", "cost"), strict=True):
            axis.set_title(env_id, fontsize=10)
            axis.set_xlabel("environment steps")
            axis.set_ylabel(f"episode {key}")
            axis.grid(alpha=0.3)
            axis.legend(loc="best", fontsize=8)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    import torch

    from sb3_safe.experiment.config import build_config
    from sb3_safe.experiment.runs import load_run
    from sb3_safe.experiment.sweep import grid_run_dir, run_benchmark

    args = parse_args()
    torch.set_num_threads(1)
    out = args.out or Path("runs") / f"cvpo_bullet-{time.strftime('%Y%m%d-%H%M%S')}"
    configs = [
        build_config(
            "cvpo",
            env_id,
            seed=seed,
            n_timesteps=args.timesteps,
            n_envs=args.n_envs,
            eval_freq=0,
            eval_episodes=2,
            checkpoint_freq=max(args.timesteps // 4, 1),
            wandb_mode="disabled",
        )
        for env_id in args.envs
        for seed in range(args.seeds)
    ]
    limits = {config.env: float(config.cost_limit or np.nan) for config in configs}
    start = time.perf_counter()
    result = run_benchmark(configs, out, backend=args.backend)
    seconds = time.perf_counter() - start
    records = [load_run(grid_run_dir(out, config)) for config in configs]
    print(f"\nCVPO on Bullet-Safety-Gym: {len(configs)} runs of {args.timesteps} steps in {seconds:.0f} s\n")
    for env_id in args.envs:
        print("\n".join(_table(records, env_id, limits[env_id], args.points, args.timesteps)) + "\n")
    png = out / "cvpo_bullet.png"
    _plot(records, args.envs, limits, args.timesteps, png)
    print(f"PNG: {png}\nResults table: {result.results_md}")


if __name__ == "__main__":
    main()
