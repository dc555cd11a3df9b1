"""SLUCB-QVI (Amani et al. 2021): deterministic safe policies for linear MDPs with an instantaneous cost constraint.

Each episode, with the statistics of the past episodes (Amani et al. 2021, Algorithm 1; see
docs/linear_agents.md, 'SLUCB-QVI: certified actions and segments'):

- the certified actions are those whose pessimistic cost ``<x, gamma_{h,s}> + beta ||x||_{M_s}`` is at most tau
  (finite action sets), or, on a finite star-convex set, the certified part [phi_0, phi_0 + alphahat_i (x_i - phi_0)]
  of every segment, where the pessimistic cost is affine in alpha;
- ``Q_h(s, x) = <w_h, x> + kappa_h(s) beta ||x||_M`` and ``V_h(s) = min{max over certified x of Q_h(s, x), H}``;
  the maximum over a certified segment is at one of its ends, so phi_0 and the N certified ends are compared;
- the policy plays the maximiser (the feature point itself on star-convex sets).

With probability at least 1 - delta no step violates the constraint; the safe action is always certified.
"""

from __future__ import annotations

import numpy as np

from sb3_safe.linear.lsvi_ucb import certified_segment_points
from sb3_safe.linear.planning import backward_pass
from sb3_safe.linear.safe_qvi import SafeLinearQVI


class SLUCBQVI(SafeLinearQVI):
    """SLUCB-QVI with SB3's interface (finite action sets or finite star-convex feature sets).

    See :class:`~sb3_safe.linear.safe_qvi.SafeLinearQVI` for the arguments.
    """

    def certified_candidates(self) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """The certified candidates under the current statistics, per layer of :meth:`_layers`.

        Returns:
            Candidate features ``(L, n_states, C, d)``, the certified mask ``(L, n_states, C)`` (finite action
            sets; ``None`` on star-convex sets, whose candidates are the certified segment ends), and the
            pessimistic cost of every original candidate ``(L, n_states, C)``.
        """
        spec = self.spec
        set_radius, _ = self._beta_values()
        layers, masks, costs = [], [], []
        for step, group in self._layers():
            pessimistic = self._cost_model(step, group).candidate_costs(set_radius[step])
            pessimistic[np.arange(spec.n_states), spec.safe_index] = spec.safe_costs[step]
            costs.append(pessimistic)
            if spec.kind == "finite":
                certified = pessimistic <= spec.cost_threshold
                certified[np.arange(spec.n_states), spec.safe_index] = True
                layers.append(spec.candidates)
                masks.append(certified)
            else:
                ends = certified_segment_points(
                    spec.safe_features,
                    spec.candidates[:, 1:],
                    spec.safe_costs[step],
                    pessimistic[:, 1:],
                    spec.cost_threshold,
                )
                layers.append(np.concatenate([spec.safe_features[:, None], ends], axis=1))
        return np.stack(layers), (np.stack(masks) if masks else None), np.stack(costs)

    def _plan(self) -> dict[str, float]:
        spec = self.spec
        set_radius, bonus_scale = self._beta_values()
        candidates, certified, _ = self.certified_candidates()
        plan = backward_pass(
            self.stats,
            self.group_of,
            candidates,
            spec.safe_index,
            spec.terminal,
            bonus_scale,
            self._clip_levels(),
            allowed=certified,
        )
        self._store_plan(candidates, plan.choice)
        logs = self._safety_logs(set_radius)
        if certified is not None:
            logs["certified_frac"] = float(certified[:, ~spec.terminal].mean())
        return logs
