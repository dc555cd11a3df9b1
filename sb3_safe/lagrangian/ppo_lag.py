"""PPO-Lagrangian (Ray, Achiam & Amodei 2019, "Benchmarking Safe Exploration in Deep RL") on SB3's PPO.

The policy maximises the Lagrangian ``J_r - sum_j lambda_j (J_c,j - d_j)`` with PPO's clipped surrogate, and each
multiplier lambda_j >= 0 follows the measured episode cost of its constraint against the per-episode limit d_j.
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import explained_variance

from sb3_safe.common.buffers import CostRolloutBufferSamples
from sb3_safe.common.costs import per_constraint_keys
from sb3_safe.common.lagrange import EpisodeCostFeedback, EpisodeCostWindow, LagrangeMultiplier
from sb3_safe.common.on_policy import SafeOnPolicyAlgorithm
from sb3_safe.common.policies import SafeActorCriticPolicy, SafeMultiInputActorCriticPolicy
from sb3_safe.common.validation import check_learning_rate, check_positive_int, check_unit_interval

SelfPPOLag = TypeVar("SelfPPOLag", bound="PPOLag")


class PPOLag(EpisodeCostFeedback, SafeOnPolicyAlgorithm, PPO):
    """PPO with a Lagrange multiplier per constraint (PPO-Lagrangian of Ray et al. 2019, safety-gym).

    Per rollout:

    1. The rollout buffer holds the GAE reward advantages A_r and, per constraint j, the GAE cost advantages
       A_c,j and TD(lambda) cost returns (see :class:`~sb3_safe.common.on_policy.SafeOnPolicyAlgorithm`).
    2. The multipliers take one step from the mean episode cost ``J_c`` of the episodes that ended during the
       rollout (or, if none did, of the last ``stats_window_size`` episodes, the window of ``ep_info_buffer``):
       gradient ascent on ``lambda_j (J_c,j - d_j)`` with Adam and projection onto lambda >= 0 (default,
       lr 0.035 as in OmniSafe / safety-starter-agents), or the PID Lagrangian
       (:class:`~sb3_safe.common.lagrange.LagrangeMultiplier`).
    3. ``n_epochs`` passes of minibatch updates minimise
       ``L = L_clip(A) + ent_coef * L_ent + vf_coef * MSE(V, R) + cost_vf_coef * sum_j MSE(V_c,j, R_c,j)``
       with the combined advantage ``A = (A_r - sum_j lambda_j A_c,j) / (1 + sum_j lambda_j)``.

    Normalisation (the choice of safety-starter-agents and OmniSafe, applied per minibatch as SB3 does for
    rewards): with ``normalize_advantage`` A_r is standardised and each A_c,j only centred (its scale is kept, so
    that lambda weighs costs in their own units); the division by ``1 + sum_j lambda_j`` keeps the surrogate's
    scale bounded as lambda grows. Everything else is SB3's PPO: clipping schedules, optional value clipping
    (``clip_range_vf`` also clips the cost values), gradient-norm clipping and ``target_kl`` early stopping.

    Args:
        policy: ``"MlpPolicy"``, ``"MultiInputPolicy"`` or a :class:`SafeActorCriticPolicy` subclass.
        env: Environment (id of :func:`sb3_safe.list_envs`, Gymnasium env or VecEnv) reporting ``info["cost"]``.
        cost_limit: Per-episode, undiscounted cost limit d (a scalar or one per constraint); required, >= 0.
        learning_rate: Learning rate of the policy and both critics (or schedule).
        n_steps: Steps per environment per rollout.
        batch_size: Minibatch size.
        n_epochs: Passes over the rollout per update.
        gamma: Discount factor (rewards and costs).
        gae_lambda: GAE lambda of the reward advantages.
        cost_gae_lambda: GAE lambda of the cost advantages (``None``: ``gae_lambda``).
        clip_range: PPO clipping parameter (or schedule).
        clip_range_vf: Clipping of the reward and cost value updates (``None``: none).
        normalize_advantage: Standardise A_r and centre A_c per minibatch.
        ent_coef: Entropy coefficient.
        vf_coef: Reward value loss coefficient.
        cost_vf_coef: Cost value loss coefficient (``None``: ``vf_coef``).
        max_grad_norm: Gradient-norm clip.
        use_sde: Generalised state-dependent exploration (SB3).
        sde_sample_freq: gSDE noise resampling frequency (SB3).
        target_kl: Stop an update early when the approximate KL exceeds 1.5 times this (``None``: never).
        lagrange_method: ``"gradient"`` or ``"pid"``.
        lagrange_lr: Adam step size of the gradient method.
        lagrange_init: Initial lambda.
        lagrange_kwargs: More :class:`LagrangeMultiplier` options: ``parameterization`` (default
            ``"projected"``), ``kp``, ``ki``, ``kd``, ``max_value``.
        n_costs: Number of constraints reported by the environment.
        nonfinite: ``"raise"`` (default) or ``"skip"``: what a NaN or infinite reward, cost or observation from the
            env does (see :class:`~sb3_safe.common.safe_algorithm.SafeAlgorithmMixin`).
        rollout_buffer_class: A cost rollout buffer class (``None``: chosen from the observation space).
        rollout_buffer_kwargs: Keyword arguments of the rollout buffer.
        stats_window_size: Episodes in the logging window (and the fallback window of the lambda update).
        tensorboard_log: TensorBoard folder.
        policy_kwargs: Keyword arguments of the policy.
        verbose: Verbosity.
        seed: Random seed.
        device: Torch device of the policy (the multiplier stays on the CPU in float64).
        _init_setup_model: Build the networks now (SB3's ``load`` passes False).

    Raises:
        ValueError: If ``cost_limit`` is missing or negative, or a Lagrange option is invalid.
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {  # type: ignore[assignment]
        "MlpPolicy": SafeActorCriticPolicy,
        "MultiInputPolicy": SafeMultiInputActorCriticPolicy,
    }

    lagrange: LagrangeMultiplier

    def __init__(
        self,
        policy: str | type[SafeActorCriticPolicy],
        env: GymEnv | str,
        cost_limit: float | list[float] | np.ndarray | None = None,
        learning_rate: float | Schedule = 3e-4,
        n_steps: int = 2048,
        batch_size: int = 64,
        n_epochs: int = 10,
        gamma: float = 0.99,
        gae_lambda: float = 0.95,
        cost_gae_lambda: float | None = None,
        clip_range: float | Schedule = 0.2,
        clip_range_vf: float | Schedule | None = None,
        normalize_advantage: bool = True,
        ent_coef: float = 0.0,
        vf_coef: float = 0.5,
        cost_vf_coef: float | None = None,
        max_grad_norm: float = 0.5,
        use_sde: bool = False,
        sde_sample_freq: int = -1,
        target_kl: float | None = None,
        lagrange_method: str = "gradient",
        lagrange_lr: float = 0.035,
        lagrange_init: float = 0.0,
        lagrange_kwargs: dict[str, Any] | None = None,
        n_costs: int = 1,
        nonfinite: str = "raise",
        rollout_buffer_class: type[RolloutBuffer] | None = None,
        rollout_buffer_kwargs: dict[str, Any] | None = None,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ) -> None:
        # SB3's load() builds an empty shell (no cost_limit) and then restores the saved attributes.
        if cost_limit is None and _init_setup_model:
            raise ValueError(
                "PPOLag needs a per-episode cost_limit (e.g. cost_limit=25.0): the Lagrange multiplier follows the "
                "episode cost against it."
            )
        check_positive_int("n_steps", n_steps, "It is the rollout length per environment.")
        check_positive_int("n_epochs", n_epochs, "It is the number of passes over each rollout.")
        check_positive_int("batch_size", batch_size, "It is the minibatch size.")
        check_unit_interval("gamma", gamma, "the discount factor; 0.99 is typical")
        check_unit_interval("gae_lambda", gae_lambda, "GAE's trade-off between bias and variance; 0.95 is typical")
        if cost_gae_lambda is not None:
            check_unit_interval("cost_gae_lambda", cost_gae_lambda, "GAE lambda of the cost advantages")
        check_learning_rate("learning_rate", learning_rate)
        check_learning_rate("lagrange_lr", lagrange_lr)
        reserved = {"method", "learning_rate", "init", "n_constraints"} & set(lagrange_kwargs or {})
        if reserved:
            raise ValueError(
                f"lagrange_kwargs must not set {sorted(reserved)}: use lagrange_method, lagrange_lr and "
                "lagrange_init (n_constraints follows n_costs)."
            )
        self.cost_vf_coef = vf_coef if cost_vf_coef is None else cost_vf_coef
        self.lagrange_method = lagrange_method
        self.lagrange_lr = lagrange_lr
        self.lagrange_init = lagrange_init
        self.lagrange_kwargs = {"parameterization": "projected", **(lagrange_kwargs or {})}
        self.episode_cost_window = EpisodeCostWindow(n_costs, stats_window_size)
        if cost_gae_lambda is not None:
            rollout_buffer_kwargs = {**(rollout_buffer_kwargs or {}), "cost_gae_lambda": cost_gae_lambda}
        super().__init__(
            policy,
            env,
            cost_limit=cost_limit,
            n_costs=n_costs,
            nonfinite=nonfinite,
            learning_rate=learning_rate,
            n_steps=n_steps,
            batch_size=batch_size,
            n_epochs=n_epochs,
            gamma=gamma,
            gae_lambda=gae_lambda,
            clip_range=clip_range,
            clip_range_vf=clip_range_vf,
            normalize_advantage=normalize_advantage,
            ent_coef=ent_coef,
            vf_coef=vf_coef,
            max_grad_norm=max_grad_norm,
            use_sde=use_sde,
            sde_sample_freq=sde_sample_freq,
            rollout_buffer_class=rollout_buffer_class,
            rollout_buffer_kwargs=rollout_buffer_kwargs,
            target_kl=target_kl,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=_init_setup_model,
        )

    def _setup_model(self) -> None:
        super()._setup_model()
        self.lagrange = LagrangeMultiplier(
            n_constraints=self.n_costs,
            method=self.lagrange_method,
            init=self.lagrange_init,
            learning_rate=self.lagrange_lr,
            **self.lagrange_kwargs,
        )

    def _maybe_recommend_cpu(self, mlp_class_name: str = SafeActorCriticPolicy.__name__) -> None:
        """SB3's advice to run an MLP PPO on the CPU, for PPO-Lag's MLP policy class."""
        super()._maybe_recommend_cpu(mlp_class_name)

    @property
    def duals(self) -> dict[str, Any]:
        """The current multipliers: ``{"lambda": array of shape (n_costs,)}``."""
        return {"lambda": self.lagrange.value}

    # --- Episode costs per constraint, for the multiplier (EpisodeCostFeedback fills the window) ------------

    def _update_lambda(self) -> np.ndarray | None:
        """One multiplier step from the episode cost J_c against the limit d; returns J_c (None: no episode yet).

        J_c is the mean cost of the episodes that ended in this rollout, else of the recent window.
        """
        episode_cost = self.episode_cost_window.take(fallback=True)
        if episode_cost is not None:
            assert self.cost_limit is not None
            self.lagrange.update(episode_cost, self.cost_limit)
        return episode_cost

    # --- The update ---------------------------------------------------------------------------------------

    def _combined_advantage(self, data: CostRolloutBufferSamples, lam: th.Tensor) -> th.Tensor:
        """``(A_r - sum_j lambda_j A_c,j) / (1 + sum_j lambda_j)``, A_r standardised and A_c centred if asked."""
        reward_adv = data.advantages
        cost_adv = data.cost_advantages.reshape(len(reward_adv), self.n_costs)
        if self.normalize_advantage and len(reward_adv) > 1:
            reward_adv = (reward_adv - reward_adv.mean()) / (reward_adv.std() + 1e-8)
            cost_adv = cost_adv - cost_adv.mean(dim=0, keepdim=True)
        return (reward_adv - cost_adv @ lam) / (1.0 + lam.sum())

    @staticmethod
    def _clipped(new: th.Tensor, old: th.Tensor, clip: float | None) -> th.Tensor:
        """Value prediction kept within ``clip`` of the rollout-time estimate (no clipping for None)."""
        return new if clip is None else old + th.clamp(new - old, -clip, clip)

    def train(self) -> None:
        """Update lambda from this rollout's episode costs, then run the PPO epochs on the Lagrangian surrogate."""
        episode_cost = self._update_lambda()
        lam_np = self.lagrange.value
        lam = th.as_tensor(lam_np, dtype=th.float32, device=self.device)

        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        progress = self._current_progress_remaining
        clip = float(self.clip_range(progress))  # type: ignore[operator]
        clip_vf = None if self.clip_range_vf is None else float(self.clip_range_vf(progress))  # type: ignore[operator]

        stats: dict[str, list[float]] = {
            key: [] for key in ("policy", "value", "cost_value", "entropy", "clip_fraction", "approx_kl", "loss")
        }
        stop = False
        for epoch in range(self.n_epochs):
            for data in self.rollout_buffer.get(self.batch_size):
                assert isinstance(data, CostRolloutBufferSamples)
                actions = data.actions
                if isinstance(self.action_space, spaces.Discrete):
                    actions = actions.long().flatten()
                values, log_prob, entropy = self.policy.evaluate_actions(data.observations, actions)
                log_ratio = log_prob - data.old_log_prob
                ratio = th.exp(log_ratio)

                # Early stop before stepping once the policy has moved too far (SB3's approximate reverse KL).
                with th.no_grad():
                    approx_kl = float(th.mean(ratio - 1.0 - log_ratio))
                stats["approx_kl"].append(approx_kl)
                if self.target_kl is not None and approx_kl > 1.5 * self.target_kl:
                    stop = True
                    if self.verbose >= 1:
                        print(f"PPOLag: early stop at epoch {epoch}, approximate KL {approx_kl:.3f}")
                    break

                advantage = self._combined_advantage(data, lam)
                surrogate = th.min(advantage * ratio, advantage * th.clamp(ratio, 1.0 - clip, 1.0 + clip))
                policy_loss = -surrogate.mean()

                value_pred = self._clipped(values.flatten(), data.old_values, clip_vf)
                value_loss = th.nn.functional.mse_loss(data.returns, value_pred)
                cost_values = self.policy.predict_cost_values(data.observations)  # type: ignore[operator]
                old_cost_values = data.old_cost_values.reshape(cost_values.shape)
                cost_value_pred = self._clipped(cost_values, old_cost_values, clip_vf)
                cost_value_loss = th.nn.functional.mse_loss(
                    cost_value_pred, data.cost_returns.reshape(cost_values.shape)
                )
                # Without an analytic entropy, -log pi of the taken actions estimates it.
                entropy_loss = -th.mean(-log_prob if entropy is None else entropy)

                loss = (
                    policy_loss
                    + self.ent_coef * entropy_loss
                    + self.vf_coef * value_loss
                    + self.cost_vf_coef * cost_value_loss * self.n_costs
                )
                self.policy.optimizer.zero_grad()
                loss.backward()
                th.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
                self.policy.optimizer.step()

                stats["policy"].append(policy_loss.item())
                stats["value"].append(value_loss.item())
                stats["cost_value"].append(cost_value_loss.item())
                stats["entropy"].append(entropy_loss.item())
                stats["clip_fraction"].append(float(th.mean((th.abs(ratio - 1.0) > clip).float())))
                stats["loss"].append(loss.item())
            self._n_updates += 1
            if stop:
                break

        self._log_train(stats, lam_np, episode_cost, clip, clip_vf)

    def _log_train(
        self,
        stats: dict[str, list[float]],
        lam: np.ndarray,
        episode_cost: np.ndarray | None,
        clip: float,
        clip_vf: float | None,
    ) -> None:
        buffer: Any = self.rollout_buffer
        record = self.logger.record
        names = {
            "policy": "train/policy_gradient_loss",
            "value": "train/value_loss",
            "cost_value": "train/cost_value_loss",
            "entropy": "train/entropy_loss",
            "clip_fraction": "train/clip_fraction",
            "approx_kl": "train/approx_kl",
        }
        for key, name in names.items():
            if stats[key]:
                record(name, float(np.mean(stats[key])))
        if stats["loss"]:
            record("train/loss", stats["loss"][-1])
        record("train/explained_variance", explained_variance(buffer.values.flatten(), buffer.returns.flatten()))
        record(
            "train/cost_explained_variance",
            explained_variance(buffer.cost_values.flatten(), buffer.cost_returns.flatten()),
        )
        if hasattr(self.policy, "log_std"):
            record("train/std", th.exp(self.policy.log_std).mean().item())
        record("train/n_updates", self._n_updates, exclude="tensorboard")
        record("train/clip_range", clip)
        if clip_vf is not None:
            record("train/clip_range_vf", clip_vf)
        for key, value in per_constraint_keys("train/lambda", lam).items():
            record(key, value)
        if episode_cost is not None:
            for key, value in per_constraint_keys("train/ep_cost_for_lambda", episode_cost).items():
                record(key, value)

    def learn(
        self: SelfPPOLag,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "PPOLag",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfPPOLag:
        """Train for ``total_timesteps`` environment steps (SB3's ``learn``)."""
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        state_dicts, variables = super()._get_torch_save_params()
        return [*state_dicts, "lagrange", "lagrange.optimizer"], variables
