"""Every user mistake is one line on stderr and exit code 2, before anything is written (no traceback, no banner)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml

from sb3_safe.cli import main
from sb3_safe.experiment.plots import MAX_BINS

TOY = "ToyConstrained-v0"
SAFETY = "SafetyPointGoal1-v0"


def _error_of(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(list(argv)) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err, captured.err
    assert "Training" not in captured.out  # the banner comes only after validation
    return captured.err


def _train(run_dir: Path, *extra: str) -> list[str]:
    return ["train", "--algo", "cvpo", "--n-envs", "1", "--no-wandb", "--run-dir", str(run_dir), *extra]


@pytest.mark.parametrize("env", [TOY, SAFETY])
def test_unknown_env_kwargs_option(env: str, tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "run"
    error = _error_of(capsys, *_train(run_dir, "--env", env, "--env-kwargs", "foo=1"))
    assert "--env-kwargs foo=1" in error and f"{env} refused them" in error and "'foo'" in error
    assert "raised from the environment creator" not in error
    assert not run_dir.exists()


def test_benchmark_checks_env_kwargs_before_writing(tmp_path: Path, capsys) -> None:
    out = tmp_path / "bench"
    argv = ["benchmark", "--algos", "cvpo", "--envs", TOY, "--seeds", "2", "--out", str(out), "--no-wandb"]
    error = _error_of(capsys, *argv, "--env-kwargs", "foo=1")
    assert "--env-kwargs foo=1" in error and not out.exists()


@pytest.mark.parametrize(
    ("algo", "override", "expected"),
    [
        ("cvpo", "batch_size=abc", "batch_size='abc' (text): CVPO's batch_size takes int"),
        ("cvpo", "learning_rate=text", "learning_rate='text' (text): CVPO's learning_rate takes float | Schedule"),
        ("sac_lag", "learning_rate=", "learning_rate=None (null): SACLag's learning_rate takes float | "),
        ("ppo_lag", "batch_size=abc", "batch_size='abc' (text): PPOLag's batch_size takes int"),
        ("ppo_lag", "gamma=[0.9]", "gamma=[0.9] (a list): PPOLag's gamma takes float"),
    ],
)
def test_hyperparameters_of_the_wrong_type(algo: str, override: str, expected: str, tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "run"
    argv = ["train", "--algo", algo, "--env", TOY, "--no-wandb", "--run-dir", str(run_dir), "--hyperparams", override]
    error = _error_of(capsys, *argv)
    assert "Wrong hyperparameter type in --hyperparams" in error and expected in error
    assert not run_dir.exists()


def test_wrong_types_in_a_conf_file_and_numbers_written_as_text(tmp_path: Path, capsys) -> None:
    from sb3_safe.experiment.config import build_config

    conf = tmp_path / "mine.yml"
    conf.write_text("batch_size: lots\n")
    error = _error_of(capsys, *_train(tmp_path / "run", "--env", TOY, "--conf-file", str(conf)))
    assert f"Wrong hyperparameter type in {conf}: batch_size='lots'" in error
    conf.write_text("learning_rate: 3e-4\nbuffer_size: 1e5\n")  # YAML 1.1: text, and a float
    config = build_config("cvpo", TOY, conf_file=conf, overrides=["batch_size=6.4e1"])
    assert config.hyperparams["learning_rate"] == pytest.approx(3e-4)
    assert (config.hyperparams["buffer_size"], config.hyperparams["batch_size"]) == (100_000, 64)
    assert isinstance(config.hyperparams["buffer_size"], int) and isinstance(config.hyperparams["batch_size"], int)


def test_the_banner_names_the_run_directory_once_it_exists(tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "run"
    argv = _train(run_dir, "--env", TOY, "--n-timesteps", "40", "--eval-freq", "0", "--eval-episodes", "1")
    assert main([*argv, "--no-progress-bar", "--hyperparams", "learning_starts=10", "batch_size=8"]) == 0
    out = capsys.readouterr().out
    banner = next(line for line in out.splitlines() if line.startswith("Training"))
    assert banner.endswith(f"run directory {run_dir}") and (run_dir / "config.yaml").is_file()


def _evaluations_only_run(root: Path) -> Path:
    root.mkdir(parents=True)
    config = {"algo": "CVPO", "env": TOY, "seed": 0, "cost_limit": 5.0, "n_timesteps": 1000, "n_envs": 1}
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    (root / "logs").mkdir()
    with open(root / "logs" / "evaluations.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["timestep", "mean_return", "mean_cost"])
        writer.writerows([[250, 1.0, 2.0], [500, 2.0, 1.0]])
    return root


def test_plot_without_finished_episodes_plots_the_evaluations(tmp_path: Path, capsys) -> None:
    run = _evaluations_only_run(tmp_path / "early")
    out = tmp_path / "curves.png"
    with pytest.warns(UserWarning, match="plotting the periodic evaluations"):
        assert main(["plot", str(run), "--out", str(out)]) == 0
    assert out.stat().st_size > 0
    (run / "logs" / "evaluations.csv").unlink()
    with pytest.warns(UserWarning, match="Skipping"):
        error = _error_of(capsys, "plot", str(run), "--out", str(tmp_path / "none.png"))
    assert "No run has a finished episode or an evaluation to plot" in error
    assert not (tmp_path / "none.png").exists()


@pytest.mark.parametrize("bins", ["0", "-3", str(MAX_BINS + 1)])
def test_plot_bins_out_of_range(bins: str, tmp_path: Path, capsys) -> None:
    run = _evaluations_only_run(tmp_path / "run")
    error = _error_of(capsys, "plot", str(run), "--bins", bins)
    assert f"--bins must be between 1 and {MAX_BINS}, got {bins}" in error
