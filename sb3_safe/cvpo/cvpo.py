"""Constrained Variational Policy Optimization (Liu et al., ICML 2022) as an SB3 off-policy algorithm."""

from __future__ import annotations

import time
import warnings
from collections import defaultdict
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.policies import BasePolicy, ContinuousCritic
from stable_baselines3.common.preprocessing import get_action_dim
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, PyTorchObs, Schedule
from stable_baselines3.common.utils import FloatSchedule, polyak_update, update_learning_rate

from sb3_safe.common.buffers import CostReplayBufferSamples
from sb3_safe.common.cost_critics import CostCritics, cost_bellman_targets, cost_q_threshold, cost_regression_losses
from sb3_safe.common.costs import per_constraint_keys
from sb3_safe.common.off_policy import SafeOffPolicyAlgorithm, resolve_utd_ratio
from sb3_safe.cvpo.estep import EStepWarmStart, NonFiniteQError, solve_estep
from sb3_safe.cvpo.gaussian import Gaussian, WeightedMoments
from sb3_safe.cvpo.mstep import TrustRegion, mstep_loss
from sb3_safe.cvpo.policies import CVPOPolicy, GaussianActor, MlpPolicy, MultiInputPolicy

SelfCVPO = TypeVar("SelfCVPO", bound="CVPO")
OLD_POLICY_MODES = ("polyak", "hard_copy")


class CVPO(SafeOffPolicyAlgorithm):
    """Constrained Variational Policy Optimization (Liu et al. 2022, arXiv 2201.11927).

    Each gradient step: (1) reward and cost critics regress onto Bellman targets (n-step optional, SB3's
    truncation handling); (2) E-step: K actions per state from pi_old (the target actor) are reweighted by
    ``q ∝ pi_old exp((Q_r - lambda Q_c)/eta)``, with (eta, lambda) the solution of the convex dual (paper eq. 7-9;
    docs/cvpo.md, 'E-step'), solved to convergence; (3) M-step: weighted maximum likelihood within decoupled mean and
    covariance KL trust regions (paper eq. 12-13; docs/cvpo.md, 'M-step').

    Args:
        policy: ``"MlpPolicy"``, ``"MultiInputPolicy"`` or a :class:`CVPOPolicy` subclass.
        env: Environment (id of :func:`sb3_safe.list_envs`, Gymnasium env or VecEnv) with a Box action space,
            ``info["cost"]`` and a fixed episode length.
        cost_limit: Per-episode, undiscounted cost limit d (one per constraint, or a scalar).
        learning_rate: Actor learning rate (or schedule).
        critic_learning_rate: Learning rate of the reward and cost critics (or schedule).
        buffer_size: Replay buffer size.
        learning_starts: Steps of uniform random actions before learning.
        batch_size: Minibatch size B.
        tau: Polyak coefficient of the critic targets.
        actor_target_tau: Polyak coefficient of pi_old (the target actor), with ``old_policy="polyak"``.
        gamma: Discount factor.
        train_freq: Collect this much between trainings (SB3 semantics).
        utd_ratio: Gradient steps per environment step collected (default 0.2 when ``gradient_steps`` is None).
        gradient_steps: A fixed number of gradient steps per training (SB3 semantics); excludes ``utd_ratio``.
        n_steps: n-step returns for rewards and costs alike.
        episode_length: The fixed episode length T (default: the env's ``spec.max_episode_steps``).
        n_samples: Actions K sampled per state in the E-step.
        estep_kl: KL bound eps of the E-step (the dual's trust region).
        dual_solver: ``"newton"`` (default), ``"slsqp"`` or ``"cvxpy"``.
        dual_tol: Tolerance of the dual solver.
        dual_max_iter: Iteration cap of the dual solver.
        eta_init: Initial temperature eta.
        lam_init: Initial multiplier lambda.
        eta_bounds: Box of eta.
        lam_bounds: Box of lambda.
        mstep_iters: Actor updates per gradient step on the same batch and weights.
        kl_mean: Trust-region bound eps_mu on the mean.
        kl_cov: Trust-region bound eps_Sigma on the covariance.
        alpha_mean_step: Projected step size of alpha_mu.
        alpha_mean_max: Upper bound of alpha_mu.
        alpha_cov_step: Projected step size of alpha_Sigma.
        alpha_cov_max: Upper bound of alpha_Sigma.
        max_grad_norm: Clip the actor's gradient norm (None: no clipping).
        old_policy: ``"polyak"`` (pi_old is a slowly moving target actor) or ``"hard_copy"``.
        old_policy_update_interval: With ``"hard_copy"``, copy the actor every this many gradient steps.
        n_costs: Number of constraints m reported by the env (``info["costs"]`` when m > 1).
        nonfinite: ``"raise"`` (default) or ``"skip"``: what a NaN or infinite reward, cost or observation from the
            env does (see :class:`~sb3_safe.common.safe_algorithm.SafeAlgorithmMixin`).
        replay_buffer_class: A cost replay buffer class (default: chosen like SB3 chooses).
        replay_buffer_kwargs: Its keyword arguments.
        optimize_memory_usage: SB3's memory-efficient replay buffer.
        action_noise: Optional extra exploration noise on the raw samples.
        stats_window_size: Episodes averaged in the rollout logs.
        tensorboard_log: TensorBoard log folder.
        policy_kwargs: Policy arguments (``net_arch``, ``covariance``, ``bounded_mean``, ``n_critics``,
            ``n_cost_critics``, ``cost_critic_reduce``...).
        verbose: Verbosity.
        seed: Random seed.
        device: Torch device.
        _init_setup_model: Build the networks now.
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": MlpPolicy,
        "MultiInputPolicy": MultiInputPolicy,
    }
    continuous_actions_only: ClassVar[bool] = True
    policy: CVPOPolicy
    actor: GaussianActor
    actor_target: GaussianActor
    critic: ContinuousCritic
    critic_target: ContinuousCritic
    cost_critics: CostCritics
    cost_critics_target: CostCritics

    def __init__(
        self,
        policy: str | type[CVPOPolicy],
        env: GymEnv | str,
        cost_limit: float | list[float] = 25.0,
        learning_rate: float | Schedule = 5e-4,
        critic_learning_rate: float | Schedule = 1e-3,
        buffer_size: int = 200_000,
        learning_starts: int = 0,
        batch_size: int = 256,
        tau: float = 0.05,
        actor_target_tau: float = 0.005,
        gamma: float = 0.99,
        train_freq: int | tuple[int, str] = 100,
        utd_ratio: float | None = None,
        gradient_steps: int | None = None,
        n_steps: int = 1,
        episode_length: int | None = None,
        n_samples: int = 16,
        estep_kl: float = 0.02,
        dual_solver: str = "newton",
        dual_tol: float = 1e-6,
        dual_max_iter: int = 50,
        eta_init: float = 1.0,
        lam_init: float = 0.0,
        eta_bounds: tuple[float, float] = (1e-6, 1e5),
        lam_bounds: tuple[float, float] = (0.0, 1e5),
        mstep_iters: int = 1,
        kl_mean: float = 0.005,
        kl_cov: float = 0.0005,
        alpha_mean_step: float = 1.0,
        alpha_mean_max: float = 0.1,
        alpha_cov_step: float = 100.0,
        alpha_cov_max: float = 10.0,
        max_grad_norm: float | None = None,
        old_policy: str = "polyak",
        old_policy_update_interval: int = 1,
        n_costs: int = 1,
        nonfinite: str = "raise",
        replay_buffer_class: type[ReplayBuffer] | None = None,
        replay_buffer_kwargs: dict[str, Any] | None = None,
        optimize_memory_usage: bool = False,
        action_noise: ActionNoise | None = None,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ) -> None:
        utd_ratio = resolve_utd_ratio(utd_ratio, gradient_steps, default=0.2)
        if estep_kl <= 0 or kl_mean <= 0 or kl_cov <= 0:
            raise ValueError(
                f"KL bounds must be > 0 (got estep_kl={estep_kl}, kl_mean={kl_mean}, kl_cov={kl_cov}): they are "
                "trust-region radii; a bound of 0 would forbid any policy change."
            )
        if n_samples < 2:
            raise ValueError(f"n_samples (K) must be >= 2 for the E-step to reweight anything, got {n_samples}.")
        if mstep_iters < 1:
            raise ValueError(f"mstep_iters must be >= 1, got {mstep_iters}.")
        if old_policy not in OLD_POLICY_MODES:
            raise ValueError(f"old_policy must be one of {OLD_POLICY_MODES}, got {old_policy!r}.")
        if cost_limit is None:
            raise ValueError("CVPO needs a per-episode cost_limit (e.g. cost_limit=25.0).")
        self.utd_ratio = utd_ratio
        self.critic_learning_rate = critic_learning_rate
        self.actor_target_tau = actor_target_tau
        self.n_samples = n_samples
        self.estep_kl = estep_kl
        self.dual_solver = dual_solver
        self.dual_tol = dual_tol
        self.dual_max_iter = dual_max_iter
        self.eta_bounds = eta_bounds
        self.lam_bounds = lam_bounds
        self.mstep_iters = mstep_iters
        self.kl_mean = kl_mean
        self.kl_cov = kl_cov
        self.alpha_mean_step = alpha_mean_step
        self.alpha_mean_max = alpha_mean_max
        self.alpha_cov_step = alpha_cov_step
        self.alpha_cov_max = alpha_cov_max
        self.max_grad_norm = max_grad_norm
        self.old_policy = old_policy
        self.old_policy_update_interval = old_policy_update_interval
        # Learned duals, all saved and restored (docs/cvpo.md, 'What is saved').
        self.eta = float(eta_init)
        self.lam = np.full(n_costs, float(lam_init))
        self.alpha_mean = 0.0
        self.alpha_cov = 0.0
        self.estep_warm_start = EStepWarmStart.initial(eta_init, self.lam)
        self._gradient_step_carry = 0.0
        self._hard_copy_counter = 0
        self._early_termination_warned = False
        super().__init__(
            policy,
            env,
            cost_limit=cost_limit,
            n_costs=n_costs,
            nonfinite=nonfinite,
            learning_rate=learning_rate,
            buffer_size=buffer_size,
            learning_starts=learning_starts,
            batch_size=batch_size,
            tau=tau,
            gamma=gamma,
            train_freq=train_freq,
            gradient_steps=-1 if gradient_steps is None else gradient_steps,
            action_noise=action_noise,
            replay_buffer_class=replay_buffer_class,
            replay_buffer_kwargs=replay_buffer_kwargs,
            optimize_memory_usage=optimize_memory_usage,
            n_steps=n_steps,
            policy_kwargs=policy_kwargs,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            verbose=verbose,
            device=device,
            seed=seed,
            sde_support=False,
            supported_action_spaces=(spaces.Box,),
            support_multi_env=True,
        )
        if self.env is not None:
            assert self.cost_limit is not None  # validated above
            self.episode_length, self.cost_threshold = cost_q_threshold(
                self.env, self.cost_limit, self.gamma, episode_length
            )
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        self.policy_kwargs = {**self.policy_kwargs}  # never write into the caller's dict
        self.policy_kwargs.setdefault("n_constraints", self.n_costs)
        if self.policy_kwargs["n_constraints"] != self.n_costs:
            raise ValueError(
                f"policy_kwargs n_constraints={self.policy_kwargs['n_constraints']} differs from "
                f"n_costs={self.n_costs}: leave n_constraints out, it follows n_costs."
            )
        super()._setup_model()
        self.critic_lr_schedule = FloatSchedule(self.critic_learning_rate)
        self._create_aliases()
        self._set_learning_rates()

    def _create_aliases(self) -> None:
        self.actor = self.policy.actor
        self.actor_target = self.policy.actor_target
        self.critic = self.policy.critic
        self.critic_target = self.policy.critic_target
        self.cost_critics = self.policy.cost_critics
        self.cost_critics_target = self.policy.cost_critics_target

    def _set_learning_rates(self) -> tuple[float, float]:
        """Actor and critic learning rates from their schedules at the current progress."""
        progress = self._current_progress_remaining
        actor_lr, critic_lr = self.lr_schedule(progress), self.critic_lr_schedule(progress)
        update_learning_rate(self.actor.optimizer, actor_lr)
        for optimizer in (self.critic.optimizer, self.cost_critics.optimizer):
            update_learning_rate(optimizer, critic_lr)
        return actor_lr, critic_lr

    @property
    def duals(self) -> dict[str, Any]:
        """The current duals: ``eta``, ``lambda`` (a float, or an array with several constraints), ``alpha_mean``,
        ``alpha_cov``."""
        lam: float | np.ndarray = float(self.lam[0]) if self.lam.size == 1 else self.lam.copy()
        return {"eta": self.eta, "lambda": lam, "alpha_mean": self.alpha_mean, "alpha_cov": self.alpha_cov}

    def _sample_action(
        self, learning_starts: int, action_noise: ActionNoise | None = None, n_envs: int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        """Raw normalised samples go to the buffer; the env gets them clipped to [-1, 1] and unscaled.

        SB3 would store the clipped action, but the M-step needs the policy's own samples (docs/cvpo.md, 'Actions:
        raw samples and clipped environment actions').
        """
        if self.num_timesteps < learning_starts:
            raw = np.random.uniform(-1.0, 1.0, size=(n_envs, get_action_dim(self.action_space))).astype(np.float32)
        else:
            obs_tensor, _ = self.policy.obs_to_tensor(self._last_obs)  # type: ignore[arg-type]
            with th.no_grad():
                raw = self.actor(obs_tensor).cpu().numpy()
        if action_noise is not None:
            raw = raw + action_noise()
        env_action = self.policy.unscale_action(np.clip(raw, -1.0, 1.0))
        return env_action, raw

    def _update_info_buffer(self, infos: list[dict[str, Any]], dones: np.ndarray | None = None) -> None:
        before = self.early_terminations
        super()._update_info_buffer(infos, dones)
        if self.early_terminations > before and not self._early_termination_warned:
            self._early_termination_warned = True
            warnings.warn(
                "An episode ended by termination before its time limit: CVPO's cost threshold assumes episodes of "
                f"exactly T={self.episode_length} steps, so the per-episode cost_limit is only approximate on such "
                "episodes. They are counted in rollout/early_terminations.",
                stacklevel=2,
            )

    def train(self, gradient_steps: int, batch_size: int = 256) -> None:
        """Run CVPO updates; with ``utd_ratio``, ``gradient_steps`` (the env steps just collected) is scaled by it."""
        gradient_steps = self._scaled_gradient_steps(gradient_steps)
        if gradient_steps <= 0:
            return
        self.policy.set_training_mode(True)
        actor_lr, critic_lr = self._set_learning_rates()
        self.logger.record("train/learning_rate", actor_lr)
        self.logger.record("train/critic_learning_rate", critic_lr)
        stats: dict[str, list[float]] = defaultdict(list)
        for _ in range(gradient_steps):
            replay_data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)  # type: ignore[union-attr]
            self._gradient_step(replay_data, stats)  # type: ignore[arg-type]
        self._n_updates += gradient_steps
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        for key, values in stats.items():
            self.logger.record(key, float(np.mean(values)))

    def _gradient_step(self, data: CostReplayBufferSamples, stats: dict[str, list[float]]) -> None:
        clock = time.perf_counter()
        critic_losses = self._critic_step(data)
        for key, value in critic_losses.items():
            stats[key].append(value)
        stats["time/critic_ms"].append(1e3 * (time.perf_counter() - clock))
        self._policy_step(data.observations, stats)
        clock = time.perf_counter()
        self._update_targets()
        stats["time/target_ms"].append(1e3 * (time.perf_counter() - clock))

    def _critic_step(self, data: CostReplayBufferSamples) -> dict[str, float]:
        """Reward and cost critics onto their Bellman targets (docs/cvpo.md, 'Critics'), one Adam step each."""
        target_q, target_qc = self._bellman_targets(data)
        current_q = self.critic(data.observations, data.actions)
        mse = th.nn.functional.mse_loss
        critic_loss = th.stack([mse(q, target_q) for q in current_q]).sum()
        cost_losses = cost_regression_losses(self.cost_critics, data.observations, data.actions, target_qc)
        for optimizer, loss in ((self.critic.optimizer, critic_loss), (self.cost_critics.optimizer, cost_losses.sum())):
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        losses = {"train/critic_loss": critic_loss.item()}
        losses.update(per_constraint_keys("train/cost_critic_loss", cost_losses.detach().cpu().numpy()))
        return losses

    @th.no_grad()
    def _bellman_targets(self, data: CostReplayBufferSamples) -> tuple[th.Tensor, th.Tensor]:
        """``y_r`` ``(B, 1)`` and ``y_c`` ``(m, B, 1)``: n-step sums plus the discounted target critics at a' ~ pi.

        ``y = sum_k gamma^k x_{t+k} + gamma^n (1 - terminated) Qbar(s_{t+n}, a')`` with the same a' for every critic,
        min over the reward ensemble and ``cost_critic_reduce`` over each cost ensemble (docs/cvpo.md, 'Critics').
        Truncated transitions bootstrap (``dones`` only marks true terminations, SB3's convention).
        """
        discounts = data.discounts if data.discounts is not None else self.gamma
        next_actions = self.actor(data.next_observations)
        bootstrap = (1.0 - data.dones) * discounts
        target_q = data.rewards + bootstrap * self.policy.reward_q(data.next_observations, next_actions, target=True)
        next_cost_q = self.policy.cost_q(data.next_observations, next_actions, target=True)  # (m, B, 1)
        return target_q, cost_bellman_targets(data.costs, bootstrap, next_cost_q)

    def _policy_step(self, obs: PyTorchObs, stats: dict[str, list[float]]) -> None:
        """E-step (non-parametric q from the dual) then M-step (weighted MLE in trust regions)."""
        clock = time.perf_counter()
        with th.no_grad():
            old = self.actor_target.distribution(obs)
            samples = old.sample(self.n_samples)  # (K, B, A)
            q_reward, q_cost = self.policy.evaluate_samples(obs, samples)  # (B, K), (m, B, K)
        stats["time/estep_q_ms"].append(1e3 * (time.perf_counter() - clock))
        clock = time.perf_counter()
        try:
            solution = solve_estep(
                q_reward,
                q_cost,
                self.estep_kl,
                self.cost_threshold,
                solver=self.dual_solver,
                init=self.estep_warm_start,
                eta_bounds=self.eta_bounds,
                lam_bounds=self.lam_bounds,
                tol=self.dual_tol,
                max_iter=self.dual_max_iter,
            )
        except NonFiniteQError as error:
            stats["train/estep_skipped"].append(1.0)
            warnings.warn(f"CVPO skipped an E/M-step: {error}", RuntimeWarning, stacklevel=2)
            return
        stats["time/dual_ms"].append(1e3 * (time.perf_counter() - clock))
        self.eta, self.lam = solution.eta, np.asarray(solution.lam, dtype=np.float64).reshape(-1)
        self.estep_warm_start = solution.warm_start
        stats["train/estep_skipped"].append(0.0)
        stats["train/eta"].append(self.eta)
        for key, value in per_constraint_keys("train/lambda", self.lam).items():
            stats[key].append(value)
        for key, values in (
            ("train/qc_mean", solution.qc_mean),
            ("train/qc_weighted", solution.qc_weighted),
            ("train/qc_threshold", self.cost_threshold),
        ):
            for name, value in per_constraint_keys(key, values).items():
                stats[name].append(value)
        stats["train/dual_iters"].append(solution.iterations)
        stats["train/dual_kkt_residual"].append(solution.kkt_residual)
        stats["train/estep_infeasible"].append(float(solution.infeasible))
        stats["train/estep_kl"].append(solution.estep_kl)

        clock = time.perf_counter()
        weights = solution.weights.T.to(samples.dtype)  # (K, B)
        moments = WeightedMoments.of(samples, weights, full=old.is_full)  # all the M-step needs of the samples
        old_precision = old.precision_factor() if old.is_full else None  # L_old^{-1}, the same every iteration
        for _ in range(self.mstep_iters):
            self._mstep(obs, old, old_precision, moments, stats)
        stats["time/mstep_ms"].append(1e3 * (time.perf_counter() - clock))

    def _trust_region(self) -> TrustRegion:
        """The M-step's trust regions from this model's settings."""
        return TrustRegion(
            kl_mean=self.kl_mean,
            kl_cov=self.kl_cov,
            alpha_mean_step=self.alpha_mean_step,
            alpha_mean_max=self.alpha_mean_max,
            alpha_cov_step=self.alpha_cov_step,
            alpha_cov_max=self.alpha_cov_max,
        )

    def _mstep(
        self,
        obs: PyTorchObs,
        old: Gaussian,
        old_precision: th.Tensor | None,
        moments: WeightedMoments,
        stats: dict[str, list[float]],
    ) -> None:
        """One weighted-MLE actor update inside the decoupled KL trust regions (:mod:`sb3_safe.cvpo.mstep`)."""
        terms = mstep_loss(
            old,
            self.actor.distribution(obs),
            old_precision,
            moments,
            self.n_samples,
            self._trust_region(),
            self.alpha_mean,
            self.alpha_cov,
        )
        self.alpha_mean, self.alpha_cov = terms.alpha_mean, terms.alpha_cov
        self.actor.optimizer.zero_grad()
        terms.loss.backward()
        if self.max_grad_norm is not None:
            th.nn.utils.clip_grad_norm_(self.actor.parameters(), self.max_grad_norm)
        self.actor.optimizer.step()
        stats["train/actor_loss"].append(terms.loss.item())
        stats["train/kl_mean"].append(terms.kl_mean)
        stats["train/kl_cov"].append(terms.kl_cov)
        stats["train/alpha_mean"].append(self.alpha_mean)
        stats["train/alpha_cov"].append(self.alpha_cov)

    def _update_targets(self) -> None:
        polyak_update(self.critic.parameters(), self.critic_target.parameters(), self.tau)
        polyak_update(self.cost_critics.parameters(), self.cost_critics_target.parameters(), self.tau)
        if self.old_policy == "polyak":
            polyak_update(self.actor.parameters(), self.actor_target.parameters(), self.actor_target_tau)
        else:
            self._hard_copy_counter += 1
            if self._hard_copy_counter % self.old_policy_update_interval == 0:
                self.actor_target.load_state_dict(self.actor.state_dict())

    def learn(
        self: SelfCVPO,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 4,
        tb_log_name: str = "CVPO",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfCVPO:
        """Train for ``total_timesteps`` environment steps (SB3's ``learn``)."""
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )

    def _excluded_save_params(self) -> list[str]:
        return [
            *super()._excluded_save_params(),
            "actor",
            "actor_target",
            "critic",
            "critic_target",
            "cost_critics",
            "cost_critics_target",
        ]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        return ["policy", "actor.optimizer", "critic.optimizer", "cost_critics.optimizer"], []
