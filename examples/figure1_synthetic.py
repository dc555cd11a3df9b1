"""The paper's Figure 1: SLUCB-QVI against the LSVI-UCB baselines on the synthetic linear MDP.

Amani et al. (2021), first experiment: d = 5, H = 3, tau = 0.5, K = 10,000 episodes, 20 realisations. Methods:
SLUCB-QVI, LSVI-UCB knowing gamma* (the oracle), and LSVI-UCB maximising r - lambda' c for lambda' in
{0.8, 0.85, 0.9, 0.95}. Expected: the oracle earns the most reward; SLUCB-QVI and the oracle never violate the
constraint; the penalised baselines do, fewer as lambda' grows.

Two engines compute the same agents (the same mathematics and defaults, tested against each other):

- ``--engine batched`` (default): one job per method in the worker pool, each running its method on all instances in
  lockstep, vectorised with numpy (sb3_safe/linear/batched.py, with its own simulator built from every instance's
  ground truth, seeded by ``--seed``); the full run takes well under two minutes on 2 cores;
- ``--engine adapter``: one SB3-adapter agent per (method, instance) on the real env, in parallel worker processes
  (about 1.5-3 ms per episode, so the full run takes hours).

This prints a summary table (final moving-average reward, cumulative violations), the time per method (and per phase
with the batched engine) and the wall time, and writes a CSV of per-episode reward and violations and a PNG of both
against k.

The safety radius's norm bound S must bound ||gamma*|| (Assumption 1): it defaults to max(sqrt(d), max_h ||gamma_h*||)
of the instance, printed per run; ``--nominal-s`` uses sqrt(d) alone, which about 42% of draws exceed.

    python examples/figure1_synthetic.py                             # 20 instances x K = 10,000
    python examples/figure1_synthetic.py --seeds 4 --episodes 2000   # a quicker look
    python examples/figure1_synthetic.py --engine adapter --seeds 2 --episodes 500   # through the SB3 adapter
"""

from __future__ import annotations

import argparse
import csv
import math
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

import sb3_safe
from sb3_safe.common.plotting import finish_figure

PENALTIES = (0.8, 0.85, 0.9, 0.95)
METHODS = ("SLUCB-QVI", "LSVI-UCB (known gamma*)", *(f"LSVI-UCB lambda'={p}" for p in PENALTIES))


def norm_bound(env, nominal_s: bool) -> tuple[float, float]:
    """max_h ||gamma_h*|| of the instance, and the S of the safety radius (sqrt(d), or at least that norm)."""
    gamma_norm = float(np.linalg.norm(env.unwrapped.gamma_star, axis=1).max())
    root_d = math.sqrt(env.unwrapped.feature_dim)
    return gamma_norm, root_d if nominal_s else max(root_d, gamma_norm)


def run_batched(method: str, seeds: int, episodes: int, c_beta: float, nominal_s: bool, sim_seed: int) -> list[dict]:
    """One method on instances 0..seeds-1 in lockstep (batched engine): per-seed records as :func:`run`'s, with the
    method's seconds split evenly over the instances and its phase times in ``phases``."""
    from sb3_safe.linear.batched import BatchedSyntheticRun

    envs = [sb3_safe.make_env("LinearMDPSynthetic-v0", seed=seed) for seed in range(seeds)]
    norms, bounds = zip(*(norm_bound(env, nominal_s) for env in envs), strict=True)
    if method == "SLUCB-QVI":
        kind, penalty = "slucb", None
    elif method.startswith("LSVI-UCB (known"):
        kind, penalty = "known", None
    else:
        kind, penalty = "penalized", float(method.split("=")[1])
    start = time.perf_counter()
    engine = BatchedSyntheticRun(
        envs, kind, c_beta=c_beta, penalty=penalty, safety_norm_bounds=np.array(bounds), seed=sim_seed
    )
    result = engine.run(episodes)
    seconds = time.perf_counter() - start
    return [
        {
            "method": method,
            "seed": seed,
            "returns": result.returns[seed],
            "violations": result.violations[seed],
            "seconds": seconds / seeds,
            "gamma_norm": norms[seed],
            "norm_bound": bounds[seed],
            "beta_q": result.beta_q,
            "phases": {phase: t / seeds for phase, t in result.phase_seconds.items()},
        }
        for seed in range(seeds)
    ]


def run(method: str, seed: int, episodes: int, c_beta: float, nominal_s: bool) -> dict:
    """One agent on instance ``seed``: per-episode return and violation count."""
    import torch
    from stable_baselines3.common.callbacks import BaseCallback

    torch.set_num_threads(1)
    env = sb3_safe.make_env("LinearMDPSynthetic-v0", seed=seed)
    gamma_norm, bound = norm_bound(env, nominal_s)
    if method == "SLUCB-QVI":
        model = sb3_safe.SLUCBQVI(env, c_beta=c_beta, safety_norm_bound=bound, seed=seed)
    elif method.startswith("LSVI-UCB (known"):
        model = sb3_safe.LSVIUCB(env, safety="known", c_beta=c_beta, seed=seed)
    else:
        model = sb3_safe.LSVIUCB(env, cost_penalty=float(method.split("=")[1]), c_beta=c_beta, seed=seed)
    returns: list[float] = []
    violations: list[int] = []

    class PerEpisode(BaseCallback):
        """Per-episode return and violations (the adapter's summaries keep only a window)."""

        def _on_step(self) -> bool:
            return True

        def _on_rollout_start(self) -> None:
            self.start_violations = model.violations

        def _on_rollout_end(self) -> None:
            returns.append(model.episode_history[-1]["return"])
            violations.append(model.violations - self.start_violations)

    start = time.perf_counter()
    model.learn(episodes * model.spec.horizon, callback=PerEpisode(), log_interval=0)
    return {
        "method": method,
        "seed": seed,
        "returns": returns,
        "violations": violations,
        "seconds": time.perf_counter() - start,
        "gamma_norm": gamma_norm,
        "norm_bound": bound,
        "beta_q": model.beta_q,
    }


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average along the last axis (shorter windows at the start)."""
    n = values.shape[-1]
    cumulative = np.concatenate([np.zeros((*values.shape[:-1], 1)), np.cumsum(values, axis=-1)], axis=-1)
    ends = np.arange(1, n + 1)
    starts = np.maximum(ends - window, 0)
    return (cumulative[..., ends] - cumulative[..., starts]) / (ends - starts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=20, help="instances (realisations)")
    parser.add_argument("--episodes", type=int, default=10_000, help="K")
    parser.add_argument("--c-beta", type=float, default=0.01, help="value-bonus scale (1 = theory; see README)")
    parser.add_argument("--nominal-s", action="store_true", help="S = sqrt(d) even when ||gamma*|| exceeds it")
    parser.add_argument("--window", type=int, default=200, help="moving-average window of the reward curves")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--engine", choices=("batched", "adapter"), default="batched", help="see above")
    parser.add_argument("--seed", type=int, default=0, help="seed of the batched engine's simulator (every method)")
    parser.add_argument("--out", type=Path, default=Path("runs/figure1"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    script_start = start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        if args.engine == "batched":  # one job per method, all instances at once
            n = len(METHODS)
            per_method = pool.map(
                run_batched,
                METHODS,
                [args.seeds] * n,
                [args.episodes] * n,
                [args.c_beta] * n,
                [args.nominal_s] * n,
                [args.seed] * n,
            )
            results = [record for records in per_method for record in records]
        else:
            jobs = [(method, seed) for method in METHODS for seed in range(args.seeds)]
            results = list(
                pool.map(
                    run,
                    [m for m, _ in jobs],
                    [s for _, s in jobs],
                    [args.episodes] * len(jobs),
                    [args.c_beta] * len(jobs),
                    [args.nominal_s] * len(jobs),
                )
            )
    wall = time.perf_counter() - start

    returns = {m: np.array([r["returns"] for r in results if r["method"] == m]) for m in METHODS}
    violations = {m: np.array([r["violations"] for r in results if r["method"] == m]) for m in METHODS}
    with open(args.out / "figure1.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["method", "seed", "episode", "return", "violations"])
        for r in results:
            writer.writerows(
                (r["method"], r["seed"], k, f"{ret:.6g}", int(vio))
                for k, ret, vio in zip(range(1, args.episodes + 1), r["returns"], r["violations"], strict=True)
            )

    exceeded = sum(r["gamma_norm"] > math.sqrt(5) for r in results if r["method"] == METHODS[0])
    print(
        f"Synthetic linear MDP (d=5, H=3, tau=0.5): {args.seeds} instances x K={args.episodes}, c_beta={args.c_beta}, "
        f"engine {args.engine}"
    )
    print(f"||gamma*|| > sqrt(d) in {exceeded} of {args.seeds} instances; S = {'sqrt(d)' if args.nominal_s else 'max'}")
    print(f"\n{'method':28s} {'final reward':>13s} {'violations (mean, max)':>24s} {'CPU s':>7s}")
    for m in METHODS:
        final = moving_average(returns[m], args.window)[:, -1]
        total = violations[m].sum(axis=1)
        seconds = sum(r["seconds"] for r in results if r["method"] == m)
        print(f"{m:28s} {final.mean():8.3f} ±{final.std():5.3f} {total.mean():14.1f} {total.max():8d} {seconds:7.1f}")
    if args.engine == "batched":
        phases = list(results[0]["phases"])
        print(f"\n{'seconds per phase':28s} " + " ".join(f"{p:>11s}" for p in phases))
        for m in METHODS:
            totals = [sum(r["phases"][p] for r in results if r["method"] == m) for p in phases]
            print(f"{m:28s} " + " ".join(f"{t:11.1f}" for t in totals))
    print(f"\nwall {wall:.1f} s on {args.workers} workers ({args.engine} engine)")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(12, 4))
    episodes = np.arange(1, args.episodes + 1)
    for m in METHODS:
        curve = moving_average(returns[m], args.window).mean(axis=0)
        axes[0].plot(episodes, curve, label=m)
        axes[1].plot(episodes, np.cumsum(violations[m], axis=1).mean(axis=0), label=m)
    axes[0].set_ylabel(f"episode reward (mean; moving average {args.window})")
    axes[1].set_ylabel("cumulative violations (mean)")
    for axis in axes:
        axis.set_xlabel("episode k")
    axes[1].legend(fontsize=8)
    path = finish_figure(figure, axes, args.out / "figure1.png", None, f"Synthetic linear MDP, {args.seeds} instances")
    print(f"wrote {args.out / 'figure1.csv'} and {path} ({time.perf_counter() - script_start:.1f} s in all)")


if __name__ == "__main__":
    main()
