"""TD3-Lag: Twin Delayed DDPG with a Lagrange multiplier on a learned cost critic."""

from __future__ import annotations

from typing import Any, ClassVar, cast

import numpy as np
import torch as th
from stable_baselines3 import TD3
from stable_baselines3.common.noise import NormalActionNoise
from stable_baselines3.common.utils import polyak_update

from sb3_safe.common.buffers import CostReplayBufferSamples
from sb3_safe.lagrangian.off_policy import LagrangianOffPolicyAlgorithm
from sb3_safe.lagrangian.sac_lag import min_q


class TD3Lag(LagrangianOffPolicyAlgorithm, TD3):
    """TD3 with one cost Q ensemble per constraint and a Lagrange multiplier per constraint.

    Per gradient step, with the smoothed target action ``a' = clip(mu_targ(s') + clip(N(0, sigma), -c, c), -1, 1)``:
    the reward critics regress onto ``r + gamma (1 - terminated) min_k Qbar_k(s', a')``, each cost ensemble onto
    ``c_j + gamma (1 - terminated) max_k Qbar_c,j,k(s', a')``; every ``policy_delay`` steps the actor minimises
    ``(E_s[-Q_1(s, mu(s)) + sum_j lambda_j Q_c,j(s, mu(s))]) / (1 + sum_j lambda_j)`` and all targets move by Polyak
    averaging. Once per ``train()`` call lambda is updated on the finished training episodes' mean cost against the
    limit (or on ``mean Q_c(s, mu(s)) - eps``; PID by default: Stooke, Achiam & Abbeel, ICML 2020; the CVPO paper's
    TD3-Lag baseline, Liu et al. 2022).

    Args:
        policy: ``"MlpPolicy"``, ``"MultiInputPolicy"`` or an SB3 ``TD3Policy`` class.
        env: Environment (an id of :func:`sb3_safe.list_envs`, a Gymnasium env or a VecEnv) with a Box action
            space, ``info["cost"]`` and a known episode length.
        cost_limit: Per-episode, undiscounted cost limit d (a scalar or one per constraint), >= 0.
        n_costs: Number of constraints m.
        episode_length: The fixed horizon T (default: the env's ``max_episode_steps``).
        lagrange_method: ``"pid"`` (default) or ``"gradient"``.
        lagrange_kwargs: Further :class:`~sb3_safe.common.lagrange.LagrangeMultiplier` arguments.
        lagrange_cost_source: ``"episodes"`` (default) or ``"critic"``; see
            :class:`~sb3_safe.lagrangian.off_policy.LagrangianOffPolicyAlgorithm`.
        n_cost_critics: Members of each cost ensemble (reduced by max).
        action_noise_std: Standard deviation of Gaussian exploration noise on the normalised action (a YAML-friendly
            ``action_noise=NormalActionNoise(0, std)``; FSRL's DDPG-Lag uses 0.1). None: SB3's ``action_noise``.
        kwargs: SB3 ``TD3`` arguments (``learning_rate``, ``policy_delay``, ``target_policy_noise``...) and the
            off-policy Lagrangian ones (``utd_ratio``, ``critic_learning_rate``, ``lagrange_rescaling``).
    """

    continuous_actions_only: ClassVar[bool] = True

    def __init__(self, policy: Any, env: Any, *args: Any, action_noise_std: float | None = None, **kwargs: Any) -> None:
        if action_noise_std is not None:
            if kwargs.get("action_noise") is not None:
                raise ValueError("Pass either action_noise_std or action_noise, not both.")
            if not action_noise_std > 0:
                raise ValueError(f"action_noise_std must be > 0 (e.g. 0.1), got {action_noise_std}.")
        self.action_noise_std = action_noise_std
        super().__init__(policy, env, *args, **kwargs)
        if action_noise_std is not None:
            dim = int(np.prod(self.action_space.shape))  # type: ignore[arg-type]
            self.action_noise = NormalActionNoise(np.zeros(dim), np.full(dim, action_noise_std))

    def train(self, gradient_steps: int, batch_size: int = 100) -> None:
        """``gradient_steps`` TD3-Lag updates (scaled by ``utd_ratio`` if set), then one multiplier update and logs."""
        gradient_steps = self._scaled_gradient_steps(gradient_steps)
        if gradient_steps <= 0:
            return
        self.policy.set_training_mode(True)
        self._set_cost_critics_training_mode(True)
        self._update_learning_rates([self.actor.optimizer])
        mse = th.nn.functional.mse_loss
        actor_losses: list[float] = []
        critic_losses: list[float] = []
        qc_means: list[th.Tensor] = []
        cost_losses: list[th.Tensor] = []
        for _ in range(gradient_steps):
            self._n_updates += 1
            data = cast(CostReplayBufferSamples, self.replay_buffer.sample(batch_size, env=self._vec_normalize_env))  # type: ignore[union-attr]
            obs, discounts = data.observations, (data.discounts if data.discounts is not None else self.gamma)

            # Reward critics: clipped double-Q target at the smoothed target action.
            with th.no_grad():
                smoothing = th.randn_like(data.actions) * self.target_policy_noise
                smoothing = smoothing.clamp(-self.target_noise_clip, self.target_noise_clip)
                next_actions = (self.actor_target(data.next_observations) + smoothing).clamp(-1.0, 1.0)
                target_q = data.rewards + (1.0 - data.dones) * discounts * min_q(
                    self.critic_target, data.next_observations, next_actions
                )
            critic_loss = th.stack([mse(q, target_q) for q in self.critic(obs, data.actions)]).sum()
            self.critic.optimizer.zero_grad()
            critic_loss.backward()
            self.critic.optimizer.step()
            critic_losses.append(critic_loss.item())

            # Cost critics: same a'.
            cost_losses.append(self._cost_critic_step(data, next_actions, discounts))

            if self._n_updates % self.policy_delay == 0:
                # Delayed actor: deterministic policy gradient on Q_1 plus the Lagrangian penalty.
                actions_pi = self.actor(obs)
                reward_loss = -self.critic.q1_forward(obs, actions_pi).mean()  # type: ignore[arg-type]
                actor_loss, qc_mean = self._lagrangian_actor_loss(reward_loss, obs, actions_pi)
                self.actor.optimizer.zero_grad()
                actor_loss.backward()
                self.actor.optimizer.step()
                actor_losses.append(actor_loss.item())

                polyak_update(self.critic.parameters(), self.critic_target.parameters(), self.tau)
                polyak_update(self.actor.parameters(), self.actor_target.parameters(), self.tau)
                polyak_update(self.critic_batch_norm_stats, self.critic_batch_norm_stats_target, 1.0)
                polyak_update(self.actor_batch_norm_stats, self.actor_batch_norm_stats_target, 1.0)
                self._update_cost_targets()
            else:
                with th.no_grad():
                    qc_mean = self._cost_q(obs, self.actor(obs)).squeeze(-1).mean(dim=1)
            qc_means.append(qc_mean)

        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        if actor_losses:
            self.logger.record("train/actor_loss", float(np.mean(actor_losses)))
        self.logger.record("train/critic_loss", float(np.mean(critic_losses)))
        self._finish_lagrangian_train(qc_means, cost_losses)
