"""The linear-MDP protocol that the safe linear agents read from ``env.unwrapped`` (see the plugin README).

A linear MDP has features phi(s, a) in R^d with (the linear MDP of Jin et al. 2020, with a linear cost)::

    P_h(s'|s,a) = <phi(s,a), mu_h*(s')>,   r_h(s,a) = <phi(s,a), theta_h*>,   c_h(s,a) = <phi(s,a), gamma_h*>

and a known safe action a_0(s) whose cost tau_h(s) = <phi(s, a_0(s)), gamma_h*> <= tau is known.
Steps h are 0-based (0..H-1), states are ints. Agents decide from ``features``/``segments``, ``safe_action``,
``safe_cost``, ``is_terminal`` and the constants; ``mu_star``, ``theta_star``, ``gamma_star``, ``true_cost`` and
``transition_probabilities`` are ground truth, for evaluation and tests only.

:class:`FiniteActionLinearMDP` (Frozen Lake) and :class:`StarConvexLinearMDP` (the synthetic MDP, whose action
is a feature point on D(s) = union_i [phi_0(s), x_i(s)]) are ``typing.Protocol``\\ s that agents can use in type
hints and ``isinstance`` checks. :class:`LinearMDPEnvMixin` is the bookkeeping both environments share.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
from gymnasium import spaces

FloatArray = npt.NDArray[np.float64]
"""A float64 numpy array."""


@runtime_checkable
class LinearMDP(Protocol):
    """Members common to every linear-MDP environment (on ``env.unwrapped``).

    Attributes:
        horizon: H, the number of steps per episode (truncation after H steps).
        feature_dim: d.
        n_states: Number of states.
        cost_threshold: tau, the per-step bound on the expected cost.
        time_homogeneous: True if mu*, theta*, gamma* do not depend on h (then P = 1 below, else P = H).
        mu_star: (P, d, n_states): P_h(s'|s,a) = phi(s,a) @ mu_star[h or 0][:, s'].
        theta_star: (P, d): r_h(s,a) = phi(s,a) @ theta_star[h or 0].
        gamma_star: (P, d): c_h(s,a) = phi(s,a) @ gamma_star[h or 0].
        cost_noise_sigma: Sub-Gaussian scale of the observed-cost noise z - c (for the safety radius).
        min_safety_gap: Floor for tau - tau_h(s) in kappa_h(s), or None for no floor (sb3-safe's
            docs/linear_agents.md, 'kappa and the gap floor').
    """

    horizon: int
    feature_dim: int
    n_states: int
    cost_threshold: float
    time_homogeneous: bool
    mu_star: FloatArray
    theta_star: FloatArray
    gamma_star: FloatArray
    cost_noise_sigma: float
    min_safety_gap: float | None

    def safe_cost(self, s: int, h: int) -> float:
        """tau_h(s) = <phi(s, a_0(s)), gamma_h*>, the known cost of the safe action."""
        ...

    def is_terminal(self, s: int) -> bool:
        """Whether ``s`` ends the episode (its value is 0)."""
        ...

    def true_cost(self, s: int, action: Any, h: int) -> float:
        """Ground truth c_h(s, a): the expected cost of ``action`` at ``s``."""
        ...

    def transition_probabilities(self, s: int, action: Any, h: int) -> FloatArray:
        """Ground truth P_h(.|s, a), shape (n_states,)."""
        ...


@runtime_checkable
class FiniteActionLinearMDP(LinearMDP, Protocol):
    """A linear MDP with ``n_actions`` discrete actions (Frozen Lake)."""

    n_actions: int

    def features(self, s: int) -> FloatArray:
        """phi(s, .) as an (n_actions, d) array."""
        ...

    def feature_table(self) -> FloatArray:
        """phi for every state and action, (n_states, n_actions, d)."""
        ...

    def safe_action(self, s: int) -> int:
        """a_0(s), the known safe action."""
        ...


@runtime_checkable
class StarConvexLinearMDP(LinearMDP, Protocol):
    """A linear MDP whose action at s is a feature point of D(s) = union_i [phi_0(s), x_i(s)] (Definition 1)."""

    n_segments: int

    def segments(self, s: int) -> tuple[FloatArray, FloatArray]:
        """(phi_0(s) of shape (d,), the endpoints x_i(s) of shape (N, d))."""
        ...

    def segment_table(self) -> tuple[FloatArray, FloatArray]:
        """(phi_0 for every state (n_states, d), endpoints (n_states, N, d))."""
        ...

    def safe_action(self, s: int) -> FloatArray:
        """a_0(s) = phi_0(s), shape (d,)."""
        ...


def read_only(array: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """Mark ``array`` read-only (the model tables are shared with callers without copying) and return it."""
    array.flags.writeable = False
    return array


class LinearMDPEnvMixin:
    """Episode bookkeeping shared by the linear-MDP environments.

    Observations are ``Dict(state=Discrete(n_states), step=Discrete(H + 1))``, where ``step`` is the 0-based index
    h of the next decision (0 after reset, H once the episode is truncated). The environment truncates by itself
    after H steps, so it is registered without ``max_episode_steps``.
    """

    horizon: int
    n_states: int
    time_homogeneous: bool

    def _protocol_observation_space(self) -> spaces.Dict:
        return spaces.Dict({"state": spaces.Discrete(self.n_states), "step": spaces.Discrete(self.horizon + 1)})

    @staticmethod
    def _observation(state: int, step: int) -> dict[str, np.int64]:
        return {"state": np.int64(state), "step": np.int64(step)}

    def _check_state(self, s: Any) -> int:
        """``s`` as an int state index, or a ``ValueError``."""
        if isinstance(s, bool) or not isinstance(s, int | np.integer) or not 0 <= int(s) < self.n_states:
            raise ValueError(f"state must be an int in [0, {self.n_states}), got {s!r}.")
        return int(s)

    def _check_step(self, h: Any) -> int:
        """``h`` as an int step index in [0, H), or a ``ValueError``."""
        if isinstance(h, bool) or not isinstance(h, int | np.integer) or not 0 <= int(h) < self.horizon:
            raise ValueError(f"step h must be an int in [0, {self.horizon}) (0-based), got {h!r}.")
        return int(h)

    def _parameter_index(self, h: Any) -> int:
        """Index into mu_star/theta_star/gamma_star for step ``h``: 0 if time-homogeneous, else h."""
        step = self._check_step(h)
        return 0 if self.time_homogeneous else step
