"""RSLUCB-QVI (Amani et al. 2021, Algorithm 2): randomised safe policies for linear MDPs with finite action sets.

The policy at (h, s) is a distribution theta over the actions. Its constraint holds in expectation over the agent's own
sampling: the pessimistic expected cost of theta (docs/linear_agents.md, 'The safety model'),

    g^T theta + beta ||Rb theta||,   g = Phi_s gamma_{h,s},   Rb = psd_sqrt(Phi_s M_s Phi_s^T),

must be at most tau. Each step of the backward pass solves, for every state, the second-order-cone program
``max_theta q^T theta`` over that certified part of the simplex, with q = Q_h(s, .) (unclipped), and sets
``V_h(s) = min{q^T theta, H}``. The theta found are the plan; actions are sampled from them (docs/linear_agents.md,
'RSLUCB-QVI: randomised plans and the per-state SOCP').
"""

from __future__ import annotations

import time
import warnings
from collections import Counter
from typing import Any

import numpy as np
from stable_baselines3.common.type_aliases import GymEnv

from sb3_safe.linear.adapter import LinearQVIPolicy
from sb3_safe.linear.planning import backward_pass
from sb3_safe.linear.safe_qvi import SafeLinearQVI
from sb3_safe.linear.socp import SOLVERS as SOCP_SOLVERS
from sb3_safe.linear.socp import SimplexSOCP, psd_sqrt


class RSLUCBQVI(SafeLinearQVI):
    """RSLUCB-QVI with SB3's interface (Discrete action spaces).

    Args:
        env: The environment (id or instance) exposing the linear-MDP protocol with a finite action set.
        socp_solver: ``"fast"`` (screening and face enumeration, cvxpy as the fallback; default) or ``"cvxpy"``
            (every per-state problem through cvxpy, the reference).
        **kwargs: :class:`~sb3_safe.linear.safe_qvi.SafeLinearQVI` arguments.
    """

    randomized_plan = True

    def __init__(
        self,
        env: GymEnv | str | None,
        socp_solver: str = "fast",
        policy: str | type[LinearQVIPolicy] = LinearQVIPolicy,
        _init_setup_model: bool = True,
        **kwargs: Any,
    ) -> None:
        if socp_solver not in SOCP_SOLVERS:
            raise ValueError(f"socp_solver must be one of {SOCP_SOLVERS}, got {socp_solver!r}.")
        self.socp_solver = socp_solver
        self._warned_deterministic = False
        self.solver_counts: Counter[str] = Counter()
        self.planned_values: np.ndarray | None = None  # V_h(s) of the last backward pass, (H + 1, n_states)
        self.last_phase_ms: dict[str, float] = {}
        super().__init__(env, policy=policy, _init_setup_model=_init_setup_model, **kwargs)

    def _setup_model(self) -> None:
        if self.spec.kind != "finite":
            raise TypeError(
                "RSLUCBQVI randomises over a finite action set, but this environment's actions are feature points "
                "on star-convex segments: use SLUCBQVI there."
            )
        super()._setup_model()

    def _problems(self, set_radius: np.ndarray) -> dict[int, SimplexSOCP]:
        """One batch of per-state problems per layer (step of the safe set); the statistics are fixed in a pass."""
        spec = self.spec
        problems = {}
        for step, group in self._layers():
            model = self._cost_model(step, group, full=True)
            spread = psd_sqrt(model.quadratic)
            states = np.arange(spec.n_states)
            # G e_{a0} = 0 exactly, so its square root too: do not let round-off (~1e-7) give a0 a bonus
            spread[states, spec.safe_index, :] = 0.0
            spread[states, :, spec.safe_index] = 0.0
            problems[step] = SimplexSOCP(
                model.linear,
                set_radius[step] * spread,
                spec.cost_threshold,
                spec.safe_index,
                solver=self.socp_solver,
                active=~spec.terminal,
            )
        return problems

    def _plan(self) -> dict[str, float]:
        spec = self.spec
        start = time.perf_counter()
        set_radius, bonus_scale = self._beta_values()
        problems = self._problems(set_radius)
        safe_sets_ms = 1e3 * (time.perf_counter() - start)
        counts: Counter[str] = Counter()
        solve_seconds = 0.0

        def maximise(step: int, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            nonlocal solve_seconds
            clock = time.perf_counter()
            solution = problems[step if len(problems) > 1 else 0].solve(q)
            solve_seconds += time.perf_counter() - clock
            counts.update(
                greedy=solution.greedy,
                face=solution.face,
                cvxpy=solution.cvxpy,
                fallbacks_to_safe=solution.fallbacks_to_safe,
            )
            return solution.theta, solution.value

        plan = backward_pass(
            self.stats,
            self.group_of,
            spec.candidates[None],
            spec.safe_index,
            spec.terminal,
            bonus_scale,
            self._clip_levels(),
            maximiser=maximise,
        )
        self.policy.plan.numpy()[:] = plan.decisions
        self.planned_values = plan.values
        self.last_phase_ms = {"safe_sets": safe_sets_ms, "solve": 1e3 * solve_seconds}
        self.solver_counts.update(counts)
        solved = max(sum(counts[key] for key in ("greedy", "face", "cvxpy")), 1)
        logs = self._safety_logs(set_radius)
        logs.update(
            {
                "solver/greedy_frac": counts["greedy"] / solved,
                "solver/face_frac": counts["face"] / solved,
                "solver/cvxpy_fallbacks": float(counts["cvxpy"]),
                "solver/safe_fallbacks": float(counts["fallbacks_to_safe"]),
                "time/safe_sets_ms": safe_sets_ms,
                "time/solve_ms": 1e3 * solve_seconds,
            }
        )
        return logs

    def _expected_step_cost(self, state: int, step: int, action: Any, info: dict[str, Any]) -> float | None:
        """E_{a ~ theta_h(s)} c_h(s, a) from the ground truth gamma* (the constraint is on this expectation)."""
        gamma_star = self.spec.gamma_star
        if gamma_star is None:
            return super()._expected_step_cost(state, step, action, info)
        theta = self.policy.plan.numpy()[min(step, self.spec.horizon - 1), state]
        costs = self.spec.candidates[state] @ gamma_star[min(step, len(gamma_star) - 1)]
        return float(theta @ costs)

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """Sample actions from the planned distributions; ``deterministic=True`` still samples (with a warning once):
        the most likely action alone may break the constraint, which holds only in expectation."""
        if deterministic and not self._warned_deterministic:
            self._warned_deterministic = True
            warnings.warn(
                "RSLUCBQVI.predict(deterministic=True) still samples from the planned distribution: its safety "
                "guarantee holds in expectation over that sampling, not for the most likely action alone.",
                stacklevel=2,
            )
        return super().predict(observation, state, episode_start, deterministic)
