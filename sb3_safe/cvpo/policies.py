"""CVPO policies: a Gaussian actor (diagonal or full covariance), reward and cost Q-critics, and their targets."""

from __future__ import annotations

from typing import Any

import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy, ContinuousCritic
from stable_baselines3.common.preprocessing import get_action_dim
from stable_baselines3.common.torch_layers import (
    BaseFeaturesExtractor,
    CombinedExtractor,
    FlattenExtractor,
    create_mlp,
    get_actor_critic_arch,
)
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn

from sb3_safe.common.cost_critics import (  # noqa: F401  (COST_CRITIC_REDUCTIONS: re-exported for compatibility)
    COST_CRITIC_REDUCTIONS,
    CostCritics,
    check_cost_reduce,
    reduce_cost_ensemble,
)
from sb3_safe.common.torch_util import with_fused_optimizer
from sb3_safe.cvpo.gaussian import Gaussian

COVARIANCES = ("diag", "full")


class GaussianActor(BasePolicy):
    """Gaussian policy over SB3's normalised action box.

    The mean is ``tanh`` of a linear head (``bounded_mean=True``) or the head itself. ``covariance="diag"``: a
    state-conditioned log-std, clamped to [-20, 2]. ``covariance="full"``: a Cholesky factor from n(n+1)/2 head
    outputs clamped to [-5, 20], with a softplus + 1e-4 diagonal. Samples are not squashed; only the copy sent to
    the environment is clipped (docs/cvpo.md, 'Actions: raw samples and clipped
    environment actions').

    Args:
        observation_space: Observation space.
        action_space: Box action space.
        net_arch: Hidden layer sizes of the trunk.
        features_extractor: Network turning observations into features.
        features_dim: Number of features.
        activation_fn: Activation of the trunk.
        normalize_images: Divide image observations by 255.
        covariance: ``"diag"`` or ``"full"``.
        bounded_mean: Squash the mean into [-1, 1] with tanh.
    """

    optimizer: th.optim.Optimizer
    LOG_STD_BOUNDS = (-20.0, 2.0)
    CHOLESKY_BOUNDS = (-5.0, 20.0)

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        net_arch: list[int],
        features_extractor: BaseFeaturesExtractor,
        features_dim: int,
        activation_fn: type[nn.Module] = nn.ReLU,
        normalize_images: bool = True,
        covariance: str = "diag",
        bounded_mean: bool = True,
    ) -> None:
        super().__init__(
            observation_space,
            action_space,
            features_extractor=features_extractor,
            normalize_images=normalize_images,
            squash_output=True,
        )
        if covariance not in COVARIANCES:
            raise ValueError(f"covariance must be one of {COVARIANCES}, got {covariance!r}.")
        self.net_arch = net_arch
        self.features_dim = features_dim
        self.activation_fn = activation_fn
        self.covariance = covariance
        self.bounded_mean = bounded_mean
        self.action_dim = get_action_dim(action_space)
        self.trunk = nn.Sequential(*create_mlp(features_dim, -1, net_arch, activation_fn))
        last_dim = net_arch[-1] if net_arch else features_dim
        self.mean_head = nn.Linear(last_dim, self.action_dim)
        n_scale = self.action_dim if covariance == "diag" else self.action_dim * (self.action_dim + 1) // 2
        self.scale_head = nn.Linear(last_dim, n_scale)
        self._tril = th.tril_indices(self.action_dim, self.action_dim)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            net_arch=self.net_arch,
            features_dim=self.features_dim,
            activation_fn=self.activation_fn,
            features_extractor=self.features_extractor,
            covariance=self.covariance,
            bounded_mean=self.bounded_mean,
        )
        return data

    def distribution(self, obs: PyTorchObs) -> Gaussian:
        """pi(.|s) for a batch of observations."""
        latent = self.trunk(self.extract_features(obs, self.features_extractor))
        mean = self.mean_head(latent)
        if self.bounded_mean:
            mean = th.tanh(mean)
        raw = self.scale_head(latent)
        if self.covariance == "diag":
            return Gaussian(mean, th.exp(raw.clamp(*self.LOG_STD_BOUNDS)))
        raw = raw.clamp(*self.CHOLESKY_BOUNDS)
        cholesky = raw.new_zeros(raw.shape[0], self.action_dim, self.action_dim)
        cholesky[:, self._tril[0], self._tril[1]] = raw
        diagonal = nn.functional.softplus(th.diagonal(cholesky, dim1=-2, dim2=-1)) + 1e-4
        cholesky = th.tril(cholesky, diagonal=-1) + th.diag_embed(diagonal)
        return Gaussian(mean, cholesky)

    def forward(self, obs: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        """Raw (unclipped) actions in the normalised box: the mean, or a sample."""
        dist = self.distribution(obs)
        return dist.mean if deterministic else dist.sample()

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        # SB3 unscales predictions of squashing policies: clip into the normalised box first.
        return self(observation, deterministic).clamp(-1.0, 1.0)


SAMPLE_ROWS_PER_CHUNK = 2048
"""(state, sample) rows evaluated at once by :func:`_ensemble_on_samples`: keeps a 256-wide hidden layer (2 MB) in a
core's cache and reuses freed buffers instead of faulting in fresh pages, about 2x faster on CPU than one pass."""


def _forward_in_place(layers: nn.Sequential, hidden: th.Tensor) -> th.Tensor:
    """``layers(hidden)`` without autograd, with ReLUs applied in place (no new buffer per activation)."""
    for layer in layers:
        hidden = hidden.relu_() if isinstance(layer, nn.ReLU) else layer(hidden)
    return hidden


@th.no_grad()
def _ensemble_on_samples(critic: ContinuousCritic, obs: PyTorchObs, samples: th.Tensor) -> list[th.Tensor]:
    """Each member's Q for ``samples`` ``(K, B, A)`` at ``obs`` (B states): a list of ``(K, B)`` tensors.

    The first layer is split: its observation part is computed once per state and broadcast over the K samples.
    The K*B pairs then go through the rest of the network in chunks of about :data:`SAMPLE_ROWS_PER_CHUNK` rows.
    """
    features = critic.extract_features(obs, critic.features_extractor)  # (B, F), once for all K samples
    n_samples, batch = samples.shape[:2]
    n_features = features.shape[-1]
    samples_per_chunk = max(1, SAMPLE_ROWS_PER_CHUNK // batch)
    values = []
    for q_net in critic.q_networks:
        first, rest = q_net[0], q_net[1:]  # type: ignore[index]
        weight_obs, weight_act = first.weight[:, :n_features], first.weight[:, n_features:]
        obs_part = th.addmm(first.bias, features, weight_obs.T)  # (B, H1)
        chunks = [
            _forward_in_place(rest, th.baddbmm(obs_part, chunk, weight_act.T.expand(len(chunk), -1, -1)).flatten(0, 1))
            for chunk in samples.split(samples_per_chunk)
        ]
        values.append(th.cat(chunks).view(n_samples, batch))
    return values


class CVPOPolicy(BasePolicy):
    """Actor, ``actor_target`` (pi_old), reward critic ensemble and one cost-critic ensemble per constraint.

    Args:
        observation_space: Observation space.
        action_space: Box action space.
        lr_schedule: Learning-rate schedule (actor; the algorithm sets the critics' rates).
        net_arch: Hidden sizes, shared by actor and critics, or ``{"pi": [...], "qf": [...]}``.
        activation_fn: Activation function.
        covariance: ``"diag"`` (default) or ``"full"`` Cholesky Gaussian.
        bounded_mean: tanh-bounded mean (default) or a linear one.
        features_extractor_class: Features extractor class.
        features_extractor_kwargs: Its keyword arguments.
        normalize_images: Divide image observations by 255.
        optimizer_class: Optimizer class (one for the actor, one for the reward critics, one for the cost critics).
        optimizer_kwargs: Its keyword arguments (Adam and AdamW default to ``fused=True``).
        n_critics: Reward Q networks, reduced by min.
        n_constraints: Number of constraints m (one cost-critic ensemble each).
        n_cost_critics: Members of each cost-critic ensemble.
        cost_critic_reduce: ``"max"`` or ``"mean"`` over a cost ensemble.
    """

    actor: GaussianActor
    actor_target: GaussianActor
    critic: ContinuousCritic
    critic_target: ContinuousCritic
    cost_critics: CostCritics
    cost_critics_target: CostCritics

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        activation_fn: type[nn.Module] = nn.ReLU,
        covariance: str = "diag",
        bounded_mean: bool = True,
        features_extractor_class: type[BaseFeaturesExtractor] = FlattenExtractor,
        features_extractor_kwargs: dict[str, Any] | None = None,
        normalize_images: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
        n_critics: int = 2,
        n_constraints: int = 1,
        n_cost_critics: int = 1,
        cost_critic_reduce: str = "max",
    ) -> None:
        super().__init__(
            observation_space,
            action_space,
            features_extractor_class,
            features_extractor_kwargs,
            optimizer_class=optimizer_class,
            optimizer_kwargs=with_fused_optimizer(optimizer_class, optimizer_kwargs),
            squash_output=True,
            normalize_images=normalize_images,
        )
        check_cost_reduce(cost_critic_reduce)
        if n_critics < 1 or n_constraints < 1 or n_cost_critics < 1:
            raise ValueError("n_critics, n_constraints and n_cost_critics must all be >= 1.")
        self.net_arch = [128, 128] if net_arch is None else net_arch
        actor_arch, critic_arch = get_actor_critic_arch(self.net_arch)
        self.activation_fn = activation_fn
        self.covariance = covariance
        self.bounded_mean = bounded_mean
        self.n_critics = n_critics
        self.n_constraints = n_constraints
        self.n_cost_critics = n_cost_critics
        self.cost_critic_reduce = cost_critic_reduce
        common = {
            "observation_space": observation_space,
            "action_space": action_space,
            "activation_fn": activation_fn,
            "normalize_images": normalize_images,
        }
        self.actor_kwargs = {**common, "net_arch": actor_arch, "covariance": covariance, "bounded_mean": bounded_mean}
        self.critic_kwargs = {**common, "net_arch": critic_arch, "share_features_extractor": False}
        self._build(lr_schedule)

    def _build(self, lr_schedule: Schedule) -> None:
        self.actor = self.make_actor()
        self.actor_target = self.make_actor()
        self.critic = self.make_critic(self.n_critics)
        self.critic_target = self.make_critic(self.n_critics)
        self.cost_critics = CostCritics([self.make_critic(self.n_cost_critics) for _ in range(self.n_constraints)])
        self.cost_critics_target = CostCritics(
            [self.make_critic(self.n_cost_critics) for _ in range(self.n_constraints)]
        )
        for target, source in (
            (self.actor_target, self.actor),
            (self.critic_target, self.critic),
            (self.cost_critics_target, self.cost_critics),
        ):
            target.load_state_dict(source.state_dict())
            target.train(False)
        lr = lr_schedule(1)
        self.actor.optimizer = self.optimizer_class(self.actor.parameters(), lr=lr, **self.optimizer_kwargs)  # type: ignore[call-arg]
        self.critic.optimizer = self.optimizer_class(self.critic.parameters(), lr=lr, **self.optimizer_kwargs)  # type: ignore[call-arg]
        self.cost_critics.optimizer = self.optimizer_class(
            self.cost_critics.parameters(), lr=lr, **self.optimizer_kwargs
        )  # type: ignore[call-arg]

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            net_arch=self.net_arch,
            activation_fn=self.activation_fn,
            covariance=self.covariance,
            bounded_mean=self.bounded_mean,
            n_critics=self.n_critics,
            n_constraints=self.n_constraints,
            n_cost_critics=self.n_cost_critics,
            cost_critic_reduce=self.cost_critic_reduce,
            lr_schedule=self._dummy_schedule,
            optimizer_class=self.optimizer_class,
            optimizer_kwargs=self.optimizer_kwargs,
            features_extractor_class=self.features_extractor_class,
            features_extractor_kwargs=self.features_extractor_kwargs,
        )
        return data

    def make_actor(self) -> GaussianActor:
        """A new actor with its own features extractor."""
        kwargs = self._update_features_extractor(self.actor_kwargs, None)
        return GaussianActor(**kwargs).to(self.device)

    def make_critic(self, n_critics: int) -> ContinuousCritic:
        """A new Q ensemble of ``n_critics`` members with its own features extractor."""
        kwargs = self._update_features_extractor({**self.critic_kwargs, "n_critics": n_critics}, None)
        return ContinuousCritic(**kwargs).to(self.device)

    def reward_q(self, obs: PyTorchObs, actions: th.Tensor, target: bool = False) -> th.Tensor:
        """min over the reward ensemble, ``(N, 1)``."""
        critic = self.critic_target if target else self.critic
        return th.cat(critic(obs, actions), dim=-1).min(dim=-1, keepdim=True).values

    def cost_q(self, obs: PyTorchObs, actions: th.Tensor, target: bool = False) -> th.Tensor:
        """Each constraint's cost ensemble reduced by ``cost_critic_reduce``: ``(m, N, 1)``."""
        critics = self.cost_critics_target if target else self.cost_critics
        return th.stack([reduce_cost_ensemble(critic(obs, actions), self.cost_critic_reduce) for critic in critics])

    def evaluate_samples(self, obs: PyTorchObs, samples: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """Target Q values of K sampled actions per state, for the E-step: ``(B, K)`` reward, ``(m, B, K)`` cost.

        Each critic runs once over all K*B (state, action) pairs. The first layer is split: its observation part
        is computed once per state and broadcast over the K samples, which saves most of that layer's work.
        """
        q_reward = th.stack(_ensemble_on_samples(self.critic_target, obs, samples)).min(dim=0).values
        q_cost = th.stack(
            [
                reduce_cost_ensemble(
                    tuple(q.unsqueeze(-1) for q in _ensemble_on_samples(critic, obs, samples)), self.cost_critic_reduce
                ).squeeze(-1)
                for critic in self.cost_critics_target.ensembles()
            ]
        )
        return q_reward.T, q_cost.transpose(1, 2)

    def forward(self, obs: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        return self._predict(obs, deterministic=deterministic)

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        return self.actor._predict(observation, deterministic)

    def set_training_mode(self, mode: bool) -> None:
        """Training or evaluation mode for the actor and the critics (targets stay in evaluation mode)."""
        self.actor.set_training_mode(mode)
        self.critic.set_training_mode(mode)
        for critic in self.cost_critics.ensembles():
            critic.set_training_mode(mode)
        self.training = mode


class MultiInputPolicy(CVPOPolicy):
    """:class:`CVPOPolicy` for dict observations (SB3's ``CombinedExtractor`` by default)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("features_extractor_class", CombinedExtractor)
        super().__init__(*args, **kwargs)


MlpPolicy = CVPOPolicy
