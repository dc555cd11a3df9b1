"""CVPO on a Bullet-Safety-Gym task (the paper's own benchmark) through the CLI, with the bullet family's defaults."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from sb3_safe.cli import main

TASK = "SafetyBallCircle-v0"


def test_cvpo_trains_on_bullet_ball_circle_with_fsrl_settings(tmp_path: Path) -> None:
    pytest.importorskip("sb3_safe_bullet_safety_gym")
    run_dir = tmp_path / "ball-circle"
    argv = ["train", "--algo", "cvpo", "--env", TASK, "--n-timesteps", "1200", "--n-envs", "2", "--no-wandb"]
    assert (
        main([*argv, "--eval-freq", "0", "--eval-episodes", "1", "--run-dir", str(run_dir), "--no-progress-bar"]) == 0
    )
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["cost_limit"] == 10.0
    assert (config["hyperparams"]["gamma"], config["hyperparams"]["n_steps"]) == (0.97, 2)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["total_timesteps"] == 1200 and summary["training"]["episodes"] == 6  # 3 of 200 steps per env
    assert summary["evaluation"]["mean_length"] == 200.0
    video = tmp_path / "ball.gif"
    assert main(["eval", str(run_dir), "--episodes", "1", "--video", str(video), "--video-max-steps", "12"]) == 0
    assert video.stat().st_size > 0  # pybullet's offscreen camera, through the plugin's render_mode support
