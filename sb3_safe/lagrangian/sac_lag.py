"""SAC-Lag: Soft Actor-Critic with a Lagrange multiplier on a learned cost critic."""

from __future__ import annotations

from typing import ClassVar, cast

import numpy as np
import torch as th
from stable_baselines3 import SAC
from stable_baselines3.common.policies import ContinuousCritic
from stable_baselines3.common.type_aliases import PyTorchObs
from stable_baselines3.common.utils import polyak_update

from sb3_safe.common.buffers import CostReplayBufferSamples
from sb3_safe.lagrangian.off_policy import LagrangianOffPolicyAlgorithm


def min_q(critic: ContinuousCritic, obs: PyTorchObs, actions: th.Tensor) -> th.Tensor:
    """The smallest member of a reward Q ensemble at (s, a): ``(B, 1)``."""
    return th.cat(critic(obs, actions), dim=1).min(dim=1, keepdim=True).values


class SACLag(LagrangianOffPolicyAlgorithm, SAC):
    """SAC with one cost Q ensemble per constraint and a Lagrange multiplier per constraint.

    Per gradient step: the reward critics regress onto the soft target
    ``r + gamma (1 - terminated) (min_k Qbar_k(s', a') - alpha log pi(a'|s'))``, a' ~ pi(.|s'); each cost ensemble onto
    ``c_j + gamma (1 - terminated) max_k Qbar_c,j,k(s', a')`` with the same a'; the actor minimises
    ``E_s[alpha log pi(a|s) - min_k Q_k(s, a) + sum_j lambda_j Q_c,j(s, a)] / (1 + sum_j lambda_j)``, a ~ pi(.|s)
    (reparameterised), and alpha follows SB3's entropy tuning. Once per ``train()`` call lambda is updated on the
    finished training episodes' mean cost against the limit, as FSRL and OmniSafe do (or on ``mean Q_c(s, a) - eps``
    with ``lagrange_cost_source="critic"``; PID by default: Stooke, Achiam & Abbeel, ICML 2020).

    References: Ha et al., "Learning to Walk in the Real World with Minimal Human Effort", CoRL 2020;
    Yang et al., "WCSAC", AAAI 2021 (SAC-Lag as its baseline).

    Args:
        policy: ``"MlpPolicy"``, ``"MultiInputPolicy"`` or an SB3 ``SACPolicy`` class.
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
        kwargs: SB3 ``SAC`` arguments (``learning_rate``, ``batch_size``, ``ent_coef``, ``policy_kwargs``...) and the
            off-policy Lagrangian ones (``utd_ratio``, ``critic_learning_rate``, ``lagrange_rescaling``).
    """

    continuous_actions_only: ClassVar[bool] = True

    def _entropy_coefficient(self, log_prob: th.Tensor) -> tuple[th.Tensor, float | None]:
        """alpha for this step (before its update) and, when alpha is learned, one step on its loss.

        ``L(log alpha) = -log alpha * (log pi(a|s) + H_target)`` (Haarnoja et al. 2018, SB3's parameterisation).
        """
        if self.ent_coef_optimizer is None or self.log_ent_coef is None:
            return self.ent_coef_tensor, None
        alpha = th.exp(self.log_ent_coef.detach())
        assert isinstance(self.target_entropy, float)
        loss = -(self.log_ent_coef * (log_prob.detach() + self.target_entropy)).mean()
        self.ent_coef_optimizer.zero_grad()
        loss.backward()
        self.ent_coef_optimizer.step()
        return alpha, loss.item()

    def train(self, gradient_steps: int, batch_size: int = 64) -> None:
        """``gradient_steps`` SAC-Lag updates (scaled by ``utd_ratio`` if set), then one multiplier update and logs."""
        gradient_steps = self._scaled_gradient_steps(gradient_steps)
        if gradient_steps <= 0:
            return
        self.policy.set_training_mode(True)
        self._set_cost_critics_training_mode(True)
        optimizers = [self.actor.optimizer]
        if self.ent_coef_optimizer is not None:
            optimizers.append(self.ent_coef_optimizer)
        self._update_learning_rates(optimizers)
        mse = th.nn.functional.mse_loss
        alphas: list[float] = []
        alpha_losses: list[float] = []
        actor_losses: list[float] = []
        critic_losses: list[float] = []
        qc_means: list[th.Tensor] = []
        cost_losses: list[th.Tensor] = []
        for step in range(gradient_steps):
            data = cast(CostReplayBufferSamples, self.replay_buffer.sample(batch_size, env=self._vec_normalize_env))  # type: ignore[union-attr]
            obs, discounts = data.observations, (data.discounts if data.discounts is not None else self.gamma)
            if self.use_sde:
                self.actor.reset_noise()

            actions_pi, log_prob = self.actor.action_log_prob(obs)
            log_prob = log_prob.reshape(-1, 1)
            alpha, alpha_loss = self._entropy_coefficient(log_prob)
            alphas.append(alpha.item())
            if alpha_loss is not None:
                alpha_losses.append(alpha_loss)

            # Reward critics: soft Bellman target with a' ~ pi(.|s').
            with th.no_grad():
                next_actions, next_log_prob = self.actor.action_log_prob(data.next_observations)
                soft_value = min_q(self.critic_target, data.next_observations, next_actions)
                soft_value = soft_value - alpha * next_log_prob.reshape(-1, 1)
                target_q = data.rewards + (1.0 - data.dones) * discounts * soft_value
            critic_loss = 0.5 * th.stack([mse(q, target_q) for q in self.critic(obs, data.actions)]).sum()
            self.critic.optimizer.zero_grad()
            critic_loss.backward()
            self.critic.optimizer.step()
            critic_losses.append(critic_loss.item())

            # Cost critics: same a'.
            cost_losses.append(self._cost_critic_step(data, next_actions, discounts))

            # Actor: SAC's loss plus the Lagrangian penalty.
            reward_loss = (alpha * log_prob - min_q(self.critic, obs, actions_pi)).mean()
            actor_loss, qc_mean = self._lagrangian_actor_loss(reward_loss, obs, actions_pi)
            self.actor.optimizer.zero_grad()
            actor_loss.backward()
            self.actor.optimizer.step()
            actor_losses.append(actor_loss.item())
            qc_means.append(qc_mean)

            if step % self.target_update_interval == 0:
                polyak_update(self.critic.parameters(), self.critic_target.parameters(), self.tau)
                polyak_update(self.batch_norm_stats, self.batch_norm_stats_target, 1.0)
                self._update_cost_targets()

        self._n_updates += gradient_steps
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/ent_coef", float(np.mean(alphas)))
        self.logger.record("train/actor_loss", float(np.mean(actor_losses)))
        self.logger.record("train/critic_loss", float(np.mean(critic_losses)))
        if alpha_losses:
            self.logger.record("train/ent_coef_loss", float(np.mean(alpha_losses)))
        self._finish_lagrangian_train(qc_means, cost_losses)
