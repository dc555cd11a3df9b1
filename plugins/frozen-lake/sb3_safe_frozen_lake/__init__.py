"""Safe linear-MDP environments for sb3-safe (Amani et al. 2021's experiments), registered with Gymnasium on import.

- ``FrozenLake10x10Safe-v0`` (:class:`FrozenLakeSafeEnv`): Gymnasium's FrozenLake on CISR's 10x10 map with exact
  linear features, hole-probability cost and tau = 0.1 (Figure 2).
- ``LinearMDPSynthetic-v0`` (:class:`LinearMDPSyntheticEnv`): the random linear MDP with finite star-convex
  action sets (Figure 1).

Both are standard Gymnasium 5-tuple envs with the observed cost in ``info["cost"]`` and the linear-MDP protocol
(:mod:`sb3_safe_frozen_lake.protocol`) on ``env.unwrapped``. Example::

    import sb3_safe
    env = sb3_safe.make_env("FrozenLake10x10Safe-v0")
    lake = env.unwrapped
    lake.feature_table().shape  # (100, 4, 100)
"""

from __future__ import annotations

from sb3_safe_frozen_lake.frozen_lake import FrozenLakeSafeEnv
from sb3_safe_frozen_lake.frozen_lake_model import MAP_10X10_SAFE, FrozenLakeModel, build_model
from sb3_safe_frozen_lake.protocol import FiniteActionLinearMDP, LinearMDP, StarConvexLinearMDP
from sb3_safe_frozen_lake.registration import register
from sb3_safe_frozen_lake.synthetic import LinearMDPSyntheticEnv
from sb3_safe_frozen_lake.synthetic_model import SyntheticInstance, draw_instance

__all__ = [
    "MAP_10X10_SAFE",
    "FiniteActionLinearMDP",
    "FrozenLakeModel",
    "FrozenLakeSafeEnv",
    "LinearMDP",
    "LinearMDPSyntheticEnv",
    "StarConvexLinearMDP",
    "SyntheticInstance",
    "build_model",
    "draw_instance",
    "register",
]

__version__ = "0.1.0"

register()
