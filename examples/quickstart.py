"""Quick start: CVPO on a safety-gymnasium task, with reward and cost in Weights & Biases.

Trains CVPO (Liu et al. 2022) on ``SafetyPointGoal1-v0`` with the task family's default hyperparameters
(``sb3_safe.hyperparams``), logs every metric to W&B (offline unless you have configured an account), then
prints an evaluation table and writes a learning-curve PNG.

    python examples/quickstart.py --timesteps 10000

This is what ``make demo`` runs. A short budget shows the machinery, not a trained agent: CVPO needs
hundreds of thousands of steps on this task.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import sb3_safe
from sb3_safe.common.callbacks import EpisodeHistoryCallback
from sb3_safe.common.plotting import plot_learning_curves
from sb3_safe.common.wandb_logger import attach_wandb, finish_wandb
from sb3_safe.hyperparams import load_hyperparams, split_run_settings


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="SafetyPointGoal1-v0", help="environment id (see sb3_safe.list_envs())")
    parser.add_argument("--timesteps", type=int, default=10_000, help="training budget in environment steps")
    parser.add_argument("--n-envs", type=int, default=4, help="parallel environments")
    parser.add_argument("--cost-limit", type=float, default=None, help="per-episode cost limit (default: the preset)")
    parser.add_argument("--eval-episodes", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/quickstart"), help="output folder")
    parser.add_argument("--wandb-project", default="sb3-safe")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)  # small MLPs on a few CPU cores: one thread is faster
    args.out.mkdir(parents=True, exist_ok=True)
    hyperparams, _ = split_run_settings(load_hyperparams("cvpo", args.env))
    if args.cost_limit is not None:
        hyperparams["cost_limit"] = args.cost_limit
    hyperparams["learning_starts"] = 1000
    cost_limit = float(hyperparams["cost_limit"])
    # fast_reset: the plugin's opt-in quick world reset (same trajectories, plain skybox).
    env = sb3_safe.make_vec_env(args.env, n_envs=args.n_envs, seed=args.seed, env_kwargs={"fast_reset": True})
    model = sb3_safe.CVPO(env=env, seed=args.seed, verbose=0, **hyperparams)
    run = attach_wandb(
        model,
        folder=str(args.out),
        format_strings=("csv",),
        project=args.wandb_project,
        name=f"quickstart-cvpo-{args.env}-s{args.seed}",
        config={"env": args.env, "timesteps": args.timesteps, "n_envs": args.n_envs, **hyperparams},
        dir=str(args.out),
    )
    history = EpisodeHistoryCallback()
    print(f"Training CVPO on {args.env} ({args.n_envs} envs) for {args.timesteps} steps; W&B {run.settings.mode}")
    start = time.perf_counter()
    model.learn(args.timesteps, callback=history, progress_bar=True, log_interval=1)
    train_seconds = time.perf_counter() - start
    finish_wandb(model)

    eval_env = sb3_safe.make_env(args.env, fast_reset=True)
    result = sb3_safe.evaluate_safe_policy(model, eval_env, n_eval_episodes=args.eval_episodes)
    history.to_csv(args.out / "episodes.csv")
    curve = plot_learning_curves(
        history.history, args.out / "learning_curve.png", cost_limit=cost_limit, title=f"CVPO on {args.env}"
    )
    model.save(args.out / "model")

    print(f"\nTrained {model.num_timesteps} steps in {train_seconds:.0f} s; training cost rate {model.cost_rate:.4f}")
    print("Duals: " + ", ".join(f"{key}={value:.4g}" for key, value in model.duals.items()))
    print(f"Evaluation ({args.eval_episodes} deterministic episodes):")
    print(result.table(limit=cost_limit))
    print(f"\nW&B run ({run.settings.mode}):  {run.settings.sync_dir}")
    if run.settings.mode == "offline":
        print(f"  upload it later with: wandb sync {run.settings.sync_dir}")
    print(f"Learning curve PNG: {curve}")
    print(f"SB3 CSV log:        {args.out / 'progress.csv'}")
    print(f"Model:              {args.out / 'model.zip'}")


if __name__ == "__main__":
    main()
