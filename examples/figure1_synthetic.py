"""The paper's Figure 1: SLUCB-QVI against the LSVI-UCB baselines on the synthetic linear MDP.

Amani et al. (2021), first experiment: d = 5, H = 3, tau = 0.5, K = 10,000 episodes, 20 realisations. Methods:
SLUCB-QVI, LSVI-UCB knowing gamma* (the oracle), and LSVI-UCB maximising r - lambda' c for lambda' in
{0.8, 0.85, 0.9, 0.95}. Expected: the oracle earns the most reward; SLUCB-QVI and the oracle never violate the
constraint; the penalised baselines do, fewer as lambda' grows.

Each (method, instance) run is one agent through the SB3 adapter, in parallel worker processes. This prints a summary
table (final moving-average reward, cumulative violations), the time per method, and writes a CSV of per-episode
reward and violations and a PNG of both against k.

The safety radius's norm bound S must bound ||gamma*|| (Assumption 1): it defaults to max(sqrt(d), max_h ||gamma_h*||)
of the instance, printed per run; ``--nominal-s`` uses sqrt(d) alone, which about 42% of draws exceed (specs §6.1).

    python examples/figure1_synthetic.py                             # 20 instances x K = 10,000 (slow: see README)
    python examples/figure1_synthetic.py --seeds 4 --episodes 2000   # a quicker look
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
from sb3_safe.common.plotting import _finish

PENALTIES = (0.8, 0.85, 0.9, 0.95)
METHODS = ("SLUCB-QVI", "LSVI-UCB (known gamma*)", *(f"LSVI-UCB lambda'={p}" for p in PENALTIES))


def run(method: str, seed: int, episodes: int, c_beta: float, nominal_s: bool) -> dict:
    """One agent on instance ``seed``: per-episode return and violation count."""
    import torch
    from stable_baselines3.common.callbacks import BaseCallback

    torch.set_num_threads(1)
    env = sb3_safe.make_env("LinearMDPSynthetic-v0", seed=seed)
    gamma_norm = float(np.linalg.norm(env.unwrapped.gamma_star, axis=1).max())
    bound = math.sqrt(env.unwrapped.feature_dim) if nominal_s else max(math.sqrt(env.unwrapped.feature_dim), gamma_norm)
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
    parser.add_argument("--out", type=Path, default=Path("runs/figure1"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    jobs = [(method, seed) for method in METHODS for seed in range(args.seeds)]
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
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
            for k, (ret, vio) in enumerate(zip(r["returns"], r["violations"], strict=True)):
                writer.writerow([r["method"], r["seed"], k + 1, f"{ret:.6g}", vio])

    exceeded = sum(r["gamma_norm"] > math.sqrt(5) for r in results if r["method"] == METHODS[0])
    print(f"Synthetic linear MDP (d=5, H=3, tau=0.5): {args.seeds} instances x K={args.episodes}, c_beta={args.c_beta}")
    print(f"||gamma*|| > sqrt(d) in {exceeded} of {args.seeds} instances; S = {'sqrt(d)' if args.nominal_s else 'max'}")
    print(f"\n{'method':28s} {'final reward':>13s} {'violations (mean, max)':>24s} {'CPU s':>7s}")
    for m in METHODS:
        final = moving_average(returns[m], args.window)[:, -1]
        total = violations[m].sum(axis=1)
        seconds = sum(r["seconds"] for r in results if r["method"] == m)
        print(f"{m:28s} {final.mean():8.3f} ±{final.std():5.3f} {total.mean():14.1f} {total.max():8d} {seconds:7.1f}")
    print(f"\nwall {wall:.1f} s on {args.workers} workers")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(12, 4))
    episodes = np.arange(1, args.episodes + 1)
    for m in METHODS:
        curve = moving_average(returns[m], args.window).mean(axis=0)
        axes[0].plot(episodes, curve, label=m)
        axes[1].plot(episodes, np.cumsum(violations[m], axis=1).mean(axis=0), label=m)
    axes[0].set_ylabel(f"episode reward (moving average over {args.window}, mean of instances)")
    axes[1].set_ylabel("cumulative violations (mean of instances)")
    for axis in axes:
        axis.set_xlabel("episode k")
    axes[1].legend(fontsize=8)
    path = _finish(figure, axes, args.out / "figure1.png", None, f"Synthetic linear MDP, {args.seeds} instances")
    print(f"wrote {args.out / 'figure1.csv'} and {path}")


if __name__ == "__main__":
    main()
