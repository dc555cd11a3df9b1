"""SB3 algorithms on the cost-aware plumbing, with the cost recorded but not optimised.

They are the unconstrained reference of safe-RL comparisons: same networks and settings as SB3's, with
the cost stored in the buffer and ``rollout/ep_cost_mean``, ``safety/cost_rate`` and
``safety/episodes_over_limit`` logged beside the reward.
"""

from __future__ import annotations

from typing import ClassVar

from stable_baselines3 import SAC

from sb3_safe.common.off_policy import SafeOffPolicyAlgorithm


class UnconstrainedSAC(SafeOffPolicyAlgorithm, SAC):
    """SB3's SAC, unchanged in what it optimises, with costs stored and logged.

    Takes SAC's arguments plus ``cost_limit`` (per episode, used for ``safety/episodes_over_limit``) and
    ``n_costs``; ``env`` may be an id of :func:`sb3_safe.list_envs`. Replay samples carry ``costs``.
    """

    continuous_actions_only: ClassVar[bool] = True
