"""The ``sb3-safe`` command: train, resume, evaluate, plot and benchmark safe RL agents.

Run ``sb3-safe --help`` or ``sb3-safe <command> --help``; ``python -m sb3_safe`` is the same command.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EXAMPLES = """\
examples:
  sb3-safe list
  sb3-safe train --algo cvpo --env SafetyPointGoal1-v0 --n-timesteps 200000 --seed 1
  sb3-safe train --algo sac_lag --env SafetyCarCircle1-v0 --hyperparams batch_size=512 learning_rate=1e-4
  sb3-safe resume runs/cvpo-SafetyPointGoal1-v0-s1
  sb3-safe eval runs/cvpo-SafetyPointGoal1-v0-s1 --episodes 10 --video runs/cvpo.mp4
  sb3-safe plot runs/bench/runs --out curves.png
  sb3-safe benchmark --algos cvpo ppo_lag --envs SafetyPointGoal1-v0 --seeds 3 --backend ray --out runs/bench
  sb3-safe benchmark --resume runs/bench
"""

# benchmark options that define the grid: with --resume they come from OUT/grid.json
GRID_OPTIONS = (
    "algos",
    "envs",
    "seeds",
    "out",
    "cost_limit",
    "n_timesteps",
    "n_envs",
    "hyperparams",
    "conf_file",
    "preset",
    "env_kwargs",
    "eval_freq",
    "eval_episodes",
    "checkpoint_freq",
    "wandb",
    "wandb_mode",
    "wandb_project",
)


def _key_values(pairs: Sequence[str], flag: str) -> dict[str, Any]:
    from sb3_safe.experiment.config import ConfigError, parse_override

    try:
        return dict(parse_override(pair) for pair in pairs)
    except ConfigError as error:
        raise ConfigError(str(error).replace("Hyperparameter override", f"{flag} item")) from None


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``train`` and ``benchmark``."""
    group = parser.add_argument_group("run settings")
    group.add_argument("--cost-limit", type=float, help="per-episode cost limit (default: the algorithm's YAML)")
    group.add_argument("--n-timesteps", type=int, help="training budget in environment steps (default: YAML, or 100k)")
    group.add_argument("--n-envs", type=int, help="parallel training environments (default: YAML, or 1)")
    group.add_argument(
        "--hyperparams",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="override hyperparameters; values are YAML (e.g. batch_size=512 'policy_kwargs={net_arch: [64, 64]}')",
    )
    group.add_argument(
        "--conf-file", type=Path, help="a YAML mapping of hyperparameters, applied before --hyperparams (merged)"
    )
    group.add_argument("--preset", help="a named preset of the packaged YAML (e.g. orig_circle for CVPO)")
    group.add_argument("--env-kwargs", nargs="+", default=[], metavar="KEY=VALUE", help="arguments for every env")
    group.add_argument("--eval-freq", type=int, default=10_000, help="evaluate every F env steps (0: only at the end)")
    group.add_argument("--eval-episodes", type=int, default=5, help="episodes per evaluation")
    group.add_argument("--checkpoint-freq", type=int, default=10_000, help="checkpoint every N env steps")
    wandb = parser.add_argument_group("Weights & Biases")
    wandb.add_argument(
        "--wandb",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="log to W&B; the run lives in RUN_DIR/wandb (default: on, offline unless you have an account set up)",
    )
    wandb.add_argument(
        "--wandb-mode", choices=("offline", "online"), help="W&B mode (default: offline unless you are logged in)"
    )
    wandb.add_argument("--wandb-project", default="sb3-safe", help="W&B project")


def _config_from_args(args: argparse.Namespace, algo: str, env: str, seed: int) -> Any:
    from sb3_safe.common.wandb_logger import resolve_wandb_mode
    from sb3_safe.experiment.config import build_config

    return build_config(
        algo,
        env,
        seed=seed,
        n_timesteps=args.n_timesteps,
        n_envs=args.n_envs,
        cost_limit=args.cost_limit,
        overrides=args.hyperparams,
        conf_file=args.conf_file,
        preset=args.preset,
        env_kwargs=_key_values(args.env_kwargs, "--env-kwargs"),
        eval_freq=args.eval_freq,
        eval_episodes=args.eval_episodes,
        checkpoint_freq=args.checkpoint_freq,
        wandb_mode=resolve_wandb_mode(args.wandb_mode) if args.wandb else "disabled",
        wandb_project=args.wandb_project,
    )


def _format_numbers(value: float | list[float]) -> str:
    return f"{value:.4g}" if isinstance(value, float | int) else "[" + ", ".join(f"{v:.4g}" for v in value) + "]"


def _print_outcome(outcome: Any) -> None:
    run = outcome.run
    if outcome.status == "interrupted":
        print(f"\nInterrupted after {outcome.num_timesteps} steps; checkpoint saved in {run.checkpoints}.")
        print(f"Continue with:  sb3-safe resume {run.root}")
        return
    summary = outcome.summary
    training = summary["training"]
    print(f"\n{summary['algo']} on {summary['env']} (seed {summary['seed']}): {summary['total_timesteps']} steps")
    print(
        f"training: {training['episodes']} episodes, cost rate {training['cost_rate']:.4f}, "
        f"last episodes' return {training['final_return']:.2f} and cost {training['final_cost']:.2f}"
    )
    if summary.get("duals"):
        print("duals: " + ", ".join(f"{key}={_format_numbers(value)}" for key, value in summary["duals"].items()))
    print(f"\nEvaluation ({outcome.evaluation.n_episodes} deterministic episodes):")
    print(outcome.evaluation.table(limit=summary["cost_limit"]))
    print(f"\nRun directory: {run.root}")
    plot = run.plots / "learning_curve.png"
    if plot.exists():
        print(f"  learning curve: {plot}")
    print(f"  final model:    {run.model_file}")
    print(f"  CSV logs:       {run.logs}  (TensorBoard: tensorboard --logdir {run.tensorboard})")
    offline = sorted((run.root / "wandb").glob("offline-run-*"))
    if offline:
        print(f"  W&B (offline):  {offline[-1]}\n                  upload with: wandb sync {offline[-1]}")


def _announce(run: Any, config: Any, step: int) -> None:
    """The banner of ``train`` and ``resume``, printed once the run is validated and its directory written."""
    what = "Training" if step == 0 else f"Resuming from step {step}:"
    print(
        f"{what} {config.algo} on {config.env} for {config.n_timesteps} steps ({config.n_envs} envs, seed "
        f"{config.seed}, cost limit {config.cost_limit}); run directory {run.root}",
        flush=True,
    )


def cmd_train(args: argparse.Namespace) -> int:
    from sb3_safe.experiment.runner import train

    config = _config_from_args(args, args.algo, args.env, args.seed)
    run_dir = args.run_dir or Path("runs") / f"{config.run_name()}-{time.strftime('%Y%m%d-%H%M%S')}"
    outcome = train(config, run_dir, progress_bar=args.progress_bar, on_start=_announce)
    _print_outcome(outcome)
    return 130 if outcome.status == "interrupted" else 0


def cmd_resume(args: argparse.Namespace) -> int:
    from sb3_safe.experiment.runner import resume

    outcome = resume(args.run_dir, force=args.force, progress_bar=args.progress_bar, on_start=_announce)
    _print_outcome(outcome)
    return 130 if outcome.status == "interrupted" else 0


def _model_and_config(args: argparse.Namespace) -> tuple[Any, Any]:
    """The model and run configuration for ``eval``: from a run directory, or a model zip (+ --env/--algo)."""
    from sb3_safe.experiment.config import ConfigError, RunConfig, resolve_algorithm_name
    from sb3_safe.experiment.rundir import RunDirectory
    from sb3_safe.experiment.runner import algorithm_class, load_run_model

    target = Path(args.target)
    if target.suffix == ".safetensors":
        from sb3_safe.export import load_policy, read_policy_description

        info = read_policy_description(target).get("info") or {}
        env = args.env or info.get("env")
        if env is None:
            raise ConfigError(f"{target} does not say which environment it acts in: pass --env.")
        cost_limit = args.cost_limit if args.cost_limit is not None else info.get("cost_limit")
        algo = info.get("algo") or read_policy_description(target).get("algorithm") or "policy"
        config = RunConfig(
            algo=algo, env=env, cost_limit=cost_limit, env_kwargs=info.get("env_kwargs") or {}, seed=info.get("seed", 0)
        )
        return load_policy(target), config
    if target.is_dir():
        run = RunDirectory.existing(target)
        config = run.read_config()
        return load_run_model(run, config), config
    if target.suffix != ".zip" or not target.is_file():
        raise ConfigError(f"{target} is neither a run directory, a model .zip nor a policy .safetensors file.")
    for parent in (target.parent, target.parent.parent):  # RUN/model.zip or RUN/checkpoints/step_N.zip
        if (parent / "config.yaml").is_file():
            config = RunDirectory(parent).read_config()
            break
    else:
        if not (args.env and args.algo):
            raise ConfigError(f"{target} is not inside a run directory: say what it is with --algo and --env.")
        config = RunConfig(algo=resolve_algorithm_name(args.algo), env=args.env, cost_limit=args.cost_limit)
    return algorithm_class(config.algo).load(target), config


def cmd_eval(args: argparse.Namespace) -> int:
    from sb3_safe.experiment.config import ConfigError
    from sb3_safe.experiment.runner import evaluate_policy_for

    if args.episodes < 1 or args.video_episodes < 1:
        raise ConfigError("--episodes and --video-episodes must be >= 1.")
    if args.video is not None:
        from sb3_safe.experiment.video import SUPPORTED_VIDEO_SUFFIXES

        if args.video.suffix not in SUPPORTED_VIDEO_SUFFIXES:
            raise ConfigError(f"--video {args.video}: use one of {', '.join(SUPPORTED_VIDEO_SUFFIXES)}.")
    model, config = _model_and_config(args)
    result = evaluate_policy_for(model, config, args.episodes, deterministic=not args.stochastic)
    kind = "stochastic" if args.stochastic else "deterministic"
    print(f"{config.algo} on {config.env}: {result.n_episodes} {kind} episodes")
    print(result.table(limit=config.cost_limit))
    if args.video is not None:
        from sb3_safe.experiment.video import record_video

        video = record_video(
            model,
            config.env,
            args.video,
            env_kwargs=config.env_kwargs,
            n_episodes=args.video_episodes,
            deterministic=not args.stochastic,
            max_steps=args.video_max_steps,
            seed=config.seed + 30_000,
        )
        print(f"\nVideo: {video.path} ({video.n_frames} frames at {video.fps:g} fps)")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Write a run's policy as a .safetensors file that loads without unpickling (see README "Security")."""
    from sb3_safe.experiment.config import ConfigError
    from sb3_safe.export import export_policy

    if args.out.suffix != ".safetensors":
        raise ConfigError(f"{args.out}: the policy file must end in .safetensors.")
    args.env = args.algo = args.cost_limit = None
    model, config = _model_and_config(args)
    info = {
        "algo": config.algo,
        "env": config.env,
        "cost_limit": config.cost_limit,
        "env_kwargs": config.env_kwargs,
        "seed": config.seed,
    }
    path = export_policy(model, args.out, info=info)
    print(f"Policy of {config.algo} on {config.env}: {path}")
    print(f"Load it with sb3_safe.load_policy({str(path)!r}), or evaluate it with `sb3-safe eval {path}`.")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from sb3_safe.experiment.config import ConfigError
    from sb3_safe.experiment.plots import MAX_BINS, plot_runs
    from sb3_safe.experiment.runs import find_runs, load_run

    if not 1 <= args.bins <= MAX_BINS:
        raise ConfigError(f"--bins must be between 1 and {MAX_BINS}, got {args.bins}.")
    records = [load_run(path) for path in find_runs(args.runs)]
    out = args.out or (records[0].path / "plots" / "learning_curves.png" if len(records) == 1 else None)
    out = out or Path("learning_curves.png")
    written = plot_runs(records, out, n_bins=args.bins, title=args.title)
    print(f"Learning curves of {len(records)} run(s): {written}")
    return 0


def _option_name(dest: str) -> str:
    return "--wandb/--no-wandb" if dest == "wandb" else "--" + dest.replace("_", "-")


def cmd_benchmark(args: argparse.Namespace) -> int:
    from sb3_safe.experiment.config import ConfigError
    from sb3_safe.experiment.results import format_results_table
    from sb3_safe.experiment.sweep import resume_benchmark, run_benchmark

    if args.resume is not None:
        given = [dest for dest in GRID_OPTIONS if dest in getattr(args, "explicit", set())]
        if given:
            raise ConfigError(
                f"--resume takes the grid from {args.resume / 'grid.json'}: drop "
                + ", ".join(_option_name(dest) for dest in given)
                + " (only --force, --backend, --ray-address and --cpus-per-trial go with --resume)."
            )
        result = resume_benchmark(
            args.resume,
            backend=args.backend,
            ray_address=args.ray_address,
            cpus_per_trial=args.cpus_per_trial,
            force=args.force,
        )
    else:
        if args.force:
            raise ConfigError("--force only applies to --resume OUT.")
        if not args.algos or not args.envs:
            raise ConfigError(
                "benchmark needs --algos and --envs (or --resume OUT to continue the grid of an earlier benchmark)."
            )
        if args.seeds < 1:
            raise ConfigError(f"--seeds must be >= 1, got {args.seeds}.")
        configs = [
            _config_from_args(args, algo, env, seed)
            for algo in args.algos
            for env in args.envs
            for seed in range(args.seeds)
        ]
        from sb3_safe.experiment.config import check_env_kwargs

        for env in dict.fromkeys(config.env for config in configs):  # before anything is written
            check_env_kwargs(env, next(config.env_kwargs for config in configs if config.env == env))
        print(
            f"Benchmark: {len(configs)} runs ({len(args.algos)} algorithms x {len(args.envs)} envs x {args.seeds} "
            "seeds)"
        )
        result = run_benchmark(
            configs,
            args.out,
            backend=args.backend or "local",
            ray_address=args.ray_address,
            cpus_per_trial=1.0 if args.cpus_per_trial is None else args.cpus_per_trial,
        )
    print("\n" + format_results_table(result.rows))
    print(f"\nResults: {result.results_csv}, {result.results_md}")
    if result.plot is not None:
        print(f"Plot:    {result.plot}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from sb3_safe.hyperparams import has_hyperparams
    from sb3_safe.registry import algorithm_providers, env_providers, plugin_failures

    print("Algorithms (--algo; case, '_' and '-' are ignored):")
    for name, plugin in algorithm_providers().items():
        defaults = "packaged YAML defaults" if has_hyperparams(name) else "constructor defaults"
        print(f"  {name:<18} from {plugin}, {defaults}")
    by_plugin: dict[str, list[str]] = {}
    for env_id, plugin in env_providers().items():
        by_plugin.setdefault(plugin, []).append(env_id)
    print("\nEnvironments (--env), by the plugin that provides them:")
    for plugin, ids in by_plugin.items():
        print(f"  {plugin} ({len(ids)}):")
        print("    " + "\n    ".join(ids))
    for provider, reason in plugin_failures().items():
        print(f"  plugin {provider} failed to load: {reason}")
    return 0


def build_parser(*, suppress_defaults: bool = False) -> argparse.ArgumentParser:
    """The argument parser of ``sb3-safe`` (all subcommands).

    Args:
        suppress_defaults: Leave options that are not given out of the parsed namespace (see
            :func:`explicit_options`).
    """
    parser = argparse.ArgumentParser(
        prog="sb3-safe",
        description="Safe reinforcement learning on Stable-Baselines3: train, resume, evaluate, plot, benchmark.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    train = commands.add_parser("train", help="train an agent into a run directory", description=cmd_train.__doc__)
    train.add_argument("--algo", required=True, help="algorithm (see `sb3-safe list`), e.g. cvpo, sac_lag, ppo_lag")
    train.add_argument("--env", required=True, help="environment id (see `sb3-safe list`), e.g. SafetyPointGoal1-v0")
    train.add_argument("--seed", type=int, default=0, help="random seed")
    train.add_argument("--run-dir", type=Path, help="output directory (default: runs/<algo>-<env>-s<seed>-<time>)")
    _add_run_options(train)
    train.add_argument("--progress-bar", action=argparse.BooleanOptionalAction, default=True)
    train.set_defaults(handler=cmd_train)
    train.description = (
        "Train an agent. Writes config, checkpoints, CSV/TensorBoard logs, the W&B run, the final model, an "
        "evaluation summary and a learning-curve PNG into the run directory. Ctrl-C stops after a checkpoint."
    )

    resume = commands.add_parser(
        "resume",
        help="continue an interrupted run from its last checkpoint",
        description="Continue an interrupted run: model, replay buffer, duals, step counter and W&B run, until the "
        "configured number of steps. Refuses if the code or config.yaml changed since the run started.",
    )
    resume.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    resume.add_argument("--force", action="store_true", help="resume even if the code or config.yaml changed")
    resume.add_argument("--progress-bar", action=argparse.BooleanOptionalAction, default=True)
    resume.set_defaults(handler=cmd_resume)

    evaluate = commands.add_parser(
        "eval",
        help="evaluate a trained agent (and record a video)",
        description="Evaluate the final model of a run (or its last checkpoint), a model .zip or an exported policy "
        "(.safetensors), and print return, "
        "cost, cost rate and episodes over the limit. --video records MP4 or GIF headlessly (MuJoCo offscreen).",
    )
    evaluate.add_argument("target", metavar="RUN_DIR|MODEL.zip|POLICY.safetensors")
    evaluate.add_argument("--episodes", type=int, default=10, help="evaluation episodes")
    evaluate.add_argument("--stochastic", action="store_true", help="sample actions instead of the mean action")
    evaluate.add_argument("--video", type=Path, help="write a video of the policy (.mp4 or .gif)")
    evaluate.add_argument("--video-episodes", type=int, default=1, help="episodes in the video")
    evaluate.add_argument("--video-max-steps", type=int, help="cap on the video's frames")
    evaluate.add_argument("--algo", help="algorithm of a model .zip outside a run directory")
    evaluate.add_argument("--env", help="environment of a model .zip outside a run directory")
    evaluate.add_argument("--cost-limit", type=float, help="cost limit for a model .zip outside a run directory")
    evaluate.set_defaults(handler=cmd_eval)

    export = commands.add_parser(
        "export",
        help="write a run's policy as a .safetensors file that loads without running code",
        description=cmd_export.__doc__,
    )
    export.add_argument("target", metavar="RUN_DIR|MODEL.zip", help="a run directory, or a model .zip inside one")
    export.add_argument("out", type=Path, metavar="POLICY.safetensors")
    export.set_defaults(handler=cmd_export)

    plot = commands.add_parser(
        "plot",
        help="plot learning curves of runs",
        description="Plot episode return and cost (with the cost limit) against environment steps: one row per "
        "environment, one line per algorithm, mean and standard deviation over seeds. Folders are searched for runs. "
        "If no run has finished a training episode yet, the periodic evaluations are plotted instead.",
    )
    plot.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    plot.add_argument("--out", type=Path, help="PNG to write (default: RUN/plots/ for one run, else ./)")
    plot.add_argument("--bins", type=int, default=20, help="step bins for averaging over seeds (1 to 1000)")
    plot.add_argument("--title", help="figure title")
    plot.set_defaults(handler=cmd_plot)

    bench = commands.add_parser(
        "benchmark",
        help="run algorithms x envs x seeds, locally or on Ray Tune; --resume finishes an interrupted grid",
        description="Run a grid of algorithms x environments x seeds into OUT/runs/<algo>/<env>/seed<k>, then write "
        "OUT/results.csv, OUT/results.md and OUT/learning_curves.png. The grid is recorded in OUT/grid.json before "
        "any run starts. --backend ray runs the grid as Ray Tune trials on a local Ray instance, or on an existing "
        "cluster with --ray-address. An interrupted or killed benchmark is finished with --resume OUT: finished "
        "runs are kept, runs with a checkpoint are resumed, the others trained (again), and the results cover the "
        "whole grid. It refuses if the code or a configuration changed since the grid started (unless --force), "
        "and while another process works on OUT.",
    )
    bench.add_argument("--algos", nargs="+", help="algorithms (see `sb3-safe list`); required without --resume")
    bench.add_argument("--envs", nargs="+", help="environment ids; required without --resume")
    bench.add_argument("--seeds", type=int, default=3, help="number of seeds (0 .. N-1)")
    bench.add_argument("--out", type=Path, default=Path("runs/benchmark"), help="output folder")
    bench.add_argument(
        "--resume",
        type=Path,
        metavar="OUT",
        help="finish the grid of an earlier benchmark into OUT (its --out), as recorded in OUT/grid.json",
    )
    bench.add_argument(
        "--force", action="store_true", help="with --resume: resume even if the code or a configuration changed"
    )
    bench.add_argument(
        "--backend", choices=("local", "ray"), help="where the runs execute (default: local; with --resume: the grid's)"
    )
    bench.add_argument("--ray-address", help="an existing Ray cluster (host:port); default: a local instance")
    bench.add_argument(
        "--cpus-per-trial", type=float, help="CPUs Ray reserves per run (default: 1; with --resume: the grid's)"
    )
    _add_run_options(bench)
    bench.set_defaults(handler=cmd_benchmark)

    listing = commands.add_parser("list", help="list algorithms and environments, with the plugin providing each")
    listing.set_defaults(handler=cmd_list)
    if suppress_defaults:
        for subparser in commands.choices.values():
            for action in subparser._actions:
                action.default = argparse.SUPPRESS
    return parser


def explicit_options(argv: Sequence[str] | None) -> set[str]:
    """The destinations of the options given on the command line ``argv`` (as opposed to left at their defaults).

    ``--seeds 3`` counts as given although 3 is the default; abbreviations (``--see 3``) are resolved as argparse
    does.
    """
    namespace = build_parser(suppress_defaults=True).parse_args(argv)
    return set(vars(namespace)) - {"command", "handler"}


def _version() -> str:
    from sb3_safe import __version__

    return __version__


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors that are the user's to fix: printed as one message, without a traceback."""
    from sb3_safe.common.costs import MissingCostError
    from sb3_safe.experiment.config import ConfigError
    from sb3_safe.experiment.locks import LockedError
    from sb3_safe.experiment.rundir import RunDirectoryError
    from sb3_safe.experiment.runner import ResumeRefusedError
    from sb3_safe.experiment.runs import NotARunDirectoryError
    from sb3_safe.experiment.sweep import RayUnavailableError
    from sb3_safe.hyperparams import HyperparameterFileError
    from sb3_safe.registry import UnknownAlgorithmError, UnknownEnvironmentError

    return (
        ConfigError,
        HyperparameterFileError,
        LockedError,
        MissingCostError,
        NotARunDirectoryError,
        RayUnavailableError,
        ResumeRefusedError,
        RunDirectoryError,
        UnknownAlgorithmError,
        UnknownEnvironmentError,
    )


def _one_line_warnings(command: str) -> Any:
    """A ``warnings.formatwarning`` that prints sb3-safe's own warnings as one line, ``sb3-safe CMD: warning: ...``."""
    import warnings

    package = str(Path(__file__).parent)
    default = warnings.formatwarning

    def formatwarning(
        message: Warning | str, category: type[Warning], filename: str, lineno: int, line: str | None = None
    ) -> str:
        if filename.startswith(package):
            return f"sb3-safe {command}: warning: {' '.join(str(message).split())}\n"
        return default(message, category, filename, lineno, line)

    return formatwarning


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sb3-safe`` console script; returns the exit code.

    Exit codes: 0 done, 2 a usage or configuration error (one line on stderr, no traceback), 1 a full disk (one
    line; the run is marked failed and can be resumed), 130 interrupted (Ctrl-C).
    """
    import errno
    import warnings

    os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering; must precede the first `import mujoco`
    os.environ.setdefault("WANDB_SILENT", "true")  # the summary below says where the W&B run is
    args = build_parser().parse_args(argv)
    args.explicit = explicit_options(argv)
    import torch

    from sb3_safe.experiment.runner import DiskFullError

    torch.set_num_threads(int(os.environ.get("SB3_SAFE_TORCH_THREADS", "1")))  # small MLPs: one thread is fastest
    previous_format = warnings.formatwarning
    warnings.formatwarning = _one_line_warnings(args.command)
    try:
        return int(args.handler(args))
    except _user_errors() as error:
        print(f"sb3-safe {args.command}: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    except DiskFullError as error:
        print(f"sb3-safe {args.command}: error: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = f" while writing {error.filename}" if error.filename else ""
        print(f"sb3-safe {args.command}: error: no space left on device{where}; free some space.", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\nsb3-safe {args.command}: interrupted.", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = previous_format


if __name__ == "__main__":
    sys.exit(main())
