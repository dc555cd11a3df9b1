"""The ``sb3-safe`` command end to end: real safety-gymnasium tasks, checkpoints, offline W&B, a local Ray instance."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from _cli_process import cli_process

from sb3_safe.cli import main
from sb3_safe.common.wandb_offline import find_offline_runs, read_offline_run

ENV = "SafetyPointGoal1-v0"
# CVPO with a short warm-up; fast_reset is the plugin's quick world reset (same trajectories).
FAST = ["--no-progress-bar", "--hyperparams", "learning_starts=400", "--env-kwargs", "fast_reset=true"]


def _csv_column(path: Path, column: str) -> list[float]:
    with open(path, newline="") as handle:
        return [float(row[column]) for row in csv.DictReader(handle) if row[column] != ""]


def _wait_for_checkpoint(run_dir: Path, at_least: int, process: subprocess.Popen[str], timeout: float = 240) -> int:
    state_file = run_dir / "checkpoints" / "state.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[0]
        if state_file.is_file():
            step = json.loads(state_file.read_text())["num_timesteps"]
            if step >= at_least:
                return int(step)
        time.sleep(0.2)
    raise AssertionError(f"no checkpoint at >= {at_least} steps within {timeout} s")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One short CVPO run on a real task, trained in-process through the CLI."""
    run_dir = tmp_path_factory.mktemp("cli") / "cvpo-run"
    code = main(
        [
            *["train", "--algo", "cvpo", "--env", ENV, "--n-timesteps", "2000", "--n-envs", "2", "--seed", "3"],
            *["--eval-freq", "1000", "--eval-episodes", "1", "--checkpoint-freq", "1000", "--run-dir", str(run_dir)],
            *FAST,
        ]
    )
    assert code == 0
    return run_dir


def test_train_writes_the_documented_run_directory(finished_run: Path) -> None:
    config = yaml.safe_load((finished_run / "config.yaml").read_text())
    assert (config["algo"], config["env"], config["seed"], config["n_envs"]) == ("CVPO", ENV, 3, 2)
    assert config["hyperparams"]["learning_starts"] == 400 and config["env_kwargs"] == {"fast_reset": True}
    assert config["hyperparams"]["gamma"] == 0.995  # the navigation family's value from the packaged YAML
    summary = json.loads((finished_run / "summary.json").read_text())
    assert summary["total_timesteps"] == 2000
    assert set(summary["evaluation"]) >= {"mean_return", "mean_cost", "cost_rate", "episodes_over_limit"}
    assert set(summary["duals"]) >= {"eta", "lambda"}
    assert _csv_column(finished_run / "logs" / "evaluations.csv", "timestep") == [1000.0, 2000.0]
    assert _csv_column(finished_run / "logs" / "episodes.csv", "timestep")  # 1000-step episodes finished
    assert (finished_run / "plots" / "learning_curve.png").stat().st_size > 0
    assert (finished_run / "model.zip").stat().st_size > 0
    assert list((finished_run / "logs" / "tensorboard").glob("events.out.tfevents.*"))
    state = json.loads((finished_run / "checkpoints" / "state.json").read_text())
    assert state["num_timesteps"] == 2000 and (finished_run / "checkpoints" / state["replay_buffer"]).is_file()
    info = json.loads((finished_run / "run.json").read_text())
    assert info["status"] == "finished" and 0 < summary["train_seconds"] <= info["train_seconds"]
    wandb_runs = find_offline_runs(finished_run / "wandb")
    assert len(wandb_runs) == 1
    offline = read_offline_run(wandb_runs[0], wait=10)
    assert offline.config["algo"] == "CVPO" and offline.config["hyperparams"]["learning_starts"] == 400
    assert [step for step, _ in offline.series("eval/mean_cost")] == [1000, 2000]


def test_killed_run_resumes_to_the_same_end(tmp_path: Path) -> None:
    run_dir = tmp_path / "killed"
    total, n_envs = 3000, 2
    process = cli_process(
        *["train", "--algo", "cvpo", "--env", ENV, "--n-timesteps", str(total), "--n-envs", str(n_envs)],
        *["--eval-freq", "500", "--eval-episodes", "1", "--checkpoint-freq", "500", "--run-dir", str(run_dir)],
        *FAST,
        "max_episode_steps=250",  # short episodes: many rows in every log
    )
    try:
        checkpoint = _wait_for_checkpoint(run_dir, 1500, process)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert checkpoint < total
    assert json.loads((run_dir / "run.json").read_text())["status"] == "running"  # killed: no clean stop

    resumed = cli_process("resume", str(run_dir), "--no-progress-bar")
    output = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0, output
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["total_timesteps"] == total
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "finished" and info["resumes"] == 1 and info["resumed_from"] >= checkpoint

    # Evaluations land on the same steps as in an uninterrupted run: none lost, none repeated.
    assert _csv_column(run_dir / "logs" / "evaluations.csv", "timestep") == [500.0 * k for k in range(1, 7)]
    logged = _csv_column(run_dir / "logs" / "progress.csv", "time/total_timesteps")
    # Continuous: never back in time (rows the killed process wrote after its checkpoint were dropped).
    assert logged == sorted(logged) and logged[-1] == total and len(logged) > 10
    episodes = _csv_column(run_dir / "logs" / "episodes.csv", "timestep")
    assert episodes == sorted(episodes) and len(episodes) >= total // 250 - 2 * n_envs

    from sb3_safe import CVPO

    state = json.loads((run_dir / "checkpoints" / "state.json").read_text())
    model = CVPO.load(run_dir / "checkpoints" / state["model"])
    model.load_replay_buffer(run_dir / "checkpoints" / state["replay_buffer"])
    # The replay buffer holds the steps from before the kill too (one transition per env may be lost at a stop).
    assert model.replay_buffer.size() >= total // n_envs - 2

    wandb_runs = find_offline_runs(run_dir / "wandb")
    assert len(wandb_runs) == 2 and len({path.name.rsplit("-", 1)[-1] for path in wandb_runs}) == 1  # one run id
    steps = [step for path in wandb_runs for step, _ in read_offline_run(path, wait=10).series("time/total_timesteps")]
    assert steps[-1] == max(steps) and max(steps) <= total


def test_ctrl_c_checkpoints_and_stops(tmp_path: Path) -> None:
    run_dir = tmp_path / "interrupted"
    process = cli_process(
        *["train", "--algo", "cvpo", "--env", ENV, "--n-timesteps", "50000", "--n-envs", "2"],
        *["--eval-freq", "0", "--checkpoint-freq", "0", "--run-dir", str(run_dir), *FAST],
    )
    deadline = time.monotonic() + 240
    while not (run_dir / "run.json").is_file() or "running" not in (run_dir / "run.json").read_text():
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.2)
    time.sleep(3)
    process.send_signal(signal.SIGINT)
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 130, output
    assert "sb3-safe resume" in output
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "interrupted" and info["interrupted_by"] == "SIGINT"
    state = json.loads((run_dir / "checkpoints" / "state.json").read_text())
    assert 0 < state["num_timesteps"] < 50000  # the stop wrote a checkpoint although --checkpoint-freq is 0


def test_eval_prints_the_table_and_writes_a_video(finished_run: Path, tmp_path: Path, capsys) -> None:
    video = tmp_path / "policy.gif"
    code = main(["eval", str(finished_run), "--episodes", "1", "--video", str(video), "--video-max-steps", "15"])
    out = capsys.readouterr().out
    assert code == 0
    assert "episodes over limit" in out and "cost rate" in out
    assert video.stat().st_size > 0


def test_eval_of_a_model_zip_inside_its_run(finished_run: Path, capsys) -> None:
    assert main(["eval", str(finished_run / "model.zip"), "--episodes", "1"]) == 0
    assert f"CVPO on {ENV}" in capsys.readouterr().out


def test_an_exported_policy_evaluates_like_its_run(finished_run: Path, tmp_path: Path, capsys) -> None:
    policy = tmp_path / "policy.safetensors"
    assert main(["export", str(finished_run), str(policy)]) == 0
    assert "sb3_safe.load_policy" in capsys.readouterr().out
    assert main(["eval", str(finished_run), "--episodes", "2"]) == 0
    from_run = capsys.readouterr().out.splitlines()[1:]
    assert main(["eval", str(policy), "--episodes", "2"]) == 0  # env, cost limit and seed come with the file
    from_file = capsys.readouterr().out.splitlines()[1:]
    assert from_file == from_run and any("episodes over limit" in line for line in from_file)
    assert main(["export", str(finished_run), str(tmp_path / "policy.zip")]) == 2
    assert "must end in .safetensors" in capsys.readouterr().err


def test_plot_writes_a_png(finished_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "curves.png"
    assert main(["plot", str(finished_run), "--out", str(out)]) == 0
    assert out.stat().st_size > 0


def test_benchmark_runs_two_trials_on_a_local_ray_instance(tmp_path: Path, capsys) -> None:
    out = tmp_path / "bench"
    code = main(
        [
            *["benchmark", "--algos", "ppo_lag", "--envs", ENV, "--seeds", "2", "--backend", "ray", "--out", str(out)],
            *["--n-timesteps", "1000", "--n-envs", "1", "--eval-freq", "0", "--eval-episodes", "1", "--no-wandb"],
            *["--hyperparams", "n_steps=500", "batch_size=100", "n_epochs=1", "--env-kwargs", "fast_reset=true"],
        ]
    )
    assert code == 0
    for seed in (0, 1):
        summary = json.loads((out / "runs" / "PPOLag" / ENV / f"seed{seed}" / "summary.json").read_text())
        assert summary["total_timesteps"] == 1000 and summary["seed"] == seed
    assert list((out / "ray").rglob("result.json"))  # the runs went through Ray Tune
    with open(out / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 1 and rows[0]["algo"] == "PPOLag" and int(rows[0]["seeds"]) == 2
    assert "PPOLag" in (out / "results.md").read_text()
    assert "PPOLag" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["train", "resume", "eval", "export", "plot", "benchmark", "list"])
def test_every_command_has_help(command: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert f"sb3-safe {command}" in capsys.readouterr().out


def test_console_script_and_module_entry_point() -> None:
    script = Path(sys.executable).with_name("sb3-safe")
    for command in ([str(script), "--version"], [sys.executable, "-m", "sb3_safe", "--version"]):
        result = subprocess.run(command, capture_output=True, text=True, check=True)
        assert result.stdout.startswith("sb3-safe ")


def _error_of(capsys, *argv: str) -> str:
    assert main(list(argv)) == 2
    return capsys.readouterr().err


def test_unknown_algorithm_and_env_list_the_valid_ones(capsys, tmp_path: Path) -> None:
    error = _error_of(capsys, "train", "--algo", "cvpp", "--env", ENV, "--run-dir", str(tmp_path / "a"))
    assert "Unknown algorithm 'cvpp'" in error and "Did you mean: CVPO" in error and "SACLag" in error
    error = _error_of(capsys, "train", "--algo", "cvpo", "--env", "SafetyPointGoal9-v0", "--run-dir", str(tmp_path))
    assert "Unknown environment 'SafetyPointGoal9-v0'" in error and "SafetyPointGoal1-v0" in error
    assert "safety_gymnasium" in error  # the plugin that provides the known ids
    assert not (tmp_path / "a").exists()


def test_unknown_hyperparameter_suggests_the_right_key(capsys, tmp_path: Path) -> None:
    error = _error_of(
        capsys,
        "train",
        "--algo",
        "cvpo",
        "--env",
        ENV,
        "--hyperparams",
        "learnign_rate=1e-3",
        "--run-dir",
        str(tmp_path),
    )
    assert "Unknown hyperparameter for CVPO" in error and "learnign_rate" in error and "learning_rate" in error
    error = _error_of(capsys, "train", "--algo", "cvpo", "--env", ENV, "--hyperparams", "seed=3")
    assert "--seed" in error


def test_malformed_yaml_names_file_and_line(capsys, tmp_path: Path) -> None:
    conf = tmp_path / "mine.yml"
    conf.write_text("batch_size: 64\npolicy_kwargs: {net_arch: [64, 64]\ngamma: 0.9\n")
    error = _error_of(capsys, "train", "--algo", "cvpo", "--env", ENV, "--conf-file", str(conf))
    assert str(conf) in error and "line 3" in error


def test_conf_file_and_overrides_resolve_in_order() -> None:
    from sb3_safe.experiment.config import build_config

    config = build_config("sac-lag", ENV, overrides=["batch_size=64", "learning_rate=3e-4"], n_envs=3, cost_limit=10)
    assert config.algo == "SACLag" and config.n_envs == 3 and config.cost_limit == 10.0
    assert config.hyperparams["batch_size"] == 64 and config.hyperparams["learning_rate"] == pytest.approx(3e-4)
    assert config.hyperparams["cost_limit"] == 10.0 and "n_envs" not in config.hyperparams
    cvpo = build_config("cvpo", ENV, overrides=["policy_kwargs={net_arch: [64, 64]}"])
    assert cvpo.hyperparams["policy_kwargs"]["net_arch"] == [64, 64]
    assert cvpo.hyperparams["policy_kwargs"]["covariance"] == "diag"  # merged into the YAML's policy_kwargs


def test_not_a_run_directory(capsys, tmp_path: Path) -> None:
    for command in ("resume", "eval", "plot"):
        error = _error_of(capsys, command, str(tmp_path))
        assert str(tmp_path) in error and "config.yaml" in error


def test_resume_refuses_changed_config_or_code_unless_forced(finished_run: Path, tmp_path: Path, capsys) -> None:
    import shutil

    run_dir = tmp_path / "copy"
    shutil.copytree(finished_run, run_dir)
    (run_dir / "summary.json").unlink()
    info = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps({**info, "status": "interrupted"}))
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    (run_dir / "config.yaml").write_text(yaml.safe_dump({**config, "code_version": "0.0.1+000000000000"}))
    error = _error_of(capsys, "resume", str(run_dir))
    assert "the code changed" in error and "--force" in error
    (run_dir / "config.yaml").write_text(yaml.safe_dump({**config, "eval_episodes": 7}))
    error = _error_of(capsys, "resume", str(run_dir))
    assert "config.yaml was edited" in error
    (run_dir / "config.yaml").write_text(yaml.safe_dump({**config, "code_version": "0.0.1+000000000000"}))
    with pytest.warns(UserWarning, match="the code changed.*Resuming anyway"):
        assert main(["resume", str(run_dir), "--force", "--no-progress-bar"]) == 0  # nothing left but to finish
    assert json.loads((run_dir / "summary.json").read_text())["total_timesteps"] == 2000


def test_train_refuses_an_existing_run_directory(finished_run: Path, capsys) -> None:
    error = _error_of(capsys, "train", "--algo", "cvpo", "--env", ENV, "--run-dir", str(finished_run), *FAST)
    assert "already holds a run" in error and "sb3-safe resume" in error


def test_unanswering_ray_address_fails_fast_and_writes_nothing(tmp_path: Path, capsys) -> None:
    out = tmp_path / "bench"
    start = time.monotonic()
    error = _error_of(
        capsys,
        *["benchmark", "--algos", "ppo_lag", "--envs", ENV, "--seeds", "1", "--backend", "ray"],
        *["--ray-address", "127.0.0.1:9", "--out", str(out)],
    )
    assert "No Ray cluster answers at 127.0.0.1:9" in error and "Nothing was written" in error
    assert not out.exists() and time.monotonic() - start < 30


def test_discrete_actions_for_cvpo_is_a_clear_error_and_writes_nothing(capsys, tmp_path: Path) -> None:
    run_dir = tmp_path / "discrete"
    error = _error_of(capsys, "train", "--algo", "cvpo", "--env", "FrozenLake10x10Safe-v0", "--run-dir", str(run_dir))
    assert "Cannot build CVPO for FrozenLake10x10Safe-v0" in error and "continuous" in error
    assert not run_dir.exists()


def test_cost_limit_for_a_linear_agent_is_refused(capsys) -> None:
    error = _error_of(capsys, "train", "--algo", "slucbqvi", "--env", "FrozenLake10x10Safe-v0", "--cost-limit", "1")
    assert "SLUCBQVI takes no cost limit" in error


def test_linear_mdp_agent_trains_through_thecli_process(tmp_path: Path) -> None:
    run_dir = tmp_path / "slucb"
    argv = ["train", "--algo", "slucb_qvi", "--env", "FrozenLake10x10Safe-v0", "--n-timesteps", "2000"]
    assert (
        main([*argv, "--eval-freq", "0", "--eval-episodes", "1", "--run-dir", str(run_dir), "--no-progress-bar"]) == 0
    )
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["algo"] == "SLUCBQVI" and summary["cost_limit"] is None  # tau comes from the environment
    assert summary["training"]["episodes"] == 2  # K = ceil(2000 / H) episodes of H = 1000
    from sb3_safe import SLUCBQVI

    assert int(SLUCBQVI.load(run_dir / "model.zip").policy.episodes) == 2


def test_local_benchmark_of_a_linear_agent(tmp_path: Path, capsys) -> None:
    out = tmp_path / "bench"
    argv = ["benchmark", "--algos", "lsvi_ucb", "--envs", "FrozenLake10x10Safe-v0", "--seeds", "2", "--out", str(out)]
    assert main([*argv, "--n-timesteps", "1000", "--eval-freq", "0", "--eval-episodes", "1", "--no-wandb"]) == 0
    with open(out / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["algo"], row["seeds"], row["cost_limit"]) for row in rows] == [("LSVIUCB", "2", "")]
    assert (out / "learning_curves.png").stat().st_size > 0
    assert "[2/2] LSVIUCB on FrozenLake10x10Safe-v0, seed 1" in capsys.readouterr().out
