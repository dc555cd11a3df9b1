"""Experiments: resolved run configurations, run directories, training and resuming, sweeps, plots and videos.

The ``sb3-safe`` command (:mod:`sb3_safe.cli`) is a thin layer over these modules; each can be used from Python::

    from sb3_safe.experiment.config import build_config
    from sb3_safe.experiment.runner import train, resume

    outcome = train(build_config("cvpo", "SafetyPointGoal1-v0", n_timesteps=20_000), "runs/cvpo-goal1")
"""
