"""Speed and accuracy of the CVPO E-step dual solvers (``sb3_safe.cvpo.estep``; docs/cvpo.md, 'Solving the dual').

Usage::

    python benchmarks/estep_dual.py            # full run (a few minutes, most of it in the cvxpy reference)
    python benchmarks/estep_dual.py --quick    # a short run (about a minute)

For every instance family, size and solver it prints the median time of ``solve_estep_dual`` (the dual only, no
weights) from a cold start and warm-started from the previous solution, and the largest relative gap of the dual
objective to the cvxpy reference, ``|g_solver - g_cvxpy| / max(|g_cvxpy|, std(Q_r))``. One torch thread. Warm
times are the best of 5 consecutive-chunk medians: on a shared VM the same loop can run 2x slower for a while.

Two warm starts are timed, both from the previous call's ``warm_start``:

* ``warm``: the same states with Q perturbed by 1% of its within-state spread (as consecutive gradient steps see it);
* ``new batch``: a new minibatch of states from the same distribution, as consecutive training steps see it.

Instance families (float32 Q values, per-state offsets, costs correlated with the reward advantage):

* ``slack``: the threshold is above what the reward-optimal weights reach (lambda = 0);
* ``active``: the threshold lies between the cost-minimising and the reward-optimal weights (lambda > 0);
* ``active-m2``: two constraints, both active;
* ``infeasible``: no reweighting in the KL ball meets the threshold (docs/cvpo.md, 'Infeasible E-step'). cvxpy and
  newton then solve the box-bounded dual at its corner; the gap there mostly measures Clarabel's accuracy at Qt ~ 1e5;
* ``scale-1e3`` / ``scale-1e-3``: ``active`` with every Q and the threshold scaled by 1e3 or 1e-3;
* ``heavy-tail``: ``active`` with Student-t (2 degrees of freedom) advantages and state offsets of 100.

Targets (this project's; latest figures in README.md, 'Benchmarks'): newton within 1e-6 relative of cvxpy on the
dual objective (feasible families), and under 0.5 ms per warm-started solve at batch 256 x K 32. Times are printed,
never asserted.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch as th

from sb3_safe.cvpo.estep import EStepWarmStart, solve_estep, solve_estep_dual

KL_BOUND = 0.02
SOLVERS = ("newton", "slsqp", "cvxpy")


@dataclass(frozen=True)
class Family:
    """A distribution of E-step instances."""

    name: str
    n_constraints: int = 1
    threshold_shift: float = 0.05  # threshold = cost mean + shift (in units of the within-state spread)
    scale: float = 1.0
    heavy_tail: bool = False


FAMILIES = (
    Family("slack", threshold_shift=3.0),
    Family("active"),
    Family("active-m2", n_constraints=2),
    Family("infeasible", threshold_shift=-1.0),
    Family("scale-1e3", scale=1e3),
    Family("scale-1e-3", scale=1e-3),
    Family("heavy-tail", heavy_tail=True),
)
QUICK_FAMILIES = ("slack", "active", "infeasible")


class Sampler:
    """Minibatches of (Q_r, Q_c) for one family, drawn with torch ops (as the critics would produce them)."""

    def __init__(self, family: Family, batch: int, n_samples: int, seed: int) -> None:
        self.family = family
        self.shape = (batch, n_samples)
        self.generator = th.Generator().manual_seed(seed)
        self.cost_base = 2.0 + th.randn(family.n_constraints, 1, 1, generator=self.generator, dtype=th.float64)
        self.threshold = (self.cost_base.view(-1) + family.threshold_shift).numpy() * family.scale

    def _randn(self, *shape: int) -> th.Tensor:
        return th.randn(*shape, generator=self.generator, dtype=th.float64)

    def sample(self) -> tuple[th.Tensor, th.Tensor]:
        """A new batch of states."""
        family, (batch, n_samples) = self.family, self.shape
        if family.heavy_tail:
            advantage = self._randn(batch, n_samples) / (self._randn(2, batch, n_samples).square().mean(0).sqrt())
            offsets = 100.0 * self._randn(batch, 1)
        else:
            advantage, offsets = self._randn(batch, n_samples), 3.0 * self._randn(batch, 1)
        m = family.n_constraints
        within = 0.6 * advantage / advantage.std() + 0.8 * self._randn(m, batch, n_samples)
        within = within - within.mean(dim=2, keepdim=True)
        q_cost = self.cost_base + 0.3 * self._randn(m, batch, 1) + within
        return ((offsets + advantage) * family.scale).float(), (q_cost * family.scale).float()

    def perturb(self, q_reward: th.Tensor, q_cost: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """The same states, Q moved by 1% of the within-state spread."""
        scale = 0.01 * self.family.scale
        return (
            q_reward + scale * self._randn(*q_reward.shape).float(),
            q_cost + scale * self._randn(*q_cost.shape).float(),
        )


@dataclass
class Row:
    family: str
    size: str
    solver: str
    cold_ms: float
    warm_ms: float
    new_batch_ms: float
    gap: float
    iterations: str
    note: str = ""


def median_ms(times: list[float], chunks: int = 1) -> float:
    """Median in ms; with ``chunks`` > 1, the smallest median of consecutive chunks (robust to noisy neighbours on
    shared machines, where the same loop can run 2x slower for seconds at a time)."""
    size = max(1, len(times) // chunks)
    return 1e3 * min(statistics.median(times[i : i + size]) for i in range(0, len(times) - size + 1, size))


def timed_solve(
    q_reward: th.Tensor, q_cost: th.Tensor, threshold: np.ndarray, solver: str, init: EStepWarmStart | None
) -> float:
    start = time.perf_counter()
    solve_estep_dual(q_reward, q_cost, KL_BOUND, threshold, solver, init=init)
    return time.perf_counter() - start


def warm_times(sampler: Sampler, solver: str, repeats: int, new_batch: bool) -> tuple[list[float], list[int]]:
    """Warm-started solve times and iteration counts along a sequence of related instances."""
    threshold = sampler.threshold
    q_reward, q_cost = sampler.sample()
    warm = solve_estep(q_reward, q_cost, KL_BOUND, threshold, solver).warm_start
    times, iterations = [], []
    for _ in range(repeats):
        q_reward, q_cost = sampler.sample() if new_batch else sampler.perturb(q_reward, q_cost)
        times.append(timed_solve(q_reward, q_cost, threshold, solver, warm))
        solution = solve_estep(q_reward, q_cost, KL_BOUND, threshold, solver, init=warm)  # untimed: the warm start
        warm = solution.warm_start
        iterations.append(solution.iterations)
    return times, iterations


def run_family(family: Family, batch: int, n_samples: int, n_refs: int, repeats: int, seed: int) -> list[Row]:
    size = f"{batch}x{n_samples}"
    sampler = Sampler(family, batch, n_samples, seed)
    threshold = sampler.threshold
    refs = []
    for _ in range(n_refs):
        q_reward, q_cost = sampler.sample()
        info = solve_estep_dual(q_reward, q_cost, KL_BOUND, threshold, "cvxpy", return_info=True)[2]
        refs.append((q_reward, q_cost, info.dual_objective))
    rows = []
    for solver in SOLVERS:
        cold, gaps, flagged = [], [], 0
        for q_reward, q_cost, ref in refs:
            cold.append(timed_solve(q_reward, q_cost, threshold, solver, None))
            info = solve_estep_dual(q_reward, q_cost, KL_BOUND, threshold, solver, return_info=True)[2]
            gaps.append(abs(info.dual_objective - ref) / max(abs(ref), float(q_reward.double().std())))
            flagged += info.infeasible
        n_warm = repeats if solver != "cvxpy" else max(2, repeats // 40)
        warm, iterations = warm_times(Sampler(family, batch, n_samples, seed + 1), solver, n_warm, new_batch=False)
        new, new_iterations = warm_times(Sampler(family, batch, n_samples, seed + 2), solver, n_warm, new_batch=True)
        note = f"infeasible flagged {flagged}/{len(refs)}" if family.name == "infeasible" else ""
        rows.append(
            Row(
                family.name,
                size,
                solver,
                median_ms(cold),
                median_ms(warm, chunks=5),
                median_ms(new, chunks=5),
                max(gaps),
                f"{statistics.median(iterations):g} / {statistics.median(new_iterations):g}",
                note,
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 families, fewer instances and repeats")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    th.set_num_threads(1)
    warnings.filterwarnings("ignore", message="cvxpy/Clarabel failed")  # rare, at the infeasible box corner
    n_refs, repeats = (2, 40) if args.quick else (4, 200)
    families = [f for f in FAMILIES if f.name in QUICK_FAMILIES] if args.quick else list(FAMILIES)

    rows: list[Row] = []
    compile_s: dict[str, float] = {}
    for batch, n_samples in ((256, 16), (256, 32)):
        for m in sorted({f.n_constraints for f in families}):  # the first cvxpy solve at a shape compiles it
            q_reward, q_cost = Sampler(Family("active", n_constraints=m), batch, n_samples, 99).sample()
            start = time.perf_counter()
            solve_estep_dual(q_reward, q_cost, KL_BOUND, np.full(m, 2.0), "cvxpy")
            compile_s[f"{batch}x{n_samples} m={m}"] = time.perf_counter() - start
        for index, family in enumerate(families):
            rows.extend(run_family(family, batch, n_samples, n_refs, repeats, args.seed + 100 * index + n_samples))

    print(f"E-step dual solvers: KL bound {KL_BOUND}, torch {th.__version__}, {th.get_num_threads()} thread")
    print(
        "ms per solve_estep_dual call (no weights); warm = Q perturbed 1%, new batch = new states (best of 5 medians)"
    )
    header = (
        f"{'family':<11} {'B x K':<7} {'solver':<7} {'cold ms':>9} {'warm ms':>9} {'new batch':>10} "
        f"{'gap to cvxpy':>13}  iterations warm / new batch"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row.family:<11} {row.size:<7} {row.solver:<7} {row.cold_ms:9.3f} {row.warm_ms:9.3f} "
            f"{row.new_batch_ms:10.3f} {row.gap:13.1e}  {row.iterations}{'   ' + row.note if row.note else ''}"
        )
    print()
    for key, seconds in compile_s.items():
        print(f"cvxpy first solve (compiles the program) at {key}: {seconds:.2f} s")
    newton = [r for r in rows if r.solver == "newton"]
    gap = max(r.gap for r in newton if r.family != "infeasible")
    print(
        f"newton max relative objective gap to cvxpy (feasible families): {gap:.1e} (target <= 1e-6: "
        f"{'met' if gap <= 1e-6 else 'NOT met'})"
    )
    for row in newton:
        if row.size == "256x32" and row.family in ("slack", "active"):
            print(
                f"newton at 256x32, {row.family}: warm {row.warm_ms:.3f} ms (target < 0.5 ms: "
                f"{'met' if row.warm_ms < 0.5 else 'NOT met'}), new batch {row.new_batch_ms:.3f} ms"
            )


if __name__ == "__main__":
    main()
