"""Train, resume and evaluate runs: what ``sb3-safe train``, ``resume`` and ``eval`` do, as functions.

One run: a VecEnv of the configured environment, the algorithm built from the resolved configuration, an SB3
logger writing CSV, TensorBoard and (optionally) W&B into the run directory, periodic safe evaluation, atomic
checkpoints, and at the end the final model, an evaluation, ``summary.json`` and a learning-curve PNG.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import shutil
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
from sb3_safe.common.files import append_csv_row, atomic_path, remove_temporaries
from sb3_safe.experiment.checkpoints import (
    CheckpointError,
    NoCheckpointError,
    RunCheckpointCallback,
    StopRequest,
    adopt_checkpoint,
    find_checkpoints,
    load_checkpoint,
    read_checkpoint,
    remove_stale_files,
    write_checkpoint,
)
from sb3_safe.experiment.config import (
    ConfigError,
    RunConfig,
    check_hyperparameter_types,
    code_version,
    env_kwargs_error,
)
from sb3_safe.experiment.locks import DirectoryLock
from sb3_safe.experiment.rundir import (
    EVALUATION_FIELDS,
    RunDirectory,
    RunDirectoryError,
    truncate_csv,
)
from sb3_safe.registry import get_algorithm, make_env

FINAL_EPISODES = 10  # training episodes averaged for the "final" return and cost
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
LOCK_WHAT = "training run"  # for the lock's error message: "another process is running this training run"

OnStart = Callable[["RunDirectory", RunConfig, int], None]
"""Called once a run is validated and its directory is ready, just before training starts or continues: the run
directory, the configuration and the step training starts from (0 for a new run)."""


class DiskFullError(RuntimeError):
    """The disk filled up during a run; the run is marked failed in ``run.json`` and can be resumed later.

    Attributes:
        run: The run directory.
    """

    def __init__(self, message: str, run: RunDirectory) -> None:
        super().__init__(message)
        self.run = run


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` is an ``OSError`` for a full disk or an exhausted quota."""
    return isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS


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
    """The training VecEnv; an environment that refuses its ``env_kwargs`` is a :class:`ConfigError`."""
    from sb3_safe.common.env_util import make_vec_env

    try:
        return make_vec_env(config.env, n_envs=config.n_envs, seed=config.seed, env_kwargs=config.env_kwargs)
    except (TypeError, ValueError) as error:
        if not config.env_kwargs:
            raise
        raise env_kwargs_error(config.env, config.env_kwargs, error) from None


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
    if getattr(model, "learns_by_episodes", False):
        episodic: Any = model
        horizon = episodic.spec.horizon
        episodes_left = -(-config.n_timesteps // horizon) - int(episodic.policy.episodes)
        return max(episodes_left, 0) * horizon
    return max(config.n_timesteps - int(model.num_timesteps), 0)


def _log_interval(model: BaseAlgorithm) -> int:
    """Dump the logs after every episode (off-policy) or rollout (on-policy); linear agents every 10 episodes."""
    return 10 if getattr(model, "learns_by_episodes", False) else 1


def algorithm_class(name: str) -> type[BaseAlgorithm]:
    """The registered algorithm class ``name`` (an SB3 ``BaseAlgorithm`` subclass)."""
    return cast(type[BaseAlgorithm], get_algorithm(name))


def _build_model(config: RunConfig, env: VecEnv) -> BaseAlgorithm:
    """A new model; the constructor refusing the configuration or environment is a :class:`ConfigError`.

    ``env`` is closed if the model cannot be built.
    """
    cls = algorithm_class(config.algo)
    try:
        params = check_hyperparameter_types(config.algo, cls, config.hyperparams, "the run configuration")
    except ConfigError:
        env.close()
        raise
    try:
        return cls(env=env, seed=config.seed, verbose=0, **params)
    except (TypeError, ValueError, AssertionError) as error:  # SB3 asserts some settings (learning-rate schedules)
        env.close()
        message = " ".join(str(error).split()) or type(error).__name__
        raise ConfigError(f"Cannot build {config.algo} for {config.env}: {message}") from error
    except BaseException:
        env.close()
        raise


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
        run.update_run_info(drop=("error", "failed_at", "interrupted_by"), status="running")
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
        if remaining > 0 or not resuming:  # a resume with nothing left to do already has its final checkpoint
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


def train(
    config: RunConfig,
    run_dir: str | os.PathLike[str],
    *,
    progress_bar: bool = True,
    on_start: OnStart | None = None,
) -> RunOutcome:
    """Train a new run into ``run_dir`` (see :mod:`sb3_safe.experiment.rundir` for what it writes).

    Everything that can be checked is checked before the directory is written: the environment (and its
    ``env_kwargs``) and the model are built first. The run directory is locked while the run trains. SIGINT/SIGTERM
    stop it cleanly after a checkpoint (status ``"interrupted"``); ``resume`` continues it. A run that fails is
    marked ``"failed"`` in ``run.json`` (with the error) and can be resumed too.

    Args:
        config: The resolved configuration.
        run_dir: The run directory (created; it must not hold a run yet).
        progress_bar: Show SB3's progress bar.
        on_start: Called (run, config, 0) once the run directory is written, just before training starts.

    Raises:
        RunDirectoryError: If ``run_dir`` already holds a run.
        ConfigError: If the environment or the algorithm refuses the configuration (nothing is written).
        LockedError: If another process is training in ``run_dir``.
        DiskFullError: If the disk fills up (the run is marked failed; resume it once there is space).
    """
    run = RunDirectory(Path(run_dir))
    run.check_new()
    config = dataclasses.replace(config, sb3_safe_version=_package_version(), code_version=code_version())
    env = _make_vec_env(config)  # fails early (unknown env, bad env_kwargs, missing cost) before anything is written
    model = _build_model(config, env)
    existed = run.root.exists()
    lock = DirectoryLock(run.root, what=LOCK_WHAT)
    try:
        lock.acquire()
    except BaseException:
        env.close()
        raise
    try:
        try:
            run.check_new()  # again, under the lock: another process may have started a run here meanwhile
            run.create()
            _remove_temporaries(run)
            run.write_config(config)
        except BaseException as error:
            env.close()
            if not existed:
                shutil.rmtree(run.root, ignore_errors=True)
            if is_disk_full(error):
                raise DiskFullError(f"{_disk_full_reason(error, run)}; nothing was kept.", run) from error
            raise

        def body(seconds: Callable[[], float]) -> RunOutcome:
            wandb_run = _start_wandb(config, run, None, resume=False)
            held["wandb_run"] = wandb_run
            run.update_run_info(
                status="starting",
                wandb_run_id=getattr(wandb_run, "id", None),
                code_version=config.code_version,
                config_fingerprint=config.fingerprint(),
                created=time.strftime("%Y-%m-%dT%H:%M:%S"),
            )
            if on_start is not None:
                on_start(run, config, 0)
            return _learn(model, config, run, wandb_run, progress_bar, False, seconds)

        held: dict[str, Any] = {}
        return _session(run, body, lambda: _abandon(model, held.get("wandb_run")))
    finally:
        lock.release()


def _remove_temporaries(run: RunDirectory) -> None:
    """Delete what killed atomic writes left in the folders the runner writes (not videos/: ``eval``'s)."""
    for folder in (run.root, run.logs, run.plots):
        remove_temporaries(folder)
    if run.checkpoints.is_dir():
        remove_stale_files(run)


def _disk_full_reason(error: BaseException, run: RunDirectory) -> str:
    assert isinstance(error, OSError)
    where = f"writing {error.filename}" if error.filename else f"writing into {run.root}"
    return f"No space left on device ({errno.errorcode.get(error.errno or 0, error.errno)}) while {where}"


def _disk_full_message(error: BaseException, run: RunDirectory) -> str:
    try:
        kept = f"keeps its last complete checkpoint (step {read_checkpoint(run)['num_timesteps']})"
        then = f"continue it with `sb3-safe resume {run.root}`"
    except RunDirectoryError:
        kept, then = "has no checkpoint yet", f"`sb3-safe resume {run.root}` trains it again from step 0"
    return (
        f"{_disk_full_reason(error, run)}. The run is marked failed in {run.run_file} and {kept}: free some "
        f"space, then {then}."
    )


def _abandon(model: BaseAlgorithm, wandb_run: Any) -> None:
    """Release what a failed session holds: the logger's files, the W&B run, the environments."""
    with contextlib.suppress(Exception):
        model.logger.close()
    with contextlib.suppress(Exception):
        _finish_wandb(wandb_run, exit_code=1)
    with contextlib.suppress(Exception):
        if model.env is not None:
            model.env.close()


def _record_status(run: RunDirectory, **fields: Any) -> None:
    """Best effort: merge ``fields`` into ``run.json``, in place if the disk is too full for an atomic write."""
    try:
        run.update_run_info(**fields)
        return
    except (OSError, ValueError):
        pass
    with contextlib.suppress(OSError, ValueError):
        info = {**run.read_json(run.run_file), **fields}
        with open(run.run_file, "r+") as handle:
            handle.write(json.dumps(info, indent=2, sort_keys=True) + "\n")
            handle.truncate()


def _session(
    run: RunDirectory, body: Callable[[Callable[[], float]], RunOutcome], abandon: Callable[[], None]
) -> RunOutcome:
    """Run ``body(seconds)``, where ``seconds()`` is the run's training time so far (earlier sessions included).

    If it fails, ``abandon()`` releases what it held and ``run.json`` says so: ``"failed"`` with the error, or
    ``"interrupted"`` for a second Ctrl-C; a full disk becomes a :class:`DiskFullError`.
    """
    start = time.perf_counter()
    previous = float(run.read_json(run.run_file).get("train_seconds", 0.0))

    def seconds() -> float:
        return previous + time.perf_counter() - start

    try:
        outcome = body(seconds)
        run.update_run_info(train_seconds=seconds())
        return outcome
    except BaseException as error:
        abandon()
        when = time.strftime("%Y-%m-%dT%H:%M:%S")
        if isinstance(error, KeyboardInterrupt):  # a second Ctrl-C: stopped at once, from the last checkpoint on
            _record_status(run, status="interrupted", interrupted_by="KeyboardInterrupt", train_seconds=seconds())
            raise
        reason = f"{type(error).__name__}: {' '.join(str(error).split())}"
        _record_status(run, status="failed", error=reason, failed_at=when, train_seconds=seconds())
        if is_disk_full(error):
            raise DiskFullError(_disk_full_message(error, run), run) from error
        raise


def _package_version() -> str:
    import sb3_safe

    return sb3_safe.__version__


class ResumeRefusedError(RuntimeError):
    """A resume that would mix code or configuration versions; ``force=True`` overrides it."""


def resume(
    run_dir: str | os.PathLike[str],
    *,
    force: bool = False,
    progress_bar: bool = True,
    on_start: OnStart | None = None,
) -> RunOutcome:
    """Continue a run from its last checkpoint: model, replay buffer, duals, step counter, W&B run.

    The newest checkpoint is used, or the one before it if the newest is unreadable (with a
    :class:`~sb3_safe.experiment.checkpoints.CheckpointFallbackWarning`). Rows logged after that checkpoint (by the
    interrupted process) are dropped from the CSV logs, so the logs continue without gaps or repeats, and training
    runs until the configured ``n_timesteps``. A run stopped before its first checkpoint is trained again from step
    0, in the same directory, with the same configuration; its logs start over (and a new W&B run). The run
    directory is locked while the run trains.

    Args:
        run_dir: The run directory.
        force: Resume even if the code or ``config.yaml`` changed since the run started (with a warning).
        progress_bar: Show SB3's progress bar.
        on_start: Called (run, config, step) once the checkpoint is loaded, just before training continues.

    Raises:
        RunDirectoryError: If ``run_dir`` is not a run directory, has finished, or no checkpoint of it can be read
            (:class:`~sb3_safe.experiment.checkpoints.CheckpointError`, naming the files).
        ResumeRefusedError: If the code or ``config.yaml`` changed since the run started (unless ``force``).
        LockedError: If another process is training in ``run_dir``.
        DiskFullError: If the disk fills up (the run is marked failed).
    """
    run = RunDirectory.existing(run_dir)
    with DirectoryLock(run.root, what=LOCK_WHAT):
        return _resume_locked(run, force, progress_bar, on_start)


def _check_versions(run: RunDirectory, config: RunConfig, fingerprint: str | None, force: bool) -> None:
    problems = []
    if fingerprint not in (None, config.fingerprint()):
        problems.append(f"{run.config_file} was edited since the run started")
    current = code_version()
    if config.code_version and config.code_version != current:
        problems.append(f"the code changed (run written by {config.code_version}, this is {current})")
    if problems:
        message = "Resuming " + str(run.root) + ": " + "; ".join(problems) + "."
        if not force:
            raise ResumeRefusedError(message + " The result would mix versions; pass --force to resume anyway.")
        warnings.warn(message + " Resuming anyway (--force).", stacklevel=3)


def _resume_locked(run: RunDirectory, force: bool, progress_bar: bool, on_start: OnStart | None) -> RunOutcome:
    config = run.read_config()
    info = run.read_json(run.run_file)
    if info.get("status") == "finished" and run.summary_file.is_file():
        raise RunDirectoryError(f"{run.root} has already finished ({config.n_timesteps} steps): nothing to resume.")
    states, problems = find_checkpoints(run)
    if not states and problems:
        raise CheckpointError(
            f"No checkpoint of {run.root} can be read: " + "; ".join(problems) + ". To train the run again from "
            f"step 0, delete {run.state_file} and {run.previous_state_file}, then `sb3-safe resume {run.root}`."
        )
    fresh = not states
    fingerprint = states[0].get("config_fingerprint") if states else info.get("config_fingerprint")
    _check_versions(run, config, fingerprint, force)
    env = _make_vec_env(config)
    if fresh:
        model = _build_model(config, env)
        state: dict[str, Any] = {"num_timesteps": 0}
    else:
        try:
            cls = algorithm_class(config.algo)
            model, state = load_checkpoint(run, lambda path: cls.load(path, env=env))
        except BaseException:
            env.close()
            raise
    step = int(state["num_timesteps"])
    held: dict[str, Any] = {}

    def body(seconds: Callable[[], float]) -> RunOutcome:
        if fresh:
            _restart_logs(run, info.get("wandb_run_id"))
            wandb_run = _start_wandb(config, run, None, resume=False)
        else:
            adopt_checkpoint(run, state)
            _remove_temporaries(run)
            for path, column in (
                (run.progress_csv, "time/total_timesteps"),
                (run.episodes_csv, "timestep"),
                (run.evaluations_csv, "timestep"),
            ):
                truncate_csv(path, column, step)
            wandb_run = _start_wandb(config, run, state.get("wandb_run_id") or info.get("wandb_run_id"), resume=True)
        held["wandb_run"] = wandb_run
        run.update_run_info(
            resumed_from=step, resumes=int(info.get("resumes", 0)) + 1, wandb_run_id=getattr(wandb_run, "id", None)
        )
        if on_start is not None:
            on_start(run, config, step)
        return _learn(model, config, run, wandb_run, progress_bar, not fresh, seconds)

    if fresh:  # the killed attempt's training time does not count
        _record_status(run, train_seconds=0.0)
    return _session(run, body, lambda: _abandon(model, held.get("wandb_run")))


def _restart_logs(run: RunDirectory, old_wandb_id: str | None) -> None:
    """Clear what a run killed before its first checkpoint wrote, so that it starts over from step 0."""
    for path in (
        run.progress_csv,
        run.episodes_csv,
        run.evaluations_csv,
        run.summary_file,
        run.model_file,
        run.checkpoints / "best_model.zip",
        run.plots / "learning_curve.png",
    ):
        path.unlink(missing_ok=True)
    shutil.rmtree(run.tensorboard, ignore_errors=True)
    if old_wandb_id:
        for folder in (run.root / "wandb").glob(f"*-{old_wandb_id}"):
            shutil.rmtree(folder, ignore_errors=True)
    for folder in (run.checkpoints, run.logs, run.plots, run.videos):
        folder.mkdir(parents=True, exist_ok=True)
    _remove_temporaries(run)


def load_run_model(run: RunDirectory, config: RunConfig) -> BaseAlgorithm:
    """The run's final model, or its newest readable checkpoint if it has not finished (nothing is written).

    Raises:
        NoCheckpointError: If the run has neither.
        CheckpointError: If no checkpoint can be read.
    """
    cls = algorithm_class(config.algo)
    if run.model_file.is_file():
        return cls.load(run.model_file)
    return load_checkpoint(run, cls.load, replay_buffer=False)[0]


__all__ = [
    "DiskFullError",
    "NoCheckpointError",
    "OnStart",
    "ResumeRefusedError",
    "RunOutcome",
    "algorithm_class",
    "evaluate_policy_for",
    "is_disk_full",
    "load_run_model",
    "resume",
    "train",
    "write_checkpoint",
]
