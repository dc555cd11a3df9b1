"""SB3's algorithm interface for episodic linear-MDP planners (docs/linear_agents.md, 'The SB3 adapter').

:class:`LinearQVIAlgorithm` is a :class:`~stable_baselines3.common.base_class.BaseAlgorithm`: ``learn`` runs whole
episodes on a one-env VecEnv (plan with a backward pass, act H steps with callbacks, then fold the episode's samples
into the ridge statistics), ``predict`` answers from the current plan at (state, step), and ``save``/``load`` go
through SB3's state-dict path because every learned quantity is a buffer of the policy module.
Subclasses supply the backward pass (:meth:`LinearQVIAlgorithm._plan`).
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from collections import deque
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, PyTorchObs
from stable_baselines3.common.utils import safe_mean

from sb3_safe.common.safe_algorithm import SafeAlgorithmMixin
from sb3_safe.linear.features import LinearMDPSpec, linear_mdp_spec
from sb3_safe.linear.gram import NO_NEXT_STATE, RidgeStatistics
from sb3_safe.linear.planning import VALUE_CLIPS, value_clip_levels

SelfLinearQVI = TypeVar("SelfLinearQVI", bound="LinearQVIAlgorithm")

VIOLATION_TOLERANCE = 1e-9
"""A step violates the constraint when its true expected cost exceeds tau by more than this (round-off)."""


class LinearQVIPolicy(BasePolicy):
    """Holds the learned state as buffers (ridge statistics, the plan, counters) and acts from the plan.

    Args:
        observation_space: ``Dict(state=Discrete(n_states), step=Discrete(H + 1))``.
        action_space: ``Discrete`` (finite action sets) or ``Box`` (feature points on star-convex segments).
        horizon: H.
        n_states: Number of states.
        feature_dim: d.
        n_groups: Ridge-statistics groups (H, or 1 when pooled across steps).
        ridge: lambda.
        refactor_every: Full re-inversion period of the Sherman-Morrison state.
        randomized: The plan is a distribution over the actions per (h, s), ``(H, n_states, n_actions)``, and
            actions are sampled from it (Discrete action spaces only).
    """

    plan: th.Tensor
    episodes: th.Tensor
    violation_count: th.Tensor

    def __init__(
        self,
        observation_space: spaces.Dict,
        action_space: spaces.Space,
        horizon: int,
        n_states: int,
        feature_dim: int,
        n_groups: int,
        ridge: float = 1.0,
        refactor_every: int = 1000,
        randomized: bool = False,
    ) -> None:
        super().__init__(observation_space, action_space)
        self.horizon, self.n_states, self.feature_dim = horizon, n_states, feature_dim
        self.n_groups, self.ridge, self.refactor_every = n_groups, ridge, refactor_every
        self.randomized = randomized
        self.stats = RidgeStatistics(n_groups, feature_dim, n_states, ridge, refactor_every)
        if randomized:
            assert isinstance(action_space, spaces.Discrete), "randomised plans need a Discrete action space"
            plan = th.zeros(horizon, n_states, int(action_space.n), dtype=th.float64)
        elif isinstance(action_space, spaces.Discrete):
            plan = th.zeros(horizon, n_states, dtype=th.int64)
        else:
            plan = th.zeros(horizon, n_states, *(action_space.shape or ()), dtype=th.float64)
        self.register_buffer("plan", plan)
        self.register_buffer("episodes", th.zeros((), dtype=th.int64))
        self.register_buffer("violation_count", th.zeros((), dtype=th.int64))

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.pop("normalize_images", None)  # BasePolicy's, not an argument of this policy (SB3's policy.load too)
        data.update(
            horizon=self.horizon,
            n_states=self.n_states,
            feature_dim=self.feature_dim,
            n_groups=self.n_groups,
            ridge=self.ridge,
            refactor_every=self.refactor_every,
            randomized=self.randomized,
        )
        return data

    def plan_action(self, state: np.ndarray, step: np.ndarray) -> np.ndarray:
        """The planned actions at integer ``state`` and ``step`` arrays (steps past the horizon use the last one).

        A randomised plan is sampled (torch's generator, seeded by the algorithm's ``seed``).
        """
        step = np.minimum(step, self.horizon - 1)
        planned = self.plan.numpy()[step, state]
        if self.randomized:
            return th.multinomial(th.as_tensor(planned), 1).reshape(-1).numpy()
        return planned

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        assert isinstance(observation, dict), "linear-MDP policies take Dict(state, step) observations"
        state = observation["state"].reshape(-1).long().cpu().numpy()
        step = observation["step"].reshape(-1).long().cpu().numpy()
        return th.as_tensor(self.plan_action(state, step))


class LinearQVIAlgorithm(SafeAlgorithmMixin, BaseAlgorithm):
    """Episodic linear-MDP value iteration with SB3's interface (``learn``, ``predict``, ``save``/``load``, callbacks).

    The environment comes first, as an id or an instance; no policy argument is needed. It must expose the
    linear-MDP protocol (:mod:`sb3_safe.linear.features`) and run as a single environment.

    Args:
        env: The environment (id, Gymnasium env or one-env VecEnv).
        ridge: lambda, the ridge coefficient of every regression.
        delta: Confidence level of the bonuses.
        c_beta: Scale of the value bonus beta_Q = c_beta d H sqrt(log(2 d T / delta)) (Jin et al. 2020).
        share_across_h: Pool the regression data of all steps (default: when the env is time-homogeneous).
        value_clip: ``"H"`` (the paper: V <= H) or ``"H-h+1"`` (V <= steps left).
        refactor_every: Recompute each M = A^{-1} from A after this many rank-one updates (0: never).
        stats_window_size: Episodes averaged in the rollout logs.
        tensorboard_log: TensorBoard log folder.
        verbose: 0 quiet, 1 info.
        seed: Seed of the env and of the agent's random choices.
        device: Torch device of the (tiny) policy module; CPU.
    """

    learns_by_episodes: ClassVar[bool] = True

    policy: LinearQVIPolicy
    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {"LinearQVIPolicy": LinearQVIPolicy}
    randomized_plan: ClassVar[bool] = False
    """Subclasses with randomised policies plan a distribution over the actions per (h, s)."""

    def __init__(
        self,
        env: GymEnv | str | None,
        ridge: float = 1.0,
        delta: float = 0.01,
        c_beta: float = 1.0,
        share_across_h: bool | None = None,
        value_clip: str = "H",
        refactor_every: int = 1000,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "cpu",
        policy: str | type[LinearQVIPolicy] = LinearQVIPolicy,
        _init_setup_model: bool = True,
    ) -> None:
        if ridge <= 0:
            raise ValueError(f"ridge (lambda) must be > 0, got {ridge}.")
        if not 0 < delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {delta}.")
        if c_beta < 0:
            raise ValueError(f"c_beta must be >= 0, got {c_beta}.")
        if value_clip not in VALUE_CLIPS:
            raise ValueError(f"value_clip must be one of {VALUE_CLIPS}, got {value_clip!r}.")
        self.ridge = float(ridge)
        self.delta = float(delta)
        self.c_beta = float(c_beta)
        self.value_clip = value_clip
        self.refactor_every = int(refactor_every)
        self.beta_q = 0.0
        self.last_plan_ms = 0.0
        self.last_regression_ms = 0.0
        self._episode_summaries: deque[dict[str, float]] = deque(maxlen=stats_window_size)
        self._episode_buffer: list[tuple[int, int, np.ndarray, float, float, int]] = []
        self._current_episode: dict[str, float] = {}
        self._warned_no_true_cost = False
        super().__init__(
            policy,
            env,
            learning_rate=0.0,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            verbose=verbose,
            device=device,
            support_multi_env=False,
            seed=seed,
            supported_action_spaces=(spaces.Discrete, spaces.Box),
        )
        if self.env is not None:
            self.spec: LinearMDPSpec = linear_mdp_spec(self.env)
            self.share_across_h = self.spec.time_homogeneous if share_across_h is None else bool(share_across_h)
        if _init_setup_model:
            self._setup_model()

    # ------------------------------------------------------------------------------------------------------------
    # Setup and state
    # ------------------------------------------------------------------------------------------------------------

    def _setup_model(self) -> None:
        self.set_random_seed(self.seed)
        if getattr(self, "rng", None) is None:  # kept as loaded: a loaded model continues the same random stream
            self.rng = np.random.default_rng(self.seed)
        self.policy = self.policy_class(  # type: ignore[assignment]
            self.observation_space,
            self.action_space,
            horizon=self.spec.horizon,
            n_states=self.spec.n_states,
            feature_dim=self.spec.feature_dim,
            n_groups=1 if self.share_across_h else self.spec.horizon,
            ridge=self.ridge,
            refactor_every=self.refactor_every,
            randomized=self.randomized_plan,
        ).to(self.device)
        self._reset_plan()

    def _reset_plan(self) -> None:
        """Before any data: the safe action everywhere."""
        plan = self.policy.plan.numpy()
        states = np.arange(self.spec.n_states)
        if self.randomized_plan:
            plan[:] = 0.0
            plan[:, states, self.spec.safe_index] = 1.0
            return
        plan[:] = np.stack([self.spec.action_of(int(s), int(self.spec.safe_index[s])) for s in states])[None]

    @property
    def stats(self) -> RidgeStatistics:
        """The ridge statistics (buffers of the policy)."""
        return self.policy.stats

    @property
    def episodes(self) -> int:
        """Episodes whose data are in the statistics (k)."""
        return int(self.policy.episodes)

    @property
    def episode_history(self) -> list[dict[str, float]]:
        """Summaries of the last ``stats_window_size`` finished episodes: ``return``, ``steps``, ``success``,
        ``failed``, ``violations``, ``max_expected_cost`` and ``return_<name>`` per ``<name>_reward`` info key."""
        return [dict(summary) for summary in self._episode_summaries]

    @property
    def violations(self) -> int:
        """Running count of training steps whose true expected cost exceeded tau."""
        return int(self.policy.violation_count)

    def group_of(self, step: int) -> int:
        """Statistics group of 0-based step h."""
        return 0 if self.share_across_h else step

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_episode_buffer", "_current_episode"]

    # ------------------------------------------------------------------------------------------------------------
    # Planning (subclasses)
    # ------------------------------------------------------------------------------------------------------------

    def _plan(self) -> dict[str, float]:
        """Backward pass with the current statistics: write the plan into ``self.policy.plan``.

        Returns:
            Values to log under ``train/`` (e.g. the bonus scales).
        """
        raise NotImplementedError

    def _on_learn_start(self, total_timesteps: int) -> None:
        """Set the bonus scale for a run of ``total_timesteps`` steps: beta_Q = c_beta d H sqrt(log(2 d T / delta))."""
        dim, horizon = self.spec.feature_dim, self.spec.horizon
        iota = math.log(2.0 * dim * max(total_timesteps, horizon) / self.delta)
        self.beta_q = self.c_beta * dim * horizon * math.sqrt(iota)

    def _store_plan(self, candidates: np.ndarray, choice: np.ndarray) -> None:
        """Write a deterministic plan into the policy: the chosen index (finite actions), or the chosen feature point
        ``candidates[layer of h, s, choice[h, s]]`` (star-convex sets; ``candidates`` is ``(1 or H, n_states, C, d)``).
        """
        plan = self.policy.plan.numpy()
        if self.spec.kind == "finite":
            plan[:] = choice
            return
        horizon, n_states = choice.shape
        layer = np.arange(horizon) if len(candidates) > 1 else np.zeros(horizon, dtype=np.int64)
        plan[:] = candidates[layer[:, None], np.arange(n_states)[None, :], choice]

    def _clip_levels(self) -> np.ndarray:
        return value_clip_levels(self.spec.horizon, self.value_clip)

    def _choose(self, state: int, step: int) -> Any:
        """The action to play at (state, step) during training: the plan's, or a sample from it (agent's RNG)."""
        planned = self.policy.plan.numpy()[min(step, self.spec.horizon - 1), state]
        if self.randomized_plan:
            return int(self.rng.choice(len(planned), p=planned / planned.sum()))
        return planned

    def _feature_of(self, state: int, action: Any) -> np.ndarray:
        """phi(s, a) of the action played (the feature point itself on star-convex sets)."""
        if self.spec.kind == "finite":
            return self.spec.candidates[state, int(action)]
        return np.asarray(action, dtype=np.float64)

    # ------------------------------------------------------------------------------------------------------------
    # Learning loop
    # ------------------------------------------------------------------------------------------------------------

    def learn(
        self: SelfLinearQVI,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 10,
        tb_log_name: str = "LinearQVI",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfLinearQVI:
        """Run K = ceil(total_timesteps / H) episodes (fewer if a callback stops learning).

        Episodes that end early (a terminal state) still count as one of the K, as in the paper's experiments;
        ``num_timesteps`` counts the environment steps actually taken. The logs are dumped every ``log_interval``
        episodes and after the last one.

        Each episode: one backward pass with the statistics of the past episodes, H environment steps from the
        plan (``callback.on_step`` after each; ``False`` stops), then the episode's samples are added to the
        statistics with rank-one updates.
        """
        if total_timesteps < 1:
            raise ValueError(
                f"total_timesteps must be >= 1 (it sets the number of episodes K = ceil(total_timesteps / H)), "
                f"got {total_timesteps}."
            )
        total_timesteps, callbacks = self._setup_learn(
            total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar
        )
        self._on_learn_start(total_timesteps)
        callbacks.on_training_start(locals(), globals())
        assert self.env is not None
        n_episodes = math.ceil((total_timesteps - self._num_timesteps_at_start) / self.spec.horizon)
        continue_training, episode = True, 0
        while continue_training and episode < n_episodes:
            episode += 1
            callbacks.on_rollout_start()
            start = time.perf_counter()
            train_logs = self._plan()
            self.last_plan_ms = 1e3 * (time.perf_counter() - start)
            continue_training = self._run_episode(callbacks)
            start = time.perf_counter()
            self._fold_episode()
            self.last_regression_ms = 1e3 * (time.perf_counter() - start)
            callbacks.on_rollout_end()
            last = not continue_training or episode == n_episodes
            if log_interval and (self.episodes % log_interval == 0 or last):
                self._record_train_logs(train_logs)
                self.dump_logs()
        callbacks.on_training_end()
        return self

    def _run_episode(self, callback: BaseCallback) -> bool:
        """Act from the plan until the episode ends; ``False`` if a callback asked to stop."""
        assert self.env is not None and self._last_obs is not None
        tau = self.spec.cost_threshold
        while True:
            obs = self._last_obs
            state, step = int(obs["state"][0]), int(obs["step"][0])  # type: ignore[index, call-overload]
            action = self._choose(state, step)
            env_action = np.array([action])
            new_obs, rewards, dones, infos = self.env.step(env_action)
            self.num_timesteps += 1
            info = infos[0]
            done = bool(dones[0])
            next_state = NO_NEXT_STATE if done else int(new_obs["state"][0])  # type: ignore[index, call-overload]
            cost = float(info.get("cost", 0.0))
            self._episode_buffer.append(
                (self.group_of(step), state, self._feature_of(state, action), float(rewards[0]), cost, next_state)
            )
            self._track_episode(info, float(rewards[0]), tau, self._expected_step_cost(state, step, action, info))
            self._update_info_buffer(infos, dones)
            self._last_obs = new_obs  # type: ignore[assignment]
            self._last_episode_starts = dones
            callback.update_locals(locals())
            if not callback.on_step():
                return False
            if done:
                self._close_episode_summary()
                return True

    def _expected_step_cost(self, state: int, step: int, action: Any, info: dict[str, Any]) -> float | None:
        """The true expected cost of the decision just taken, for violation counting: the env's ``true_cost``.

        Randomised agents override this: their constraint holds in expectation over their own sampling.
        """
        return None if "true_cost" not in info else float(info["true_cost"])

    def _track_episode(self, info: dict[str, Any], reward: float, tau: float, true_cost: float | None) -> None:
        episode = self._current_episode
        episode["return"] = episode.get("return", 0.0) + reward
        episode["steps"] = episode.get("steps", 0.0) + 1
        for key, value in info.items():
            if key.endswith("_reward") and isinstance(value, int | float | np.floating):
                name = f"return_{key[: -len('_reward')]}"
                episode[name] = episode.get(name, 0.0) + float(value)
        episode["success"] = max(episode.get("success", 0.0), float(bool(info.get("is_success", False))))
        episode["failed"] = max(episode.get("failed", 0.0), float(bool(info.get("failed", False))))
        if true_cost is not None:
            violated = true_cost > tau + VIOLATION_TOLERANCE
            episode["violations"] = episode.get("violations", 0.0) + violated
            episode["max_expected_cost"] = max(episode.get("max_expected_cost", -np.inf), true_cost)
            self.policy.violation_count += int(violated)
        elif not self._warned_no_true_cost:
            self._warned_no_true_cost = True
            warnings.warn(
                "The environment reports no ground truth (info['true_cost']): constraint violations cannot be counted "
                "(safety/violations stays 0).",
                stacklevel=3,
            )

    def _close_episode_summary(self) -> None:
        if self._current_episode:
            self._episode_summaries.append(self._current_episode)
        self._current_episode = {}

    def _fold_episode(self) -> None:
        """Rank-one updates with the samples of the episode just played (only past episodes are ever used)."""
        for group, _state, phi, reward, cost, next_state in self._episode_buffer:
            self.stats.add(group, phi, reward, cost, next_state)
        if self._episode_buffer:
            self.policy.episodes += 1
        self._episode_buffer = []

    # ------------------------------------------------------------------------------------------------------------
    # Logging
    # ------------------------------------------------------------------------------------------------------------

    def _record_train_logs(self, train_logs: dict[str, float]) -> None:
        """``train/<key>`` for each value of the plan's logs, or the key itself if it names its section."""
        for key, value in train_logs.items():
            self.logger.record(key if "/" in key else f"train/{key}", value)
        self.logger.record("train/n_samples", int(self.stats.n.sum()))
        self.logger.record("train/episodes", self.episodes)
        self.logger.record("time/backward_ms", self.last_plan_ms)
        self.logger.record("time/regression_ms", self.last_regression_ms)
        self.logger.record("time/per_state_us", 1e3 * self.last_plan_ms / (self.spec.horizon * self.spec.n_states))

    def dump_logs(self) -> None:
        """Write SB3's rollout keys, the safety metrics and the per-episode summaries, then dump."""
        assert self.ep_info_buffer is not None
        time_elapsed = max((time.time_ns() - self.start_time) / 1e9, sys.float_info.epsilon)
        self.logger.record("time/episodes", self._episode_num, exclude="tensorboard")
        if len(self.ep_info_buffer) > 0:
            self.logger.record("rollout/ep_rew_mean", safe_mean([info["r"] for info in self.ep_info_buffer]))
            self.logger.record("rollout/ep_len_mean", safe_mean([info["l"] for info in self.ep_info_buffer]))
        keys = sorted({key for summary in self._episode_summaries for key in summary} - {"steps"})
        for key in keys:
            values = [summary[key] for summary in self._episode_summaries if key in summary]
            name = f"ep_{key}" if key.startswith("return") else key  # rollout/ep_return, rollout/ep_return_task, ...
            self.logger.record(f"rollout/{name}", float(np.mean(values)))
        self.logger.record("safety/violations", self.violations)
        fps = int((self.num_timesteps - self._num_timesteps_at_start) / time_elapsed)
        self.logger.record("time/fps", fps)
        self.logger.record("time/time_elapsed", int(time_elapsed), exclude="tensorboard")
        self.logger.record("time/total_timesteps", self.num_timesteps, exclude="tensorboard")
        self._record_safety_metrics()
        self.logger.dump(step=self.num_timesteps)

    def _update_info_buffer(self, infos: list[dict[str, Any]], dones: np.ndarray | None = None) -> None:
        super()._update_info_buffer(infos, dones)
        if dones is not None and dones[0]:
            self._episode_num += 1
