"""Register the plugin's environments with Gymnasium (entry point ``frozen_lake`` of group ``sb3_safe.envs``)."""

from __future__ import annotations

import gymnasium

ENTRY_POINTS: dict[str, str] = {
    "FrozenLake10x10Safe-v0": "sb3_safe_frozen_lake.frozen_lake:FrozenLakeSafeEnv",
    "LinearMDPSynthetic-v0": "sb3_safe_frozen_lake.synthetic:LinearMDPSyntheticEnv",
}
"""Environment id -> entry point. Both envs truncate after their horizon by themselves: no ``max_episode_steps``."""


def register() -> list[str]:
    """Register both environments with Gymnasium. Idempotent.

    Returns:
        The registered ids, sorted (``sb3_safe.envs`` entry-point contract).
    """
    for env_id, entry_point in ENTRY_POINTS.items():
        current = gymnasium.registry.get(env_id)
        if current is not None and current.entry_point == entry_point:
            continue  # already ours: registering again would only warn
        if current is not None:
            del gymnasium.registry[env_id]
        gymnasium.register(id=env_id, entry_point=entry_point)
    return sorted(ENTRY_POINTS)
