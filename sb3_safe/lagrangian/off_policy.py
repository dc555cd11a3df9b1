"""What SAC-Lag and TD3-Lag share: cost critics, their Bellman targets, the cost penalty and the multiplier.

An off-policy Lagrangian agent solves ``max_pi min_{lambda >= 0} J_r(pi) - sum_j lambda_j (J_c,j(pi) - d_j)``: one cost
Q ensemble per constraint estimates the discounted cost of the current policy, and the actor's loss gains
``sum_j lambda_j E_s[Q_c,j(s, pi(s))]``, scaled by ``1 / (1 + sum_j lambda_j)`` (Stooke et al. 2020, Algorithm 1) so
that its size stays bounded as lambda grows. The multiplier follows one of two measured violations:

- ``lagrange_cost_source="episodes"`` (default; FSRL and OmniSafe): the mean undiscounted cost of the training
  episodes that finished since the last update against the per-episode limit d_j. It responds as soon as the
  episodes are over the limit, whatever the cost critic has learnt yet;
- ``"critic"``: ``mean_s Q_c,j(s, pi(s)) - eps_j``, with eps_j the per-state threshold of d_j
  (:func:`~sb3_safe.common.costs.cost_limit_to_q_threshold`). It lags when the cost critic does: a slowly moving
  target critic under-estimates the discounted cost early in training and lambda then stays at 0.

References:
    Ha, Xu, Tan, Levine & Tan, "Learning to Walk in the Real World with Minimal Human Effort", CoRL 2020 (SAC with a
    Lagrangian); Yang et al., "WCSAC: Worst-Case Soft Actor Critic for Safety-Constrained RL", AAAI 2021;
    Stooke, Achiam & Abbeel, "Responsive Safety in RL by PID Lagrangian Methods", ICML 2020.
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from stable_baselines3.common.policies import ContinuousCritic
from stable_baselines3.common.type_aliases import MaybeCallback, PyTorchObs, Schedule
from stable_baselines3.common.utils import FloatSchedule, get_parameters_by_name, polyak_update, update_learning_rate

from sb3_safe.common.buffers import CostReplayBufferSamples
from sb3_safe.common.cost_critics import (
    CostCritics,
    cost_bellman_targets,
    cost_q_threshold,
    cost_regression_losses,
    reduce_cost_ensemble,
)
from sb3_safe.common.costs import per_constraint_keys
from sb3_safe.common.lagrange import METHODS, EpisodeCostFeedback, EpisodeCostWindow, LagrangeMultiplier
from sb3_safe.common.off_policy import SafeOffPolicyAlgorithm, resolve_utd_ratio

COST_ENSEMBLE_REDUCTION = "max"
"""How a cost ensemble is combined: the pessimistic max (the optimistic min would under-estimate the cost)."""

COST_SOURCES = ("episodes", "critic")

SelfLagrangian = TypeVar("SelfLagrangian", bound="LagrangianOffPolicyAlgorithm")


class LagrangianOffPolicyAlgorithm(EpisodeCostFeedback, SafeOffPolicyAlgorithm):
    """Cost critics and a Lagrange multiplier for an SB3 actor-critic (placed before the SB3 class in the bases).

    Subclasses write ``train()``: they scale ``gradient_steps`` with :meth:`_scaled_gradient_steps`, set the
    learning rates with :meth:`_update_learning_rates`, and for every gradient step call :meth:`_cost_critic_step`
    with the next actions their reward critics bootstrap from and build the actor loss with
    :meth:`_lagrangian_actor_loss`; once the steps are done, :meth:`_finish_lagrangian_train` updates the multiplier
    once (from the episodes' costs or the cost critic, see ``lagrange_cost_source``) and logs.

    Args:
        policy: The SB3 policy (``"MlpPolicy"``, ``"MultiInputPolicy"`` or a class).
        env: Environment with a Box action space, ``info["cost"]`` and a known episode length.
        cost_limit: Per-episode, undiscounted cost limit d (a scalar or one per constraint).
        n_costs: Number of constraints m.
        episode_length: The fixed horizon T used to convert d into eps (default: the env's ``max_episode_steps``).
        lagrange_method: ``"pid"`` (Stooke et al. 2020; K_P = 0.1, K_I = 0.003, K_D = 0.001 by default) or
            ``"gradient"`` (Adam ascent on lambda).
        lagrange_kwargs: Further :class:`~sb3_safe.common.lagrange.LagrangeMultiplier` arguments (``init``,
            ``learning_rate``, ``kp``, ``ki``, ``kd``, ``parameterization``, ``max_value``).
        lagrange_cost_source: What the multiplier reads: ``"episodes"`` (the mean cost of the training episodes
            finished since the last update, against ``cost_limit``; no update while none finished) or ``"critic"``
            (``mean Q_c(s, pi(s))`` against the per-state threshold).
        lagrange_rescaling: Scale the actor loss by ``1 / (1 + sum_j lambda_j)`` (Stooke et al. 2020, Alg. 1).
        n_cost_critics: Members of each cost ensemble (reduced by max).
        utd_ratio: Gradient steps per environment step collected (fractions carried over; with ``train_freq=100``
            and 10 envs, 0.2 gives 200 steps per training); excludes ``gradient_steps``. None: SB3's
            ``gradient_steps``.
        critic_learning_rate: Learning rate (or schedule) of the reward and cost critics; None: ``learning_rate``.
        args: Positional arguments of the SB3 algorithm.
        kwargs: Keyword arguments of the SB3 algorithm.
    """

    continuous_actions_only: ClassVar[bool] = True
    cost_critics: CostCritics
    cost_critics_target: CostCritics
    lagrange: LagrangeMultiplier
    cost_threshold: np.ndarray | None
    episode_length: int | None

    # Provided by SB3's OffPolicyAlgorithm.
    tau: float
    gamma: float

    def __init__(
        self,
        policy: Any,
        env: Any,
        *args: Any,
        cost_limit: float | list[float] | np.ndarray = 25.0,
        n_costs: int = 1,
        episode_length: int | None = None,
        lagrange_method: str = "pid",
        lagrange_kwargs: dict[str, Any] | None = None,
        lagrange_cost_source: str = "episodes",
        lagrange_rescaling: bool = True,
        n_cost_critics: int = 1,
        utd_ratio: float | None = None,
        critic_learning_rate: float | Schedule | None = None,
        **kwargs: Any,
    ) -> None:
        if cost_limit is None:
            raise ValueError(f"{type(self).__name__} needs a per-episode cost_limit (e.g. cost_limit=25.0).")
        if lagrange_method not in METHODS:
            raise ValueError(f"lagrange_method must be one of {METHODS}, got {lagrange_method!r}.")
        lagrange_kwargs = dict(lagrange_kwargs or {})
        clashing = {"method", "n_constraints"} & set(lagrange_kwargs)
        if clashing:
            raise ValueError(
                f"lagrange_kwargs may not set {sorted(clashing)}: use lagrange_method, and n_costs for the number of "
                "constraints."
            )
        if lagrange_cost_source not in COST_SOURCES:
            raise ValueError(f"lagrange_cost_source must be one of {COST_SOURCES}, got {lagrange_cost_source!r}.")
        if n_cost_critics < 1:
            raise ValueError(f"n_cost_critics must be >= 1, got {n_cost_critics}.")
        self.utd_ratio = resolve_utd_ratio(utd_ratio, kwargs.get("gradient_steps"), default=None)
        if self.utd_ratio is not None:
            kwargs["gradient_steps"] = -1  # SB3 then passes the env steps collected, which utd_ratio scales
        self._gradient_step_carry = 0.0
        self.critic_learning_rate = critic_learning_rate
        self.lagrange_method = lagrange_method
        self.lagrange_kwargs = lagrange_kwargs
        self.lagrange_cost_source = lagrange_cost_source
        self.lagrange_rescaling = lagrange_rescaling
        self.n_cost_critics = n_cost_critics
        self.episode_cost_window = EpisodeCostWindow(n_costs, int(kwargs.get("stats_window_size", 100)))
        self._episode_length_arg = episode_length
        if kwargs.get("policy_kwargs") is not None:
            kwargs["policy_kwargs"] = dict(kwargs["policy_kwargs"])  # SB3 writes into it (use_sde): copy the caller's
        self.episode_length = None
        self.cost_threshold = None
        super().__init__(policy, env, *args, cost_limit=cost_limit, n_costs=n_costs, **kwargs)

    def _setup_model(self) -> None:
        if self.cost_threshold is None:  # a loaded model brings its own threshold
            self._set_cost_threshold()
        super()._setup_model()
        policy: Any = self.policy
        self.cost_critics = CostCritics([self._make_cost_critic() for _ in range(self.n_costs)])
        self.cost_critics_target = CostCritics([self._make_cost_critic() for _ in range(self.n_costs)])
        self.cost_critics_target.load_state_dict(self.cost_critics.state_dict())
        self.cost_critics_target.train(False)
        self.cost_critics.optimizer = policy.optimizer_class(
            self.cost_critics.parameters(), lr=self.lr_schedule(1), **policy.optimizer_kwargs
        )
        self._cost_batch_norm_stats = get_parameters_by_name(self.cost_critics, ["running_"])
        self._cost_batch_norm_stats_target = get_parameters_by_name(self.cost_critics_target, ["running_"])
        self.lagrange = LagrangeMultiplier(self.n_costs, method=self.lagrange_method, **self.lagrange_kwargs)
        critic_lr = self.critic_learning_rate
        self.critic_lr_schedule = None if critic_lr is None else FloatSchedule(critic_lr)

    def _set_cost_threshold(self) -> None:
        """eps = d (1 - gamma^T) / ((1 - gamma) T) per constraint, once (clear error when T is unknown)."""
        if self.env is None:
            raise ValueError(f"{type(self).__name__} needs an environment to derive its cost threshold.")
        assert self.cost_limit is not None  # checked in __init__
        self.episode_length, self.cost_threshold = cost_q_threshold(
            self.env, self.cost_limit, self.gamma, self._episode_length_arg
        )

    def _make_cost_critic(self) -> ContinuousCritic:
        """A new cost ensemble shaped like the reward critic, with its own features extractor."""
        policy: Any = self.policy
        kwargs = {**policy.critic_kwargs, "n_critics": self.n_cost_critics, "share_features_extractor": False}
        return ContinuousCritic(**policy._update_features_extractor(kwargs, None)).to(self.device)

    @property
    def duals(self) -> dict[str, np.ndarray]:
        """The current multipliers: ``{"lambda": array of shape (m,)}``."""
        return {"lambda": self.lagrange.value}

    def _set_cost_critics_training_mode(self, mode: bool) -> None:
        for critic in self.cost_critics.ensembles():
            critic.set_training_mode(mode)

    def _cost_q(self, obs: PyTorchObs, actions: th.Tensor, target: bool = False) -> th.Tensor:
        """Each constraint's cost ensemble at (s, a), reduced by max: ``(m, B, 1)``."""
        critics = self.cost_critics_target if target else self.cost_critics
        return th.stack(
            [reduce_cost_ensemble(critic(obs, actions), COST_ENSEMBLE_REDUCTION) for critic in critics.ensembles()]
        )

    def _cost_critic_step(
        self, data: CostReplayBufferSamples, next_actions: th.Tensor, discounts: th.Tensor | float
    ) -> th.Tensor:
        """One optimizer step of every cost ensemble on its Bellman target; returns the losses ``(m,)``.

        ``y_j = c_j + gamma^n (1 - terminated) max_k Qbar_c,j,k(s', a')`` with a' the reward critics' next action.
        Truncated transitions bootstrap (``dones`` marks true terminations only, SB3's convention).
        """
        with th.no_grad():
            bootstrap = (1.0 - data.dones) * discounts
            targets = cost_bellman_targets(
                data.costs, bootstrap, self._cost_q(data.next_observations, next_actions, True)
            )
        losses = cost_regression_losses(self.cost_critics, data.observations, data.actions, targets)
        self.cost_critics.optimizer.zero_grad()
        losses.sum().backward()
        self.cost_critics.optimizer.step()
        return losses.detach()

    def _lagrangian_actor_loss(
        self, reward_loss: th.Tensor, obs: PyTorchObs, actions: th.Tensor
    ) -> tuple[th.Tensor, th.Tensor]:
        """``(L_r + sum_j lambda_j mean_s Q_c,j(s, a)) / (1 + sum_j lambda_j)`` (the division with
        ``lagrange_rescaling``), differentiable in ``actions``, and the cost means ``(m,)``, detached."""
        qc_mean = self._cost_q(obs, actions).squeeze(-1).mean(dim=1)
        lam = th.as_tensor(self.lagrange.value, dtype=qc_mean.dtype, device=qc_mean.device)
        loss = reward_loss + (lam * qc_mean).sum()
        if self.lagrange_rescaling:
            loss = loss / (1.0 + lam.sum())
        return loss, qc_mean.detach()

    def _update_learning_rates(self, actor_optimizers: list[th.optim.Optimizer]) -> None:
        """SB3's schedule for the actor (and entropy) optimizers; ``critic_learning_rate`` for every critic."""
        critic_optimizers = [self.critic.optimizer, self.cost_critics.optimizer]  # type: ignore[attr-defined]
        if self.critic_lr_schedule is None:
            self._update_learning_rate([*actor_optimizers, *critic_optimizers])
            return
        self._update_learning_rate(actor_optimizers)
        critic_lr = self.critic_lr_schedule(self._current_progress_remaining)
        for optimizer in critic_optimizers:
            update_learning_rate(optimizer, critic_lr)
        self.logger.record("train/critic_learning_rate", critic_lr)

    def learn(
        self: SelfLagrangian,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 4,
        tb_log_name: str | None = None,
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfLagrangian:
        """SB3's ``learn``; TensorBoard runs are named after the class (``SACLag_1``), not its SB3 base."""
        return super().learn(  # type: ignore[misc]
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name or type(self).__name__,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )

    def _update_cost_targets(self) -> None:
        polyak_update(self.cost_critics.parameters(), self.cost_critics_target.parameters(), self.tau)
        polyak_update(self._cost_batch_norm_stats, self._cost_batch_norm_stats_target, 1.0)

    def _finish_lagrangian_train(self, qc_means: list[th.Tensor], cost_losses: list[th.Tensor]) -> None:
        """Update lambda once, then log: on the mean cost of the episodes finished since the last update against
        ``cost_limit`` (none finished: no update), or on ``mean Q_c(s, pi(s)) - eps`` over this call's batches."""
        if not qc_means:
            return
        assert self.cost_threshold is not None and self.cost_limit is not None
        qc_mean = th.stack(qc_means).mean(dim=0).cpu().numpy().astype(np.float64)
        logged: dict[str, np.ndarray] = {"train/qc_mean": qc_mean, "train/qc_threshold": self.cost_threshold}
        if self.lagrange_cost_source == "critic":
            self.lagrange.update(qc_mean, self.cost_threshold)
        else:
            episode_cost = self.episode_cost_window.take(fallback=False)
            if episode_cost is not None:
                self.lagrange.update(episode_cost, self.cost_limit)
                logged["train/ep_cost_for_lambda"] = episode_cost
        logged["train/lambda"] = self.lagrange.value
        logged["train/cost_critic_loss"] = th.stack(cost_losses).mean(dim=0).cpu().numpy()
        for prefix, values in logged.items():
            for key, value in per_constraint_keys(prefix, values).items():
                self.logger.record(key, value)

    def _excluded_save_params(self) -> list[str]:
        return [
            *super()._excluded_save_params(),
            "cost_critics",
            "cost_critics_target",
            "lagrange",
            "_cost_batch_norm_stats",
            "_cost_batch_norm_stats_target",
        ]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        state_dicts, variables = super()._get_torch_save_params()
        extra = ["cost_critics", "cost_critics_target", "cost_critics.optimizer", "lagrange", "lagrange.optimizer"]
        return [*state_dicts, *extra], variables
