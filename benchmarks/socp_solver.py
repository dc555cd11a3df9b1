"""RSLUCB-QVI's per-state SOCPs: SimplexSOCP's fast path against the cvxpy reference.

See docs/linear_agents.md, 'RSLUCB-QVI: randomised plans and the per-state SOCP'.

Frozen Lake builds one SimplexSOCP per episode (g and Rb are fixed within an episode) and calls ``.solve(q)`` once
per step h: 1000 solves of 100 states per episode. 200 episodes (20 agents x 10) should take under 2 minutes overall,
so a solve of 100 states should take well under 0.3 ms. For n = 4 actions and 100 states this prints, per instance:

- the construction time of ``SimplexSOCP(...)`` and the time per ``.solve(q)`` (median and 90th percentile over many q);
- the routes taken (screened by a feasible greedy vertex, face enumeration, cvxpy fallback, failed solves);
- cvxpy's time per state (the DPP problem re-solved per state) and the agreement of the two paths;
- the projected SOCP time of one episode (construction + 1000 solves) and of 200 episodes.

Instances: Frozen Lake built from the exact linear model of the frozen-lake plugin (pooled ridge statistics from N
random transitions, the per-state projected estimate and Gram, beta_safe, kappa (docs/linear_agents.md), Q~ from random
values V_{h+1}) when the plugin is installed, at two sample counts and two bonus scales; and random instances (random
g, PSD Rb with e_{a0} in its null space, random q) where a fraction of the greedy vertices are infeasible.

    python benchmarks/socp_solver.py            # 1000 q per instance
    python benchmarks/socp_solver.py --quick    # 200 q per instance
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sb3_safe.linear.socp import SimplexSOCP, psd_sqrt

STEPS_PER_EPISODE, EPISODES, BUDGET_SECONDS, TARGET_MS = 1000, 200, 120.0, 0.3


@dataclass
class Instance:
    """One episode's per-state data and a generator of per-step objectives."""

    name: str
    g: np.ndarray
    rb: np.ndarray
    tau: float
    safe: np.ndarray
    active: np.ndarray
    objectives: Callable[[int], np.ndarray]


def frozen_lake_instance(samples: int, bonus_scale: float, seed: int) -> Instance | None:
    """Frozen Lake's SOCP data after ``samples`` pooled random transitions (None without the frozen-lake plugin)."""
    try:
        from sb3_safe_frozen_lake.frozen_lake_model import build_model
    except ImportError:
        return None
    model = build_model()
    rng = np.random.default_rng(seed)
    n_states, d, horizon, tau, sigma, delta = model.n_states, model.features.shape[2], 1000, 0.1, 0.5, 0.01
    active = np.ones(n_states, dtype=bool)
    active[list(model.holes)] = False
    # pooled ridge statistics (lambda = 1) from uniformly random non-hole states and actions
    s = rng.choice(np.flatnonzero(active), samples)
    a = rng.integers(0, 4, samples)
    phi = model.features[s, a]
    s_next = np.array([rng.choice(n_states, p=model.transitions[i, j]) for i, j in zip(s, a, strict=True)])
    z = np.isin(s_next, model.holes).astype(float)
    gram_inv = np.linalg.inv(np.eye(d) + phi.T @ phi)
    gamma_hat = gram_inv @ (phi.T @ z)
    b_r = phi.T @ (phi @ model.theta_star)
    next_sum = phi.T @ np.eye(n_states)[s_next]
    beta = sigma * np.sqrt(d * np.log((1 + samples) / delta)) + np.sqrt(d)  # beta_safe, S = sqrt(d)
    # per state: the equality-constrained estimate gamma_s and M_s, g = Phi_s gamma_s, G = Phi_s M_s Phi_s^T
    feats = model.features  # (S, 4, d)
    safe = np.asarray(model.safe_actions)
    safe_cost = np.asarray(model.safe_costs)
    phi0 = feats[np.arange(n_states), safe]
    unit = phi0 / np.linalg.norm(phi0, axis=1, keepdims=True)
    m_u = unit @ gram_inv
    u_m_u = np.einsum("sd,sd->s", m_u, unit)
    c_s = safe_cost / np.linalg.norm(phi0, axis=1)
    gamma_s = gamma_hat - ((unit @ gamma_hat - c_s) / u_m_u)[:, None] * m_u
    g = np.einsum("sad,sd->sa", feats, gamma_s)
    g[np.arange(n_states), safe] = safe_cost  # the analytic safe cost
    proj = np.einsum("sad,de->sae", feats, gram_inv)
    feat_m_u = np.einsum("sad,sd->sa", feats, m_u)
    gram_s = np.einsum("sad,sbd->sab", proj, feats) - feat_m_u[:, :, None] * feat_m_u[:, None, :] / u_m_u[:, None, None]
    rb = beta * psd_sqrt(gram_s)
    rb[np.arange(n_states), safe, :] = rb[np.arange(n_states), :, safe] = 0.0  # G e_{a0} = 0 exactly
    kappa = 2 * horizon / np.maximum(tau - safe_cost, 0.05) + 1  # kappa with min_safety_gap = 0.05
    bonus = bonus_scale * kappa[:, None] * beta * np.sqrt(np.maximum(np.einsum("sad,sad->sa", proj, feats), 0))

    def objectives(h: int) -> np.ndarray:
        values = rng.uniform(0, horizon - h % horizon, n_states)  # a stand-in for V_{h+1}
        return feats @ (gram_inv @ (b_r + next_sum @ values)) + bonus

    name = f"Frozen Lake, N={samples}, bonus x{bonus_scale:g}"
    return Instance(name, g, rb, tau, safe, active, objectives)


def random_instance(seed: int, n_states: int = 100, n: int = 4) -> Instance:
    """Random g in [0, 1], Rb = b G^{1/2} with G PSD and G e_{a0} = 0, g[a0] <= tau (some at equality)."""
    rng = np.random.default_rng(seed)
    tau = 0.5
    safe = rng.integers(0, n, n_states)
    g = rng.uniform(0, 1, (n_states, n))
    g[np.arange(n_states), safe] = np.where(rng.uniform(size=n_states) < 0.1, tau, rng.uniform(0, tau, n_states))
    x = rng.normal(size=(n_states, n, n))
    x[np.arange(n_states), safe] = 0.0
    rb = rng.uniform(0.05, 1.0, (n_states, 1, 1)) * psd_sqrt(np.einsum("sak,sbk->sab", x, x))
    return Instance("random", g, rb, tau, safe, np.ones(n_states, dtype=bool), lambda h: rng.normal(size=(n_states, n)))


def run(instance: Instance, n_q: int, n_ref: int) -> float:
    """Time and check one instance; returns the median solve time in ms."""
    build = []
    for _ in range(5):
        start = time.perf_counter()
        socp = SimplexSOCP(instance.g, instance.rb, instance.tau, instance.safe, active=instance.active)
        build.append(time.perf_counter() - start)
    objectives = [instance.objectives(h) for h in range(n_q)]
    times, routes = [], np.zeros(4, dtype=int)
    for q in objectives:
        start = time.perf_counter()
        sol = socp.solve(q)
        times.append(time.perf_counter() - start)
        routes += [sol.greedy, sol.face, sol.cvxpy, sol.fallbacks_to_safe]
    solve_ms = 1e3 * np.median(times)
    n_active = int(instance.active.sum())

    # the cvxpy reference on a few q (skip states with tau - tau_h(s) < 1e-9, where Slater's condition fails)
    data = (instance.g, instance.rb, instance.tau, instance.safe)
    reference = SimplexSOCP(*data, solver="cvxpy", active=instance.active)
    slack = instance.tau - instance.g[np.arange(len(instance.g)), instance.safe]
    compared = instance.active & (slack >= 1e-9)
    diffs, ref_seconds, worst_violation, ref_failures = [], 0.0, -np.inf, 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        reference.solve(objectives[0])  # warm-up: cvxpy compiles the DPP problem on its first solve
        for q in objectives[:n_ref]:
            start = time.perf_counter()
            ref = reference.solve(q)
            ref_seconds += time.perf_counter() - start
            fast = socp.solve(q)
            diffs.append((fast.value - ref.value)[compared])
            worst_violation = max(worst_violation, fast.max_violation)
            ref_failures += ref.fallbacks_to_safe
    diff = np.concatenate(diffs)
    scale = np.maximum(1.0, np.abs(np.stack(objectives[:n_ref])).max(axis=2))[:, compared].ravel()

    total = routes.sum() - routes[3]
    print(f"\n== {instance.name}: {len(instance.g)} states ({n_active} active), n = {instance.g.shape[1]} ==")
    print(f"construction            {1e3 * np.median(build):8.2f} ms (median of 5)")
    p90 = 1e3 * np.percentile(times, 90)
    print(f"solve(q)                {solve_ms:8.3f} ms median, {p90:.3f} ms p90 over {n_q} q")
    print(
        f"routes                  greedy {routes[0] / total:.1%}, face {routes[1] / total:.1%}, "
        f"cvxpy fallback {routes[2]} states, failed {routes[3]}"
    )
    print(f"cvxpy re-solve          {1e3 * ref_seconds / (n_ref * n_active):8.3f} ms per state ({n_ref} q)")
    print(
        f"agreement               max |fast - cvxpy| {np.abs(diff).max():.2e} (relative to max(1, |q|): "
        f"{(np.abs(diff) / scale).max():.2e}), max fast - cvxpy {diff.max():.2e}; {compared.sum()} states x {n_ref} q"
    )
    print(f"                        fast max violation {worst_violation:.2e}, cvxpy failures {ref_failures}")
    episode = np.median(build) + STEPS_PER_EPISODE * solve_ms / 1e3
    print(f"projected               {episode:.2f} s per episode, {EPISODES * episode:.1f} s for {EPISODES} episodes")
    return float(solve_ms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="200 q per instance, one reference q")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    n_q, n_ref = (200, 1) if args.quick else (1000, 3)
    instances = [frozen_lake_instance(samples, bonus, args.seed) for samples in (1000, 7000) for bonus in (1.0, 1e-3)]
    if instances[0] is None:
        print("frozen-lake plugin not installed: random instances only")
    instances = [inst for inst in instances if inst is not None] + [random_instance(args.seed)]
    medians = [run(inst, n_q, n_ref) for inst in instances]
    print(
        f"\nworst median solve {max(medians):.3f} ms (target {TARGET_MS} ms): "
        f"{STEPS_PER_EPISODE * EPISODES * max(medians) / 1e3:.0f} s of SOCPs for {EPISODES} episodes "
        f"(budget {BUDGET_SECONDS:.0f} s overall)"
    )


if __name__ == "__main__":
    main()
