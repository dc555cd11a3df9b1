"""The Lagrange multiplier of primal-dual safe RL (SAC-Lag, TD3-Lag, PPO-Lag), with its state in a state dict.

For a constraint J_c <= d the Lagrangian relaxation maximises J_r - lambda (J_c - d) over the policy and minimises it
over lambda >= 0. The multiplier follows the measured violation ``J_c - d`` (an episode-cost mean, or the cost
critic's value against its threshold):

- ``method="gradient"``: gradient ascent on lambda, i.e. descent on ``-lambda (J_c - d)``, with Adam, where lambda is
  ``max(raw, 0)`` (``"projected"``: raw is clamped to >= 0 after each step), ``exp(raw)`` (``"log"``) or
  ``softplus(raw)`` (``"softplus"``);
- ``method="pid"``: the PID Lagrangian of Stooke, Achiam & Abbeel (ICML 2020, Algorithm 2): with error
  e = J_c - d, integral I <- max(0, I + e) and derivative D = max(0, J_c - J_c_prev),
  ``lambda = max(0, K_P e + K_I I + K_D D)``. The CVPO paper's baselines use K_P = 0.1, K_I = 0.003, K_D = 0.001.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np
import torch as th
from torch import nn

METHODS = ("gradient", "pid")
PARAMETERIZATIONS = ("projected", "log", "softplus")


class LagrangeMultiplier(nn.Module):
    """One multiplier per constraint, updated from the measured costs and their limits.

    Args:
        n_constraints: Number of constraints m.
        method: ``"gradient"`` or ``"pid"``.
        init: Initial lambda (>= 0; > 0 for ``"log"`` and ``"softplus"``).
        learning_rate: Adam step size of the gradient method.
        parameterization: ``"projected"``, ``"log"`` or ``"softplus"`` (gradient method).
        kp: Proportional gain (PID).
        ki: Integral gain (PID).
        kd: Derivative gain (PID).
        max_value: Optional upper bound on lambda.
    """

    raw: nn.Parameter
    integral: th.Tensor
    previous_cost: th.Tensor
    pid_value: th.Tensor
    updates: th.Tensor

    def __init__(
        self,
        n_constraints: int = 1,
        method: str = "gradient",
        init: float = 0.0,
        learning_rate: float = 0.01,
        parameterization: str = "projected",
        kp: float = 0.1,
        ki: float = 0.003,
        kd: float = 0.001,
        max_value: float | None = None,
    ) -> None:
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
        if parameterization not in PARAMETERIZATIONS:
            raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}, got {parameterization!r}.")
        if init < 0 or (parameterization != "projected" and method == "gradient" and init <= 0):
            raise ValueError(
                f"init must be >= 0, and > 0 with the log or softplus parameterization (they reach 0 only in the "
                f"limit, where their gradient vanishes), got {init}."
            )
        if learning_rate <= 0 or min(kp, ki, kd) < 0:
            raise ValueError("learning_rate must be > 0 and the PID gains >= 0.")
        if max_value is not None and max_value <= 0:
            raise ValueError(f"max_value must be > 0 (or None), got {max_value}.")
        self.n_constraints, self.method, self.parameterization = n_constraints, method, parameterization
        self.learning_rate, self.kp, self.ki, self.kd, self.max_value = learning_rate, kp, ki, kd, max_value
        positive = max(init, 1e-300)
        raw = {"projected": init, "log": np.log(positive), "softplus": positive + np.log(-np.expm1(-positive))}
        self.raw = nn.Parameter(th.full((n_constraints,), float(raw[parameterization]), dtype=th.float64))
        self.register_buffer("integral", th.zeros(n_constraints, dtype=th.float64))
        self.register_buffer("previous_cost", th.full((n_constraints,), float("nan"), dtype=th.float64))
        self.register_buffer("pid_value", th.full((n_constraints,), float(init), dtype=th.float64))
        self.register_buffer("updates", th.zeros((), dtype=th.int64))
        self.optimizer = th.optim.Adam([self.raw], lr=learning_rate)

    def _from_raw(self) -> th.Tensor:
        if self.parameterization == "log":
            return self.raw.exp()
        if self.parameterization == "softplus":
            return nn.functional.softplus(self.raw)
        return self.raw.clamp_min(0.0)

    @property
    def value(self) -> np.ndarray:
        """The current lambda, ``(m,)``."""
        with th.no_grad():
            value = self.pid_value if self.method == "pid" else self._from_raw()
            if self.max_value is not None:
                value = value.clamp_max(self.max_value)
            return value.detach().cpu().numpy().copy()

    def update(self, cost: Any, limit: Any) -> np.ndarray:
        """One multiplier update from the measured cost J_c and its limit d (scalars or ``(m,)``).

        Returns:
            The new lambda, ``(m,)``.

        Raises:
            ValueError: If a cost or limit is not finite.
        """
        cost_t = th.as_tensor(np.broadcast_to(np.asarray(cost, dtype=np.float64), (self.n_constraints,)).copy())
        limit_t = th.as_tensor(np.broadcast_to(np.asarray(limit, dtype=np.float64), (self.n_constraints,)).copy())
        if not (th.isfinite(cost_t).all() and th.isfinite(limit_t).all()):
            raise ValueError(f"Lagrange update needs finite costs and limits, got cost={cost}, limit={limit}.")
        error = cost_t - limit_t
        if self.method == "pid":
            with th.no_grad():
                self.integral.copy_((self.integral + error).clamp_min(0.0))
                derivative = th.where(
                    th.isnan(self.previous_cost), th.zeros_like(cost_t), (cost_t - self.previous_cost).clamp_min(0.0)
                )
                self.previous_cost.copy_(cost_t)
                self.pid_value.copy_((self.kp * error + self.ki * self.integral + self.kd * derivative).clamp_min(0.0))
        else:
            loss = -(self._from_raw() * error).sum()
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            if self.parameterization == "projected":
                with th.no_grad():
                    self.raw.clamp_(min=0.0)
        if self.max_value is not None and self.method == "gradient" and self.parameterization == "projected":
            with th.no_grad():
                self.raw.clamp_(max=self.max_value)
        self.updates += 1
        return self.value


class EpisodeCostWindow:
    """The episode costs a multiplier update reads: those of the episodes finished since the last update.

    Primal-dual agents that drive lambda from measured episode costs (PPO-Lag; SAC-Lag and TD3-Lag as in FSRL and
    OmniSafe) add each finished training episode's per-constraint cost with :meth:`add` and read the mean with
    :meth:`take`. With no new episode, :meth:`take` can fall back to the mean of the last ``window`` episodes.

    Args:
        n_constraints: Number of constraints m.
        window: Episodes kept for the fallback.
    """

    def __init__(self, n_constraints: int, window: int = 100) -> None:
        if window < 1:
            raise ValueError(f"The episode cost window must hold at least one episode, got window={window}.")
        self.n_constraints = n_constraints
        self.pending: list[np.ndarray] = []
        self.recent: deque[np.ndarray] = deque(maxlen=window)

    def add(self, episode_costs: np.ndarray) -> None:
        """Note one finished episode's per-constraint costs ``(m,)``."""
        costs = np.asarray(episode_costs, dtype=np.float64).reshape(self.n_constraints)
        self.pending.append(costs)
        self.recent.append(costs)

    def take(self, fallback: bool = True) -> np.ndarray | None:
        """Mean cost ``(m,)`` of the episodes added since the last call (then forgotten); without any, the recent
        window's mean if ``fallback``, else None. None when no episode was ever added."""
        episodes = self.pending or (list(self.recent) if fallback else [])
        self.pending = []
        return np.mean(np.stack(episodes), axis=0) if episodes else None

    def clear(self) -> None:
        """Forget every episode (a new ``learn`` that resets the step counter)."""
        self.pending = []
        self.recent.clear()


class EpisodeCostFeedback:
    """Mixin for primal-dual agents whose multiplier reads the training episodes' costs (PPO-Lag, SAC-Lag, TD3-Lag).

    Every finished training episode's per-constraint cost goes into ``self.episode_cost_window``; a ``learn`` that
    resets the step counter starts it empty. Put it before the safe base class in the bases, and create
    ``episode_cost_window`` in ``__init__``.
    """

    episode_cost_window: EpisodeCostWindow

    def _setup_learn(self, total_timesteps: int, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("reset_num_timesteps", args[1] if len(args) > 1 else True):
            self.episode_cost_window.clear()
        return super()._setup_learn(total_timesteps, *args, **kwargs)  # type: ignore[misc]

    def _on_episode_costs(self, episode_costs: np.ndarray) -> None:
        self.episode_cost_window.add(episode_costs)
        super()._on_episode_costs(episode_costs)  # type: ignore[misc]
