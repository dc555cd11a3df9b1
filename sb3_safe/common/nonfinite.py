"""The guard that keeps NaN and infinite rewards, costs and observations out of training (``nonfinite`` option).

Every safe algorithm hands SB3's collection loop its training VecEnv wrapped in :class:`NonFiniteGuard`
(:class:`~sb3_safe.common.safe_algorithm.SafeAlgorithmMixin`), so each step's data is checked before callbacks,
episode costs, multipliers or buffers see it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvObs, VecEnvStepReturn

from sb3_safe.common.costs import (
    COST_KEY,
    COSTS_KEY,
    NONFINITE_KEY,
    MissingCostError,
    NonFiniteDataError,
    costs_from_infos,
    describe_nonfinite,
    env_name_of,
    nonfinite_message,
)

if TYPE_CHECKING:
    from sb3_safe.common.safe_algorithm import SafeAlgorithmMixin

__all__ = ["NONFINITE_MODES", "NonFiniteDataError", "NonFiniteGuard", "check_nonfinite_mode"]

NONFINITE_MODES = ("raise", "skip")
"""Values of the safe algorithms' ``nonfinite`` option."""

_RAISE_REMEDY = (
    "A NaN or infinite value must not be stored or trained on (it ends in NaN weights, or in a crash far from its "
    "cause). Fix the environment, or wrap it so that it returns finite values; or pass nonfinite='skip' to the "
    "algorithm (or set model.nonfinite = 'skip') to skip such transitions, counted in safety/nonfinite_skipped."
)
_SKIP_REMEDY = (
    "nonfinite='skip': such transitions are not trained on (off-policy: never sampled from the replay buffer; "
    "on-policy: kept with zero advantage, the episode cut there for GAE). This is the only warning; further ones are "
    "counted in safety/nonfinite_skipped."
)


def check_nonfinite_mode(mode: Any) -> None:
    if mode not in NONFINITE_MODES:
        raise ValueError(
            f"nonfinite must be one of {NONFINITE_MODES}, got {mode!r}: 'raise' stops at a NaN or infinite reward, "
            "cost or observation; 'skip' leaves such transitions out of training and counts them."
        )


def _rows_finite(obs: Any, n_envs: int) -> np.ndarray:
    """Per environment: whether its entry of a batched observation (array or dict of arrays) is all finite."""
    if isinstance(obs, Mapping):
        flags = [_rows_finite(value, n_envs) for value in obs.values()]
        return np.logical_and.reduce(flags) if flags else np.ones(n_envs, dtype=bool)
    array = np.asarray(obs)
    if array.dtype.kind not in "fc":  # integer observations are always finite
        return np.ones(n_envs, dtype=bool)
    return np.isfinite(array.reshape(n_envs, -1)).all(axis=1)


def _row(obs: Any, index: int) -> Any:
    return {key: value[index] for key, value in obs.items()} if isinstance(obs, Mapping) else obs[index]


def _finite_copy(value: Any) -> Any:
    """A copy with NaN and +-inf entries replaced by 0 (arrays, dicts of arrays; anything else unchanged)."""
    if isinstance(value, Mapping):
        return {key: _finite_copy(item) for key, item in value.items()}
    array = np.asarray(value)
    if array.dtype.kind not in "fc":
        return value
    return np.nan_to_num(array, nan=0.0, posinf=0.0, neginf=0.0)


def _zero_nonfinite_costs(info: dict[str, Any]) -> None:
    """Replace the non-finite per-step costs of ``info`` by 0 (``info["cost"]`` becomes the sum of what is left)."""
    if COSTS_KEY in info:
        costs = np.nan_to_num(np.asarray(info[COSTS_KEY], dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        info[COSTS_KEY] = costs
        if COST_KEY in info:
            info[COST_KEY] = float(costs.sum())
    else:
        info[COST_KEY] = 0.0


class NonFiniteGuard(VecEnvWrapper):
    """The training VecEnv as SB3's collection loop sees it: each step's data is checked before anything uses it.

    A NaN or infinite reward, cost (``info["cost"]``/``info["costs"]``), observation or terminal observation
    raises :class:`NonFiniteDataError` (``nonfinite="raise"``). With ``nonfinite="skip"`` the bad entries are
    replaced by 0 in what the loop receives, the transition is flagged in ``info["nonfinite"]`` (the buffers
    leave flagged transitions out of training), counted in the algorithm's ``nonfinite_skipped`` and warned
    about once. A transition is flagged when its observation, reward, cost or next observation was bad: a bad
    observation flags the transition that ends in it and the one that starts from it.
    """

    def __init__(self, venv: VecEnv, algorithm: SafeAlgorithmMixin) -> None:
        super().__init__(venv)
        self.algorithm = algorithm
        self.reset_state()

    def reset_state(self) -> None:
        """Forget the previous step (after the environments were reset)."""
        self.obs_bad = np.zeros(self.num_envs, dtype=bool)  # the current observation of each env was not finite
        self.returns = np.zeros(self.num_envs, dtype=np.float64)  # running return of the finite rewards

    def reset(self) -> VecEnvObs:
        """Reset the environments and check their first observations."""
        self.reset_state()
        return self.screen_reset(self.venv.reset())

    def step_wait(self) -> VecEnvStepReturn:
        """Step the environments and check what they returned."""
        obs, rewards, dones, infos = self.venv.step_wait()
        return self.screen_step(obs, rewards, dones, infos)

    def _env_name(self) -> str | None:
        return env_name_of(self.venv)

    def _fail_or_warn(self, problems: dict[int, list[str]], when: str) -> None:
        first = min(problems)
        where = f"(env index {first}) {when}"
        if len(problems) > 1:
            where += f" (env indices {sorted(problems)} all returned non-finite data)"
        if self.algorithm.nonfinite == "raise":
            raise NonFiniteDataError(nonfinite_message(problems[first], self._env_name(), where, _RAISE_REMEDY))
        self.algorithm._warn_nonfinite(nonfinite_message(problems[first], self._env_name(), where, _SKIP_REMEDY))

    def screen_reset(self, obs: VecEnvObs) -> VecEnvObs:
        """Check the observations from a reset; in skip mode, return them with non-finite entries set to 0."""
        bad = ~_rows_finite(obs, self.num_envs)
        normalizer = self.algorithm._vec_normalize_env
        if normalizer is not None:
            bad |= ~_rows_finite(normalizer.get_original_obs(), self.num_envs)
        if not bad.any():
            return obs
        problems = {
            int(i): [
                "observation from env.reset() "
                + (describe_nonfinite(_row(obs, int(i))) or "is not finite (before VecNormalize)")
            ]
            for i in np.flatnonzero(bad)
        }
        self._fail_or_warn(problems, f"at reset, num_timesteps={self.algorithm.num_timesteps}")
        self.obs_bad |= bad
        return _finite_copy(obs)

    def screen_step(
        self, obs: VecEnvObs, rewards: np.ndarray, dones: np.ndarray, infos: list[dict[str, Any]]
    ) -> VecEnvStepReturn:
        """Check one step's observations, rewards, costs and terminal observations (see the class docstring)."""
        algorithm = self.algorithm
        n_envs = self.num_envs
        try:
            costs = costs_from_infos(infos, algorithm.n_costs)
        except MissingCostError:
            costs_from_infos(infos, algorithm.n_costs, self._env_name())  # the same error, naming the env
            raise
        normalizer = algorithm._vec_normalize_env
        raw_rewards = rewards if normalizer is None else normalizer.get_original_reward()
        obs_bad = ~_rows_finite(obs, n_envs)
        reward_bad = ~np.isfinite(np.asarray(rewards, dtype=np.float64))
        if normalizer is not None:
            obs_bad |= ~_rows_finite(normalizer.get_original_obs(), n_envs)
            reward_bad |= ~np.isfinite(np.asarray(raw_rewards, dtype=np.float64))
        cost_bad = ~np.isfinite(costs).all(axis=1)
        terminal_bad = np.zeros(n_envs, dtype=bool)
        for i in np.flatnonzero(dones):
            terminal = infos[i].get("terminal_observation")
            terminal_bad[i] = terminal is not None and describe_nonfinite(terminal) is not None
        self.returns += np.where(reward_bad, 0.0, np.asarray(raw_rewards, dtype=np.float64))
        if obs_bad.any() or reward_bad.any() or cost_bad.any() or terminal_bad.any() or self.obs_bad.any():
            obs, rewards = self._handle(obs, rewards, dones, infos, obs_bad, reward_bad, cost_bad, terminal_bad)
        for i in np.flatnonzero(dones):
            episode = infos[i].get("episode")
            if episode is not None and not np.isfinite(episode.get("r", 0.0)):  # a skipped reward counts as 0
                episode["r"] = round(float(self.returns[i]), 6)
            self.returns[i] = 0.0
        return obs, rewards, dones, infos

    def _handle(
        self,
        obs: VecEnvObs,
        rewards: np.ndarray,
        dones: np.ndarray,
        infos: list[dict[str, Any]],
        obs_bad: np.ndarray,
        reward_bad: np.ndarray,
        cost_bad: np.ndarray,
        terminal_bad: np.ndarray,
    ) -> tuple[VecEnvObs, np.ndarray]:
        problems: dict[int, list[str]] = {}
        for i in range(self.num_envs):
            info = infos[i]
            found: list[str] = []
            if reward_bad[i]:
                found.append(f"reward {describe_nonfinite(rewards[i]) or 'is not finite (before VecNormalize)'}")
            if cost_bad[i]:
                key = COSTS_KEY if COSTS_KEY in info else COST_KEY
                found.append(f"cost info['{key}'] {describe_nonfinite(info[key])}")
            if obs_bad[i]:
                text = describe_nonfinite(_row(obs, i)) or "is not finite (before VecNormalize)"
                label = "observation (the first of the next episode, after the reset)" if dones[i] else "observation"
                found.append(f"{label} {text}")
            if terminal_bad[i]:
                terminal_text = describe_nonfinite(info["terminal_observation"])
                found.append(f"terminal observation (info['terminal_observation']) {terminal_text}")
            if found:
                problems[i] = found
        if problems:
            self._fail_or_warn(problems, f"at num_timesteps={self.algorithm.num_timesteps + self.num_envs}")
        # Skip mode from here on: flag the transitions, hand on finite values.
        has_terminal = np.array(
            [bool(d) and infos[i].get("terminal_observation") is not None for i, d in enumerate(dones)]
        )
        next_obs_bad = np.where(has_terminal, terminal_bad, obs_bad)
        flagged = self.obs_bad | reward_bad | cost_bad | next_obs_bad
        for i in np.flatnonzero(flagged):
            info = infos[i]
            fields = [
                name
                for name, bad in (
                    ("previous observation", self.obs_bad[i]),
                    ("reward", reward_bad[i]),
                    ("cost", cost_bad[i]),
                    ("observation", obs_bad[i] and not has_terminal[i]),
                    ("terminal observation", terminal_bad[i]),
                )
                if bad
            ]
            info[NONFINITE_KEY] = tuple(fields)
            if cost_bad[i]:
                _zero_nonfinite_costs(info)
            if terminal_bad[i]:
                info["terminal_observation"] = _finite_copy(info["terminal_observation"])
        self.algorithm.nonfinite_skipped += int(flagged.sum())
        self.obs_bad = obs_bad.copy()
        if reward_bad.any():
            rewards = np.where(reward_bad, 0.0, rewards).astype(np.asarray(rewards).dtype)
        if obs_bad.any():
            obs = _finite_copy(obs)
        return obs, rewards
