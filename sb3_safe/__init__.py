"""sb3-safe: safe reinforcement learning on Stable-Baselines3.

The public API is re-exported here::

    import sb3_safe

    env = sb3_safe.make_env("SafetyPointGoal1-v0")   # from the safety-gymnasium plugin
    sb3_safe.list_envs(), sb3_safe.list_algorithms()
    result = sb3_safe.evaluate_safe_policy(model, env, n_eval_episodes=10)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sb3_safe.common.costs import (
    InvalidCostError,
    MissingCostError,
    NonFiniteDataError,
    cost_limit_to_q_threshold,
    episode_length_of,
)
from sb3_safe.registry import (
    UnknownAlgorithmError,
    UnknownEnvironmentError,
    env_providers,
    get_algorithm,
    list_algorithms,
    list_envs,
    make_env,
)

if TYPE_CHECKING:
    from sb3_safe.common.callbacks import SafeEvalCallback
    from sb3_safe.common.env_util import make_vec_env
    from sb3_safe.common.evaluation import SafeEvaluationResult, evaluate_safe_policy
    from sb3_safe.common.monitor import SafeMonitor
    from sb3_safe.common.unconstrained import UnconstrainedSAC
    from sb3_safe.cvpo import CVPO
    from sb3_safe.export import export_policy, load_policy
    from sb3_safe.lagrangian import PPOLag, SACLag, TD3Lag
    from sb3_safe.linear import LSVIUCB, RSLUCBQVI, SLUCBQVI

__version__ = "0.1.0"

# Heavier pieces (torch, SB3 algorithms) are imported on first use, so `import sb3_safe` stays quick.
_LAZY = {
    "CVPO": "sb3_safe.cvpo",
    "LSVIUCB": "sb3_safe.linear",
    "PPOLag": "sb3_safe.lagrangian",
    "SACLag": "sb3_safe.lagrangian",
    "TD3Lag": "sb3_safe.lagrangian",
    "SLUCBQVI": "sb3_safe.linear",
    "RSLUCBQVI": "sb3_safe.linear",
    "SafeEvalCallback": "sb3_safe.common.callbacks",
    "SafeEvaluationResult": "sb3_safe.common.evaluation",
    "SafeMonitor": "sb3_safe.common.monitor",
    "UnconstrainedSAC": "sb3_safe.common.unconstrained",
    "evaluate_safe_policy": "sb3_safe.common.evaluation",
    "make_vec_env": "sb3_safe.common.env_util",
    "export_policy": "sb3_safe.export",
    "load_policy": "sb3_safe.export",
}

__all__ = [
    "CVPO",
    "LSVIUCB",
    "RSLUCBQVI",
    "SLUCBQVI",
    "InvalidCostError",
    "MissingCostError",
    "NonFiniteDataError",
    "PPOLag",
    "SACLag",
    "SafeEvalCallback",
    "SafeEvaluationResult",
    "SafeMonitor",
    "TD3Lag",
    "UnconstrainedSAC",
    "UnknownAlgorithmError",
    "UnknownEnvironmentError",
    "__version__",
    "cost_limit_to_q_threshold",
    "env_providers",
    "episode_length_of",
    "evaluate_safe_policy",
    "export_policy",
    "get_algorithm",
    "list_algorithms",
    "list_envs",
    "load_policy",
    "make_env",
    "make_vec_env",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sb3_safe' has no attribute '{name}'")
