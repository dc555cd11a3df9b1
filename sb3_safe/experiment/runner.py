"""Train, resume and evaluate runs: what ``sb3-safe train``, ``resume`` and ``eval`` do, as functions.

One run: a VecEnv of the configured environment, the algorithm built from the resolved configuration, an SB3
logger writing CSV, TensorBoard and (optionally) W&B into the run directory, periodic safe evaluation, atomic
checkpoints, and at the end the final model, an evaluation, ``summary.json`` and a learning-curve PNG.
"""

from __future__ import annotations

import dataclasses
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.logger import CSVOutputFormat, KVWriter, Logger, TensorBoardOutputFormat
from stable_baselines3.common.vec_env import VecEnv

from sb3_safe.common.callbacks import EpisodeHistoryCallback, SafeEvalCallback
from sb3_safe.common.evaluation import SafeEvaluationResult, evaluate_safe_policy
from sb3_safe.common.files import append_csv_row, atomic_path
from sb3_safe.experiment.checkpoints import (
    RunCheckpointCallback,
    StopRequest,
    checkpoint_paths,
    read_checkpoint,
    write_checkpoint,
)
from sb3_safe.experiment.config import ConfigError, RunConfig, code_version
from sb3_safe.experiment.rundir import (
    EVALUATION_FIELDS,
    RunDirectory,
    RunDirectoryError,
    truncate_csv,
)
from sb3_safe.registry import get_algorithm, make_env

FINAL_EPISODES = 10  # training episodes averaged for the "final" return and cost


@dataclasses.dataclass
class RunOutcome:
    """What a call to :func:`train` or :func:`resume` ended with.

    Attributes:
        run: The run directory.
        status: ``"finished"`` or ``"interrupted"`` (a signal stopped it after a checkpoint).
        num_timesteps: Environment steps done so far.
        summary: ``summary.json``'s content (finished runs only).
        evaluation: The final evaluation (finished runs only).
    """

    run: RunDirectory
    status: str
    num_timesteps: int
    summary: dict[str, Any] | None = None
    evaluation: SafeEvaluationResult | None = None


class ResumableCSVOutputFormat(CSVOutputFormat):
    """SB3's CSV format, continuing an existing file (keeping its columns) instead of overwriting it."""

    def __init__(self, filename: str | os.PathLike[str]) -> None:
        path = Path(filename)
        if not path.is_file() or path.stat().st_size == 0:
            super().__init__(str(path))
            return
        self.file = open(path, "r+")  # noqa: SIM115 (closed by close(), as in SB3)
        header = self.file.readline().rstrip("\n")
        self.keys = header.split(",") if header else []
        self.separator, self.quotechar = ",", '"'
        self.file.seek(0, os.SEEK_END)


class EvaluationLogCallback(BaseCallback):
    """Called by :class:`SafeEvalCallback` after each evaluation: appends it to ``logs/evaluations.csv``."""

    def __init__(self, path: Path, cost_limit: float | None) -> None:
        super().__init__()
        self.path, self.cost_limit = path, cost_limit

    def _on_step(self) -> bool:
        assert isinstance(self.parent, SafeEvalCallback) and self.parent.last_result is not None
        row = {"timestep": self.num_timesteps, **self.parent.last_result.as_dict(self.cost_limit)}
        append_csv_row(self.path, EVALUATION_FIELDS, row)
        return True


def _make_vec_env(config: RunConfig) -> VecEnv:
    from sb3_safe.common.env_util import make_vec_env

    return make_vec_env(config.env, n_envs=config.n_envs, seed=config.seed, env_kwargs=config.env_kwargs)


def _build_logger(run: RunDirectory, wandb_run: Any) -> Logger:
    formats: list[KVWriter] = [
        ResumableCSVOutputFormat(run.progress_csv),
        TensorBoardOutputFormat(str(run.tensorboard)),
    ]
    if wandb_run is not None:
        from sb3_safe.common.wandb_logger import WandbOutputFormat

        formats.append(WandbOutputFormat(wandb_run, finish_on_close=False))
    return Logger(str(run.logs), formats)


def _start_wandb(config: RunConfig, run: RunDirectory, run_id: str | None, resume: bool) -> Any:
    if config.wandb_mode == "disabled":
        return None
    from sb3_safe.common.wandb_logger import init_wandb_run

    return init_wandb_run(
        config.wandb_project,
        name=config.run_name(),
        config=config.to_dict(),
        mode=config.wandb_mode,
        dir=run.root,
        run_id=run_id,
        resume="allow" if resume else None,
        console="off",
    )


def _callbacks(
    config: RunConfig, run: RunDirectory, stop: StopRequest, extra: dict[str, Any], start_step: int
) -> tuple[CallbackList, RunCheckpointCallback]:
    checkpoint = RunCheckpointCallback(run, config.checkpoint_freq, stop, extra)
    callbacks: list[BaseCallback] = [EpisodeHistoryCallback(csv_path=run.episodes_csv), checkpoint]
    if config.eval_freq > 0:
        eval_env = make_env(config.env, **config.env_kwargs)
        eval_env.reset(seed=config.seed + 10_000)
        evaluation = SafeEvalCallback(
            eval_env,
            cost_limit=config.cost_limit,
            n_eval_episodes=config.eval_episodes,
            eval_freq=max(config.eval_freq // config.n_envs, 1),
            best_model_save_path=str(run.checkpoints),
            callback_after_eval=EvaluationLogCallback(run.evaluations_csv, config.cost_limit),
            verbose=0,
        )
        evaluation.n_calls = start_step // config.n_envs  # a resumed run evaluates at the same steps
        callbacks.insert(0, evaluation)
    return CallbackList(callbacks), checkpoint


def _remaining_timesteps(model: BaseAlgorithm, config: RunConfig) -> int:
    """Steps still to run; linear-MDP agents count whole episodes (K = ceil(n_timesteps / H) in all)."""
    from sb3_safe.linear.adapter import LinearQVIAlgorithm

    if isinstance(model, LinearQVIAlgorithm):
        horizon = model.spec.horizon
        episodes_left = -(-config.n_timesteps // horizon) - int(model.policy.episodes)
        return max(episodes_left, 0) * horizon
    return max(config.n_timesteps - int(model.num_timesteps), 0)


def _log_interval(model: BaseAlgorithm) -> int:
    """Dump the logs after every episode (off-policy) or rollout (on-policy); linear agents every 10 episodes."""
    from sb3_safe.linear.adapter import LinearQVIAlgorithm

    return 10 if isinstance(model, LinearQVIAlgorithm) else 1


def algorithm_class(name: str) -> type[BaseAlgorithm]:
    """The registered algorithm class ``name`` (an SB3 ``BaseAlgorithm`` subclass)."""
    return cast(type[BaseAlgorithm], get_algorithm(name))


def _build_model(config: RunConfig, env: VecEnv) -> BaseAlgorithm:
    return algorithm_class(config.algo)(env=env, seed=config.seed, verbose=0, **config.hyperparams)


def _learn(
    model: BaseAlgorithm,
    config: RunConfig,
    run: RunDirectory,
    wandb_run: Any,
    progress_bar: bool,
    resuming: bool,
    seconds: Callable[[], float],
) -> RunOutcome:
    extra = {"wandb_run_id": getattr(wandb_run, "id", None), "config_fingerprint": config.fingerprint()}
    model.set_logger(_build_logger(run, wandb_run))
    remaining = _remaining_timesteps(model, config)
    with StopRequest() as stop:
        callback, checkpointer = _callbacks(config, run, stop, extra, int(model.num_timesteps))
        run.update_run_info(status="running")
        if remaining > 0:
            model.learn(
                remaining,
                callback=callback,
                log_interval=_log_interval(model),
                reset_num_timesteps=not resuming,
                progress_bar=progress_bar,
            )
        if checkpointer.stopped:
            run.update_run_info(status="interrupted", interrupted_by=stop.signal_name)
            model.logger.close()
            _finish_wandb(wandb_run, exit_code=1)
            return RunOutcome(run, "interrupted", checkpointer.last_checkpoint_step)
        write_checkpoint(model, run, extra)
    return _finish(model, config, run, wandb_run, seconds)


def _finish_wandb(wandb_run: Any, exit_code: int = 0) -> None:
    if wandb_run is not None:
        from sb3_safe.common.wandb_logger import finish_wandb

        finish_wandb(wandb_run, exit_code=exit_code)


def _finish(
    model: BaseAlgorithm, config: RunConfig, run: RunDirectory, wandb_run: Any, seconds: Callable[[], float]
) -> RunOutcome:
    with atomic_path(run.model_file) as temp:
        model.save(temp)
    evaluation = evaluate_policy_for(model, config)
    episodes = _read_episodes(run.episodes_csv)
    last = episodes[-FINAL_EPISODES:]
    summary = {
        "algo": config.algo,
        "env": config.env,
        "seed": config.seed,
        "cost_limit": config.cost_limit,
        "total_timesteps": int(model.num_timesteps),
        "train_seconds": round(seconds(), 3),
        "training": {
            "cost_rate": float(getattr(model, "cost_rate", float("nan"))),
            "episodes": len(episodes),
            "final_return": float(np.mean([row["return"] for row in last])) if last else float("nan"),
            "final_cost": float(np.mean([row["cost"] for row in last])) if last else float("nan"),
        },
        "evaluation": evaluation.as_dict(config.cost_limit),
        # a float per dual, or a list with one value per constraint (multi-constraint multipliers)
        "duals": {key: np.asarray(value, dtype=float).squeeze().tolist() for key, value in _duals(model).items()},
    }
    run.write_json(run.summary_file, summary)
    if episodes:
        from sb3_safe.common.plotting import plot_learning_curves

        plot_learning_curves(
            episodes,
            run.plots / "learning_curve.png",
            cost_limit=config.cost_limit,
            title=f"{config.algo} on {config.env} (seed {config.seed})",
            smoothing=min(10, len(episodes)),
        )
    if wandb_run is not None:
        wandb_run.summary.update(
            {f"final/{key}": value for key, value in evaluation.as_dict(config.cost_limit).items()}
        )
    model.logger.close()
    _finish_wandb(wandb_run)
    run.update_run_info(status="finished")
    return RunOutcome(run, "finished", int(model.num_timesteps), summary, evaluation)


def _duals(model: BaseAlgorithm) -> dict[str, Any]:
    return dict(getattr(model, "duals", {}))


def _read_episodes(path: Path) -> list[dict[str, float]]:
    from sb3_safe.experiment.runs import read_csv_rows

    return read_csv_rows(path) if path.is_file() else []


def evaluate_policy_for(
    model: BaseAlgorithm, config: RunConfig, n_episodes: int | None = None, deterministic: bool = True
) -> SafeEvaluationResult:
    """Evaluate ``model`` on a fresh environment of the run's configuration."""
    env = make_env(config.env, **config.env_kwargs)
    env.reset(seed=config.seed + 20_000)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*deterministic.*")  # RSLUCB-QVI's plans are randomised
        return evaluate_safe_policy(
            model, env, n_eval_episodes=n_episodes or config.eval_episodes, deterministic=deterministic
        )


def train(config: RunConfig, run_dir: str | os.PathLike[str], *, progress_bar: bool = True) -> RunOutcome:
    """Train a new run into ``run_dir`` (see :mod:`sb3_safe.experiment.rundir` for what it writes).

    SIGINT/SIGTERM stop it cleanly after a checkpoint (status ``"interrupted"``); ``resume`` continues it.

    Raises:
        RunDirectoryError: If ``run_dir`` already holds a run.
    """
    run = RunDirectory(Path(run_dir))
    run.check_new()
    env = _make_vec_env(config)  # fails early (unknown env, missing cost) before anything is written
    config = dataclasses.replace(config, sb3_safe_version=_package_version(), code_version=code_version())
    try:
        model = _build_model(config, env)
    except (TypeError, ValueError) as error:  # the algorithm refused this configuration or environment
        env.close()
        raise ConfigError(f"Cannot build {config.algo} for {config.env}: {error}") from error
    except Exception:
        env.close()
        raise
    run.create()
    run.write_config(config)
    wandb_run = _start_wandb(config, run, None, resume=False)
    run.update_run_info(
        status="starting",
        wandb_run_id=getattr(wandb_run, "id", None),
        code_version=config.code_version,
        config_fingerprint=config.fingerprint(),
        created=time.strftime("%Y-%m-%dT%H:%M:%S"),
    )
    return _timed(run, lambda seconds: _learn(model, config, run, wandb_run, progress_bar, False, seconds))


def _timed(run: RunDirectory, body: Callable[[Callable[[], float]], RunOutcome]) -> RunOutcome:
    """Run ``body(seconds)``, where ``seconds()`` is the run's training time so far (earlier sessions included)."""
    start = time.perf_counter()
    previous = float(run.read_json(run.run_file).get("train_seconds", 0.0))

    def seconds() -> float:
        return previous + time.perf_counter() - start

    try:
        return body(seconds)
    finally:
        run.update_run_info(train_seconds=seconds())


def _package_version() -> str:
    import sb3_safe

    return sb3_safe.__version__


class ResumeRefusedError(RuntimeError):
    """A resume that would mix code or configuration versions; ``force=True`` overrides it."""


def resume(run_dir: str | os.PathLike[str], *, force: bool = False, progress_bar: bool = True) -> RunOutcome:
    """Continue an interrupted run from its last checkpoint: model, replay buffer, duals, step counter, W&B run.

    Rows logged after that checkpoint (by the interrupted process) are dropped from the CSV logs, so the logs
    continue without gaps or repeats, and training runs until the configured ``n_timesteps``.

    Raises:
        RunDirectoryError: If ``run_dir`` is not a run directory or has no checkpoint.
        ResumeRefusedError: If the code or ``config.yaml`` changed since the run started (unless ``force``).
    """
    run = RunDirectory.existing(run_dir)
    config = run.read_config()
    info = run.read_json(run.run_file)
    if info.get("status") == "finished" and run.summary_file.is_file():
        raise RunDirectoryError(f"{run.root} has already finished ({config.n_timesteps} steps): nothing to resume.")
    state = read_checkpoint(run)
    problems = []
    if state.get("config_fingerprint") not in (None, config.fingerprint()):
        problems.append(f"{run.config_file} was edited since the run started")
    current = code_version()
    if config.code_version and config.code_version != current:
        problems.append(f"the code changed (run written by {config.code_version}, this is {current})")
    if problems:
        message = "Resuming " + str(run.root) + ": " + "; ".join(problems) + "."
        if not force:
            raise ResumeRefusedError(message + " The result would mix versions; pass --force to resume anyway.")
        warnings.warn(message + " Resuming anyway (--force).", stacklevel=2)
    step = int(state["num_timesteps"])
    for path, column in (
        (run.progress_csv, "time/total_timesteps"),
        (run.episodes_csv, "timestep"),
        (run.evaluations_csv, "timestep"),
    ):
        truncate_csv(path, column, step)
    env = _make_vec_env(config)
    model_path, buffer_path = checkpoint_paths(run, state)
    model = algorithm_class(config.algo).load(model_path, env=env)
    if buffer_path is not None and hasattr(model, "load_replay_buffer"):
        model.load_replay_buffer(buffer_path)
    wandb_run = _start_wandb(config, run, state.get("wandb_run_id") or info.get("wandb_run_id"), resume=True)
    run.update_run_info(resumed_from=step, resumes=int(info.get("resumes", 0)) + 1)
    return _timed(run, lambda seconds: _learn(model, config, run, wandb_run, progress_bar, True, seconds))


def load_run_model(run: RunDirectory, config: RunConfig) -> BaseAlgorithm:
    """The run's final model, or its last checkpoint if it has not finished."""
    path = run.model_file if run.model_file.is_file() else checkpoint_paths(run, read_checkpoint(run))[0]
    return algorithm_class(config.algo).load(path)


__all__ = [
    "ResumeRefusedError",
    "RunOutcome",
    "algorithm_class",
    "evaluate_policy_for",
    "load_run_model",
    "resume",
    "train",
    "write_checkpoint",
]
