"""The runner from Python (no CLI), on the toy constrained tasks: several constraints, configs, linear resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sb3_safe.experiment.config import ConfigError, RunConfig, build_config
from sb3_safe.experiment.rundir import RunDirectory
from sb3_safe.experiment.runner import train


def test_two_constraints_report_one_dual_per_constraint(tmp_path: Path) -> None:
    overrides = {"cost_limit": [2.0, 3.0], "n_costs": 2, "learning_starts": 20, "policy_kwargs": {"net_arch": [8]}}
    config = build_config(
        "sac_lag", "ToyTwoCosts-v0", n_timesteps=120, n_envs=1, overrides=overrides, eval_freq=0, eval_episodes=1
    )
    assert config.cost_limit == 5.0  # reported against the summed cost
    outcome = train(RunConfig(**{**config.to_dict(), "wandb_mode": "disabled"}), tmp_path / "run", progress_bar=False)
    duals = json.loads((tmp_path / "run" / "summary.json").read_text())["duals"]
    assert outcome.status == "finished" and len(duals["lambda"]) == 2


def test_config_round_trips_through_the_run_directory(tmp_path: Path) -> None:
    config = build_config("cvpo", "ToyConstrained-v0", n_timesteps=500, overrides=["batch_size=32"], preset=None)
    run = RunDirectory(tmp_path)
    run.write_config(config)
    assert run.read_config() == config and run.read_config().fingerprint() == config.fingerprint()
    with pytest.raises(ConfigError, match="not a run configuration"):
        RunConfig.from_dict({"algo": "CVPO"}, "x.yaml")
