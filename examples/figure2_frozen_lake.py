"""The paper's Figure 2: RSLUCB-QVI on the 10x10 Frozen Lake, 20 agents x K = 10 episodes x H = 1000 steps.

Amani et al. (2021) report success rate and return per episode averaged over 20 agents, against CISR's
optimized-intervention teacher (Turchetta et al. 2020). This script trains the agents (in parallel worker processes),
prints a per-episode table and the count of steps whose expected cost exceeded tau (which must be 0), the time per
phase (regression, safe sets, per-state solves), and writes a CSV and a PNG with CISR's published curve beside ours.

Reward scales differ: the agents learn from the environment's linear reward; the table reports the paper's task
return (6 at the goal, 0.01 per earlier step) and CISR's scale (6 at the goal, -0.01 per step before the goal or a
hole), which is the one comparable with CISR's curve. CISR's points are curriculum steps of 10,000-step deployments,
not episodes of 1000 steps: the comparison is of shape, as in the paper.

    python examples/figure2_frozen_lake.py                 # 20 agents, 2 workers
    python examples/figure2_frozen_lake.py --agents 4      # a quick look
"""

from __future__ import annotations

import argparse
import csv
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

import sb3_safe
from sb3_safe.common.plotting import finish_figure

# CISR_NeurIPS20 results/flake, teacher -0.5_0.2_4.874684517814194_0.0_012, optimized intervention
CISR_SUCCESS = [0.117, 0.462, 0.700, 0.782, 0.918, 0.930, 0.960, 0.963, 0.962, 0.969, 0.963]
CISR_RETURN = [0.13, 2.29, 3.71, 4.29, 5.12, 5.21, 5.36, 5.38, 5.37, 5.43, 5.39]


def train_agent(seed: int, episodes: int, solver: str) -> dict:
    """One RSLUCB-QVI agent: its per-episode summaries and phase times."""
    import torch

    torch.set_num_threads(1)
    model = sb3_safe.RSLUCBQVI("FrozenLake10x10Safe-v0", socp_solver=solver, seed=seed)
    phases = {"backward": 0.0, "safe_sets": 0.0, "solve": 0.0, "regression": 0.0}

    from stable_baselines3.common.callbacks import BaseCallback

    class PhaseTimes(BaseCallback):
        """Adds up the regression time of each episode (the planning phases are timed around ``_plan``)."""

        def _on_step(self) -> bool:
            return True

        def _on_rollout_end(self) -> None:
            phases["regression"] += model.last_regression_ms

    start = time.perf_counter()
    original_plan = model._plan

    def timed_plan() -> dict[str, float]:
        clock = time.perf_counter()
        logs = original_plan()
        phases["backward"] += 1e3 * (time.perf_counter() - clock)
        phases["safe_sets"] += model.last_phase_ms["safe_sets"]
        phases["solve"] += model.last_phase_ms["solve"]
        return logs

    model._plan = timed_plan  # type: ignore[method-assign]
    model.learn(episodes * model.spec.horizon, callback=PhaseTimes(), log_interval=0)
    return {
        "seed": seed,
        "episodes": model.episode_history,
        "violations": model.violations,
        "seconds": time.perf_counter() - start,
        "phases_ms": phases,
        "beta_q": model.beta_q,
        "beta_safe": float(model.beta_safe_values.max()),
        "kappa_max": float(model.kappa[:, ~model.spec.terminal].max()),
        "solver_counts": dict(model.solver_counts),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=20)
    parser.add_argument("--episodes", type=int, default=10, help="K")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--solver", default="fast", choices=["fast", "cvxpy"])
    parser.add_argument("--out", type=Path, default=Path("runs/figure2"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        runs = list(
            pool.map(train_agent, range(args.agents), [args.episodes] * args.agents, [args.solver] * args.agents)
        )
    wall = time.perf_counter() - start

    keys = ("success", "return_task", "return_cisr", "return", "violations", "max_expected_cost", "steps")
    table = {key: np.array([[episode.get(key, np.nan) for episode in run["episodes"]] for run in runs]) for key in keys}
    with open(args.out / "figure2.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["agent", "episode", *keys])
        for agent, run in enumerate(runs):
            for k, episode in enumerate(run["episodes"]):
                writer.writerow([agent, k + 1, *(episode.get(key, "") for key in keys)])

    print(f"RSLUCB-QVI on FrozenLake10x10Safe-v0: {args.agents} agents x K={args.episodes}, H=1000")
    print(
        f"beta_Q = {runs[0]['beta_q']:.3g}, beta_safe <= {max(r['beta_safe'] for r in runs):.3g}, "
        f"kappa_max = {runs[0]['kappa_max']:.6g} (c_beta = 1, kappa_coef = 2: theory constants)"
    )
    print(f"\n{'episode':>7s} {'success':>8s} {'task return':>12s} {'CISR-scale return':>18s} {'max E[c]':>9s}")
    for k in range(table["success"].shape[1]):
        print(
            f"{k + 1:7d} {np.nanmean(table['success'][:, k]):8.2f} {np.nanmean(table['return_task'][:, k]):12.2f} "
            f"{np.nanmean(table['return_cisr'][:, k]):18.2f} {np.nanmax(table['max_expected_cost'][:, k]):9.4f}"
        )
    total_violations = sum(run["violations"] for run in runs)
    print(f"\nsteps whose expected cost exceeded tau = 0.1: {total_violations} (must be 0)")
    phases = {name: sum(run["phases_ms"][name] for run in runs) / 1e3 for name in runs[0]["phases_ms"]}
    print(
        f"wall {wall:.1f} s on {args.workers} workers; CPU seconds per phase over all agents: "
        + ", ".join(f"{name} {seconds:.1f}" for name, seconds in phases.items())
        + f"; agent total {sum(run['seconds'] for run in runs):.1f}"
    )
    counts = {key: sum(run["solver_counts"].get(key, 0) for run in runs) for key in runs[0]["solver_counts"]}
    print("per-state problems by route: " + ", ".join(f"{key} {value}" for key, value in counts.items()))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    episodes = np.arange(1, table["success"].shape[1] + 1)
    for axis, key, reference, label in (
        (axes[0], "success", CISR_SUCCESS, "success rate"),
        (axes[1], "return_cisr", CISR_RETURN, "return (CISR scale)"),
    ):
        mean = np.nanmean(table[key], axis=0)
        sem = np.nanstd(table[key], axis=0) / np.sqrt(len(runs))
        low, high = mean - sem, mean + sem
        if key == "success":
            low, high = np.clip(low, 0.0, 1.0), np.clip(high, 0.0, 1.0)
        axis.plot(episodes, mean, marker="o", label="RSLUCB-QVI (episodes of 1000 steps; ± s.e.m.)")
        axis.fill_between(episodes, low, high, alpha=0.2)
        axis.plot(
            np.arange(len(reference)), reference, marker="s", linestyle="--", label="CISR optimized (curriculum step)"
        )
        axis.set_xlabel("episode / curriculum step")
        axis.set_ylabel(label)
        axis.legend()
    path = finish_figure(figure, axes, args.out / "figure2.png", None, f"Frozen Lake 10x10, {args.agents} agents")
    print(f"wrote {args.out / 'figure2.csv'} and {path}")


if __name__ == "__main__":
    main()
