"""CVPO: Constrained Variational Policy Optimization (Liu et al., ICML 2022) on Stable-Baselines3."""

from sb3_safe.cvpo.cvpo import CVPO
from sb3_safe.cvpo.estep import EStepSolution, EStepWarmStart, NonFiniteQError, solve_estep, solve_estep_dual
from sb3_safe.cvpo.policies import CVPOPolicy, GaussianActor, MlpPolicy, MultiInputPolicy

__all__ = [
    "CVPO",
    "CVPOPolicy",
    "EStepSolution",
    "EStepWarmStart",
    "GaussianActor",
    "MlpPolicy",
    "MultiInputPolicy",
    "NonFiniteQError",
    "solve_estep",
    "solve_estep_dual",
]
