"""Lagrangian safe-RL baselines on Stable-Baselines3: SAC-Lag and TD3-Lag (PID or gradient multipliers)."""

from sb3_safe.lagrangian.ppo_lag import PPOLag
from sb3_safe.lagrangian.sac_lag import SACLag
from sb3_safe.lagrangian.td3_lag import TD3Lag

__all__ = ["PPOLag", "SACLag", "TD3Lag"]
