"""Report of the Circle benchmark grid at 200k steps: CVPO against the Lagrangian baselines.

Reads every exported run under ``RUNS/<algo>/<env>/seed<k>/`` (``config.yaml``, ``episodes.csv``,
``evaluations.csv``, ``diagnostics.csv``, ``run.json``), computes the metrics of
:mod:`sb3_safe.experiment.learning_metrics`, and writes ``OUT/results.md`` (one table per task), one
``curves_<env>.png`` and one ``diagnostics_<env>.png`` per task. Works on a partial grid: missing or unfinished
grid points are listed in the header.

    python benchmarks/circle_200k_report.py --runs docs/benchmarks/circle_200k/runs --out docs/benchmarks/circle_200k
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sb3_safe.common.plotting import binned_curves, plot_seed_curves
from sb3_safe.experiment import learning_metrics as lm
from sb3_safe.experiment.runs import NotARunDirectoryError, RunRecord, find_runs, read_csv_rows
from sb3_safe.hyperparams import parse_yaml

ALGOS = ("CVPO", "SACLag", "TD3Lag", "PPOLag")  # run folders are named by the registered algorithm
ENVS = ("SafetyBallCircle-v0", "SafetyCarCircle-v0", "SafetyPointCircle1-v0")
SEEDS = (0, 1, 2)
MISSING = "–"
REFERENCES = """\
## Reference values (measured at other budgets, not comparable one to one)

| source | task | algorithm | budget | cost limit | return | cost |
|---|---|---|---|---|---|---|
| FSRL (published) | SafetyBallCircle-v0 | CVPO | 0.8M steps | 10 | ≈690 | ≈9 |
| FSRL (published) | SafetyCarCircle-v0 | CVPO | 1.5M steps | 10 | ≈430 | 5-8 |
| OmniSafe (published) | SafetyPointCircle1-v0 | SAC-Lag | 3M steps | 25 | 83.7 | 12.8 |
| OmniSafe (published) | SafetyPointCircle1-v0 | TD3-Lag | 3M steps | 25 | 83.1 | 7.8 |
"""


Rows = list[dict[str, float]]


def load_exported_run(folder: Path) -> tuple[RunRecord, Rows]:
    """One exported run and its diagnostics rows; ``summary`` is ``run.json`` (``None`` unless it finished)."""
    config = parse_yaml((folder / "config.yaml").read_text(), str(folder / "config.yaml"))
    if not isinstance(config, dict):
        raise ValueError(f"{folder / 'config.yaml'} is not a run configuration (expected a mapping).")

    def rows(name: str) -> Rows:
        return read_csv_rows(folder / name) if (folder / name).is_file() else []

    info = json.loads((folder / "run.json").read_text()) if (folder / "run.json").is_file() else {}
    summary = info if info.get("status") == "finished" else None
    record = RunRecord(folder, config, rows("episodes.csv"), rows("evaluations.csv"), summary)
    return record, rows("diagnostics.csv")


def load_grid(runs_root: Path) -> tuple[dict[tuple[str, str, int], tuple[RunRecord, Rows]], list[str]]:
    """Finished runs keyed by ``(env, algo, seed)`` from the folder layout, and the folders not finished."""
    finished, unfinished = {}, []
    try:
        folders = find_runs([runs_root])
    except NotARunDirectoryError:  # nothing exported yet
        folders = []
    for folder in folders:
        parts = folder.relative_to(runs_root.resolve()).parts
        match = re.fullmatch(r"seed(\d+)", parts[-1]) if len(parts) == 3 else None
        if match is None:
            raise ValueError(f"{folder} is not laid out as <algo>/<env>/seed<k> under {runs_root}.")
        record, diagnostics = load_exported_run(folder)
        if record.finished:
            finished[(parts[1], parts[0], int(match.group(1)))] = (record, diagnostics)
        else:
            unfinished.append("/".join(parts))
    return finished, unfinished


def _pm(pair: tuple[float, float], digits: int = 1) -> str:
    mean, std = pair
    return MISSING if not math.isfinite(mean) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _num(value: float, fmt: str, unit: str = "") -> str:
    return MISSING if not math.isfinite(value) else format(value, fmt) + unit


def task_table(task: lm.TaskMetrics) -> str:
    """The Markdown table of one task: one row per algorithm."""
    header = [
        "algorithm",
        "final return",
        "final cost",
        "cost rate",
        "eval. episodes over limit",
        "cum. cost above limit",
        "steps to target within limit",
        "seeds",
        "train time / run",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for algo, metrics in task.algos.items():
        steps_mean = metrics.steps_to_target[0]
        steps = _num(steps_mean, ",.0f")
        cells = [
            algo,
            _pm(metrics.stat("final_return")),
            _pm(metrics.stat("final_cost")),
            _num(metrics.stat("cost_rate")[0], ".4f"),
            _num(metrics.stat("eval_over_limit_share")[0], ".0%"),
            _pm(metrics.stat("cumulative_excess_cost"), 0),
            f"{steps} ({metrics.reached}/{metrics.seeds} seeds)",
            str(metrics.seeds),
            _num(metrics.stat("train_seconds")[0] / 60, ".1f", " min"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_curves(env: str, runs_by_algo: dict[str, list[RunRecord]], limit: float | None, path: Path) -> None:
    """Episode return and cost against steps, mean ± std over seeds, one line per algorithm."""
    budget = max(float(run.config["n_timesteps"]) for runs in runs_by_algo.values() for run in runs)
    curves = {
        f"{algo} ({len(runs)} seed{'s' if len(runs) != 1 else ''})": binned_curves(
            [run.episodes for run in runs], lm.N_BINS, budget
        )
        for algo, runs in runs_by_algo.items()
        if any(run.episodes for run in runs)
    }
    plot_seed_curves(curves, path, cost_limit=limit, title=f"{env}: training episodes")


def plot_diagnostics(env: str, seed0: dict[str, Rows], limit: float | None, path: Path) -> bool:
    """Seed 0's lambda, eta, qc_mean vs qc_threshold and the episode cost used for lambda; False if none logged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    colors = {algo: f"C{i % 10}" for i, algo in enumerate(sorted(seed0))}
    panels: list[tuple[str, list[tuple[Any, Any, str, str, str]]]] = []
    for title, names, styles in (
        ("Lagrange multiplier λ (symlog)", ["train/lambda"], ["-"]),
        ("temperature η (E-step)", ["train/eta"], ["-"]),
        ("Q_c mean (solid) vs threshold (dashed)", ["train/qc_mean", "train/qc_threshold"], ["-", "--"]),
        ("episode cost used for λ", ["train/ep_cost_for_lambda"], ["-"]),
    ):
        lines = []
        for algo, rows in sorted(seed0.items()):
            for name, style in zip(names, styles, strict=True):
                for column in lm.diagnostic_columns(rows, name):
                    steps, values = lm.diagnostic_series(rows, column)
                    label = f"{algo} {column.removeprefix('train/')}"
                    lines.append((steps, values, label, colors[algo], style))
        if lines:
            panels.append((title, lines))
    if not panels:
        return False
    figure, axes = plt.subplots(
        1, len(panels), figsize=(4.5 * len(panels), 3.6), constrained_layout=True, squeeze=False
    )
    for axis, (title, lines) in zip(axes[0], panels, strict=True):
        for steps, values, label, color, style in lines:
            axis.plot(steps, values, style, marker=".", markersize=3, color=color, label=label, linewidth=1)
        if title.startswith("episode cost") and limit is not None:
            axis.axhline(limit, color="black", linestyle=":", label=f"cost limit ({limit:g})")
        if title.startswith("Lagrange"):  # CVPO's E-step dual and the baselines' multipliers differ by orders
            axis.set_yscale("symlog", linthresh=0.1)
        axis.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x / 1000:g}k"))
        axis.set_title(title, fontsize=10)
        axis.set_xlabel("environment steps")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.suptitle(f"{env}: training diagnostics, seed 0")
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def write_report(
    runs_root: Path,
    out: Path,
    algos: Sequence[str],
    envs: Sequence[str],
    seeds: Sequence[int],
    title: str = "Circle tasks at 200k steps: CVPO against Lagrangian baselines",
) -> str:
    """Compute the metrics, write ``results.md`` and the PNGs into ``out``; return the Markdown."""
    finished, unfinished = load_grid(runs_root)
    grouped: dict[tuple[str, str], list[RunRecord]] = defaultdict(list)
    for (env, algo, _seed), (record, _) in sorted(finished.items()):
        grouped[(env, algo)].append(record)
    tasks = lm.grid_metrics(grouped)
    expected = [(env, algo, seed) for env in envs for algo in algos for seed in seeds]
    missing = [f"{algo}/{env}/seed{seed}" for env, algo, seed in expected if (env, algo, seed) not in finished]
    commits = sorted({str(record.summary.get("commit")) for record, _ in finished.values() if record.summary})
    budgets = sorted({int(record.config["n_timesteps"]) for record, _ in finished.values()})
    out.mkdir(parents=True, exist_ok=True)
    text = [
        f"# {title}\n",
        f"Grid: algorithms {', '.join(algos)}; seeds {', '.join(map(str, seeds))}; tasks {', '.join(envs)}. "
        f"Budget of the finished runs: {', '.join(f'{b:,}' for b in budgets) or MISSING} environment steps. "
        f"{len(finished)} of {len(expected)} grid points finished.\n",
        f"Made by `benchmarks/circle_200k_report.py` from the exported runs; commit(s): "
        f"{', '.join(f'`{c}`' for c in commits) or MISSING}.\n",
        "How the numbers are made (per seed, then mean ± std over seeds, population std, ddof=0):\n",
        "- final return / cost: mean over the training episodes that ended in the last 10% of the budget "
        "(timestep >= 0.9 × budget);",
        "- cost rate: total training cost / total training steps (sum of episode lengths), mean over seeds;",
        "- eval. episodes over limit: over the deterministic evaluations in the last 10% of the budget, "
        "sum(episodes_over_limit) / (eval_episodes × evaluations), mean over seeds;",
        "- cum. cost above limit: sum over training episodes of max(0, episode cost − limit);",
        f"- steps to target within limit: the training curve is binned into {lm.N_BINS} bins of "
        f"{100 // lm.N_BINS}% of the budget; the first bin end where the bin's mean return >= target and mean cost "
        f"<= limit. Target: {lm.TARGET_FRACTION:.0%} of the best mean final return among algorithms whose mean "
        "final cost is within the limit. Mean over the seeds that reach it, with how many do.\n",
        "Missing grid points (not finished yet): " + (", ".join(missing) or "none") + ".",
    ]
    if unfinished:
        text.append("Exported but not finished (ignored): " + ", ".join(unfinished) + ".")
    for env in list(envs) + [env for env in tasks if env not in envs]:
        text.append(f"\n## {env}\n")
        task = tasks.get(env)
        if task is None:
            text.append("No finished run yet.")
            continue
        limit = MISSING if task.cost_limit is None else f"{task.cost_limit:g}"
        target = _num(task.target, ".1f")
        text.append(f"Cost limit {limit}. Return target {target} ({lm.TARGET_FRACTION:.0%} of {task.target_algo}).")
        if task.note:
            text.append(f"Note: {task.note}.")
        text.append("\n" + task_table(task))
        runs_by_algo = {algo: grouped[(env, algo)] for algo in task.algos}
        plot_curves(env, runs_by_algo, task.cost_limit, out / f"curves_{env}.png")
        text.append(f"![learning curves](curves_{env}.png)\n")
        seed0 = {algo: diag for (e, algo, seed), (_, diag) in finished.items() if e == env and seed == 0}
        if plot_diagnostics(env, seed0, task.cost_limit, out / f"diagnostics_{env}.png"):
            text.append(f"![diagnostics, seed 0](diagnostics_{env}.png)\n")
        else:
            text.append("No diagnostics logged for seed 0.\n")
    text.append("\n" + REFERENCES)
    markdown = "\n".join(text)
    (out / "results.md").write_text(markdown)
    return markdown


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=Path("docs/benchmarks/circle_200k/runs"))
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/circle_200k"))
    parser.add_argument("--algos", nargs="+", default=list(ALGOS), help="algorithm folders of the full grid")
    parser.add_argument("--envs", nargs="+", default=list(ENVS), help="tasks of the full grid")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS), help="seeds of the full grid")
    parser.add_argument("--title", default="Circle tasks at 200k steps: CVPO against Lagrangian baselines")
    args = parser.parse_args(argv)
    markdown = write_report(args.runs, args.out, args.algos, args.envs, args.seeds, args.title)
    for block in markdown.split("\n## ")[1:]:
        print("## " + block.split("![")[0].rstrip() + "\n")
    print(f"Wrote {args.out / 'results.md'}")


if __name__ == "__main__":
    main()
