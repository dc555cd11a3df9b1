"""Base class of the safe off-policy algorithms: SB3's OffPolicyAlgorithm with a cost-aware replay buffer."""

from __future__ import annotations

import warnings

from gymnasium import spaces
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

from sb3_safe.common.buffers import (
    COST_REPLAY_BUFFERS,
    CostDictReplayBuffer,
    CostNStepReplayBuffer,
    CostReplayBuffer,
)
from sb3_safe.common.safe_algorithm import SafeAlgorithmMixin
from sb3_safe.common.validation import check_common_hyperparameters, check_positive_int, check_unit_interval


def resolve_utd_ratio(utd_ratio: float | None, gradient_steps: int | None, default: float | None) -> float | None:
    """The update-to-data ratio (gradient steps per environment step collected), checked; None: SB3's
    ``gradient_steps`` decides.

    Raises:
        ValueError: If both are given, or the ratio is not > 0.
    """
    if utd_ratio is not None and gradient_steps is not None:
        raise ValueError("Pass either utd_ratio (gradient steps per env step) or gradient_steps, not both.")
    if utd_ratio is None and gradient_steps is None:
        utd_ratio = default
    if utd_ratio is not None and not utd_ratio > 0:
        raise ValueError(f"utd_ratio must be > 0 (gradient steps per env step collected, e.g. 0.2), got {utd_ratio}.")
    return utd_ratio


class SafeOffPolicyAlgorithm(SafeAlgorithmMixin, OffPolicyAlgorithm):
    """SB3's :class:`OffPolicyAlgorithm` whose replay buffer stores costs beside rewards.

    The replay buffer is chosen like SB3 chooses it, in its cost-aware form: :class:`CostReplayBuffer`,
    :class:`CostNStepReplayBuffer` when ``n_steps > 1`` (costs get the same n-step treatment as rewards), or
    :class:`CostDictReplayBuffer` for dict observations. Samples carry ``costs`` of shape ``(batch, n_costs)``.

    To give an SB3 algorithm the cost plumbing, put this class first in its bases, e.g.
    ``class MySAC(SafeOffPolicyAlgorithm, SAC)``. See :class:`SafeAlgorithmMixin` for ``cost_limit``,
    ``n_costs`` and the logged safety metrics.

    Subclasses that take an update-to-data ratio set ``utd_ratio`` (see :func:`resolve_utd_ratio`), pass SB3
    ``gradient_steps=-1`` and call :meth:`_scaled_gradient_steps` at the top of ``train()``.
    """

    utd_ratio: float | None = None
    _gradient_step_carry: float = 0.0

    def _scaled_gradient_steps(self, gradient_steps: int) -> int:
        """With ``utd_ratio``, the env steps just collected times the ratio (fractions carried over), else as given."""
        if self.utd_ratio is None:
            return gradient_steps
        self._gradient_step_carry += self.utd_ratio * gradient_steps
        steps = int(self._gradient_step_carry)
        self._gradient_step_carry -= steps
        return steps

    def _check_hyperparameters(self) -> None:
        """Refuse, before anything is built, the values SB3 would take silently (:mod:`~sb3_safe.common.validation`)."""
        check_common_hyperparameters(self, {"critic_learning_rate": getattr(self, "critic_learning_rate", None)})
        check_unit_interval("tau", self.tau, "the Polyak step of the target networks; 0.005-0.05 is typical")
        check_positive_int("n_steps", self.n_steps, "It is the length of the n-step return (1: one-step TD).")
        check_positive_int("buffer_size", self.buffer_size, "It is the replay buffer's capacity in transitions.")

    def _setup_model(self) -> None:
        self._check_hyperparameters()
        self.replay_buffer_kwargs = {**self.replay_buffer_kwargs}  # never write into the caller's dict
        if self.replay_buffer_class is None:
            if isinstance(self.observation_space, spaces.Dict):
                if self.n_steps > 1:
                    raise ValueError(
                        "n-step returns are not supported with dict observations (as in SB3): use n_steps=1."
                    )
                self.replay_buffer_class = CostDictReplayBuffer
            elif self.n_steps > 1:
                self.replay_buffer_class = CostNStepReplayBuffer
                self.replay_buffer_kwargs.update({"n_steps": self.n_steps, "gamma": self.gamma})
            else:
                self.replay_buffer_class = CostReplayBuffer
        elif not issubclass(self.replay_buffer_class, COST_REPLAY_BUFFERS):
            names = ", ".join(cls.__name__ for cls in COST_REPLAY_BUFFERS)
            raise TypeError(
                f"{type(self).__name__} needs a replay buffer that stores costs, got "
                f"{self.replay_buffer_class.__name__}. Use one of sb3_safe.common.buffers' {names} "
                "(or leave replay_buffer_class=None)."
            )
        self.replay_buffer_kwargs.setdefault("n_costs", self.n_costs)
        with warnings.catch_warnings():
            # We chose the buffer and configured its n-step returns ourselves; SB3's hint does not apply.
            warnings.filterwarnings("ignore", message=r"`n_steps=\d+` is ignored because a custom")
            super()._setup_model()
