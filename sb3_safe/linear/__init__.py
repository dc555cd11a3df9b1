"""Safe linear-MDP agents (Amani et al., ICML 2021) and the LSVI-UCB baselines, with SB3's algorithm interface.

The environments come from plugins that expose the linear-MDP protocol (:mod:`sb3_safe.linear.features`), e.g.
``FrozenLake10x10Safe-v0`` and ``LinearMDPSynthetic-v0`` from the frozen-lake plugin.
"""

from sb3_safe.linear.adapter import LinearQVIAlgorithm, LinearQVIPolicy
from sb3_safe.linear.features import LinearMDPProtocolError, LinearMDPSpec, linear_mdp_spec
from sb3_safe.linear.gram import RidgeStatistics
from sb3_safe.linear.lsvi_ucb import LSVIUCB
from sb3_safe.linear.planning import Plan, backward_pass
from sb3_safe.linear.rslucb_qvi import RSLUCBQVI
from sb3_safe.linear.safe_qvi import SafeLinearQVI
from sb3_safe.linear.safety import CostModel, beta_safe, cost_model, kappa
from sb3_safe.linear.slucb_qvi import SLUCBQVI
from sb3_safe.linear.socp import SimplexSOCP, SOCPSolution, psd_sqrt

__all__ = [
    "LSVIUCB",
    "RSLUCBQVI",
    "SLUCBQVI",
    "CostModel",
    "LinearMDPProtocolError",
    "LinearMDPSpec",
    "LinearQVIAlgorithm",
    "LinearQVIPolicy",
    "Plan",
    "RidgeStatistics",
    "SOCPSolution",
    "SafeLinearQVI",
    "SimplexSOCP",
    "backward_pass",
    "beta_safe",
    "cost_model",
    "kappa",
    "linear_mdp_spec",
    "psd_sqrt",
]
