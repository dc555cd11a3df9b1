"""Reading run directories back, comparison plots and result tables, on synthetic run directories."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

from sb3_safe.experiment.plots import MAX_BINS, NothingToPlotError, plot_runs
from sb3_safe.experiment.results import RESULT_COLUMNS, aggregate_results, format_results_table, write_results
from sb3_safe.experiment.runs import NotARunDirectoryError, RunRecord, find_runs, load_run, read_csv_rows

N_TIMESTEPS = 1000
LIMITS: dict[str, float | None] = {"EnvA-v0": 5.0, "EnvB-v0": None}
# (algo, env) -> per-seed (evaluation mean_return, evaluation mean_cost, evaluation episodes_over_limit)
EVAL = {
    ("CVPO", "EnvA-v0"): [(10.0, 2.0, 0), (14.0, 6.0, 3), (12.0, 4.0, 1)],
    ("PPOLag", "EnvA-v0"): [(20.0, 8.0, 5), (30.0, 5.0, 2)],
    ("CVPO", "EnvB-v0"): [(1.0, 0.5, 0), (3.0, 1.5, 0)],
    ("PPOLag", "EnvB-v0"): [(-2.0, 0.0, 0), (4.0, 1.0, 0)],
}


def _write_csv(path: Path, fields: list[str], rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def _episodes(offset: float) -> list[dict[str, float]]:
    return [
        {"timestep": float(t), "return": offset + t / 100, "cost": offset / 2 + t / 200, "length": 50.0}
        for t in range(50, N_TIMESTEPS + 1, 50)
    ]


def make_run(
    root: Path,
    algo: str,
    env: str,
    seed: int,
    evaluation: tuple[float, float, int] = (0.0, 0.0, 0),
    finished: bool = True,
    episodes: bool = True,
) -> Path:
    """A run directory as ``sb3-safe train`` writes it, with known numbers."""
    limit = LIMITS.get(env)
    root.mkdir(parents=True)
    config = {"algo": algo, "env": env, "seed": seed, "cost_limit": limit, "n_timesteps": N_TIMESTEPS, "n_envs": 1}
    config["hyperparams"] = {"learning_rate": 0.001}
    (root / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    if episodes:
        _write_csv(root / "logs" / "episodes.csv", ["timestep", "return", "cost", "length"], _episodes(seed))
    mean_return, mean_cost, over = evaluation
    eval_row: dict[str, Any] = {
        "timestep": N_TIMESTEPS,
        "mean_return": mean_return,
        "std_return": 1.0,
        "mean_cost": mean_cost,
    }
    eval_row |= {"std_cost": 0.5, "cost_rate": mean_cost / 100, "mean_length": 50.0}
    eval_row["episodes_over_limit"] = over if limit is not None else ""
    _write_csv(root / "logs" / "evaluations.csv", list(eval_row), [eval_row])
    if finished:
        evaluation_summary = {k: v for k, v in eval_row.items() if k != "timestep" and v != ""}
        summary = {
            "algo": algo,
            "env": env,
            "seed": seed,
            "cost_limit": limit,
            "total_timesteps": N_TIMESTEPS,
            "train_seconds": 10.0 * (seed + 1),
            "training": {"cost_rate": 0.01 * seed, "episodes": 20, "final_return": mean_return - 1, "final_cost": 3.0},
            "evaluation": {"episodes": 10, **evaluation_summary},
        }
        (root / "summary.json").write_text(json.dumps(summary))
    return root


@pytest.fixture
def bench(tmp_path: Path) -> Path:
    """A benchmark folder: ``bench/runs/<algo>/<env>/seed<k>/``, plus one interrupted CVPO run on EnvA."""
    base = tmp_path / "bench"
    for (algo, env), seeds in EVAL.items():
        for seed, evaluation in enumerate(seeds):
            make_run(base / "runs" / algo / env / f"seed{seed}", algo, env, seed, evaluation)
    make_run(base / "runs" / "CVPO" / "EnvA-v0" / "seed9", "CVPO", "EnvA-v0", 9, finished=False)
    return base


def _load_all(base: Path) -> list[RunRecord]:
    return [load_run(path) for path in find_runs([base])]


def test_load_run_round_trip(tmp_path: Path) -> None:
    path = make_run(tmp_path / "run", "CVPO", "EnvA-v0", 2, (7.5, 3.0, 1))
    run = load_run(path)
    assert (run.algo, run.env, run.seed, run.cost_limit, run.finished) == ("CVPO", "EnvA-v0", 2, 5.0, True)
    assert run.path == path and run.config["hyperparams"] == {"learning_rate": 0.001}
    assert run.episodes == _episodes(2)
    assert run.evaluations == [
        {
            "timestep": 1000.0,
            "mean_return": 7.5,
            "std_return": 1.0,
            "mean_cost": 3.0,
            "std_cost": 0.5,
            "cost_rate": 0.03,
            "mean_length": 50.0,
            "episodes_over_limit": 1.0,
        }
    ]
    assert run.summary is not None and run.summary["evaluation"]["mean_return"] == 7.5


def test_interrupted_run_without_logs_loads_with_empty_lists(tmp_path: Path) -> None:
    path = make_run(tmp_path / "run", "PPOLag", "EnvB-v0", 0, finished=False, episodes=False)
    (path / "logs" / "evaluations.csv").unlink()
    run = load_run(path)
    assert run.episodes == [] and run.evaluations == [] and run.summary is None
    assert not run.finished and run.cost_limit is None


def test_empty_cells_read_as_nan(tmp_path: Path) -> None:
    run = load_run(make_run(tmp_path / "run", "CVPO", "EnvB-v0", 0))
    assert np.isnan(run.evaluations[0]["episodes_over_limit"])


@pytest.mark.parametrize("content", ["timestep,return\n1,abc\n", "timestep,return\n1\n", "timestep,return\n1,2,3\n"])
def test_malformed_csv_names_the_file(tmp_path: Path, content: str) -> None:
    path = make_run(tmp_path / "run", "CVPO", "EnvA-v0", 0)
    (path / "logs" / "episodes.csv").write_text(content)
    with pytest.raises(ValueError, match=r"episodes\.csv.*line 2"):
        load_run(path)
    with pytest.raises(ValueError, match=r"episodes\.csv"):
        read_csv_rows(path / "logs" / "episodes.csv")


def test_not_a_run_directory_messages(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    file = tmp_path / "notes.txt"
    file.write_text("hello")
    for path in (empty, file, tmp_path / "missing"):
        for call in (load_run, lambda p: find_runs([p])):
            with pytest.raises(NotARunDirectoryError) as info:
                call(path)
            message = str(info.value)
            assert str(path) in message and "config.yaml" in message
            assert "pass a directory written by `sb3-safe train` (it holds config.yaml)" in message.lower()
    assert isinstance(NotARunDirectoryError(empty), ValueError)


def test_find_runs_in_nested_folders(bench: Path) -> None:
    run_dir = bench / "runs" / "CVPO" / "EnvA-v0" / "seed0"
    # W&B keeps a config.yaml of its own inside the run: that is not another run.
    (run_dir / "wandb" / "offline-run-1" / "files").mkdir(parents=True)
    (run_dir / "wandb" / "offline-run-1" / "files" / "config.yaml").write_text("wandb_version: 1\n")
    found = find_runs([bench, run_dir])  # the run dir twice: listed once
    assert len(found) == sum(len(seeds) for seeds in EVAL.values()) + 1
    assert found == sorted(found) and len(set(found)) == len(found)
    assert run_dir.resolve() in found
    assert all((path / "config.yaml").is_file() and path.name.startswith("seed") for path in found)
    assert find_runs([run_dir]) == [run_dir.resolve()]


def test_aggregate_results_values(bench: Path) -> None:
    rows = aggregate_results(_load_all(bench))
    assert [(row["env"], row["algo"]) for row in rows] == [
        ("EnvA-v0", "CVPO"),
        ("EnvA-v0", "PPOLag"),
        ("EnvB-v0", "CVPO"),
        ("EnvB-v0", "PPOLag"),
    ]
    by_key = {(row["algo"], row["env"]): row for row in rows}
    for key, seeds in EVAL.items():
        row = by_key[key]
        assert set(row) == set(RESULT_COLUMNS)
        returns = [r for r, _, _ in seeds]
        costs = [c for _, c, _ in seeds]
        assert row["seeds"] == len(seeds)
        assert row["cost_limit"] == LIMITS[key[1]]
        assert row["eval_return_mean"] == pytest.approx(np.mean(returns))
        assert row["eval_return_std"] == pytest.approx(np.std(returns))
        assert row["eval_cost_mean"] == pytest.approx(np.mean(costs))
        assert row["eval_cost_std"] == pytest.approx(np.std(costs))
        assert row["eval_cost_rate_mean"] == pytest.approx(np.mean(costs) / 100)
        assert row["train_final_return_mean"] == pytest.approx(np.mean(returns) - 1)
        assert row["train_final_cost_mean"] == pytest.approx(3.0)
        assert row["train_cost_rate_mean"] == pytest.approx(0.01 * np.mean(range(len(seeds))))
        assert row["train_seconds_mean"] == pytest.approx(10.0 * np.mean([s + 1 for s in range(len(seeds))]))
    # By hand: CVPO on EnvA (limit 5): costs 2, 6, 4 -> 2 feasible, 0 + 3 + 1 over; one interrupted seed.
    cvpo_a = by_key[("CVPO", "EnvA-v0")]
    assert (cvpo_a["feasible_seeds"], cvpo_a["eval_episodes_over_limit"], cvpo_a["unfinished"]) == (2, 4, 1)
    assert cvpo_a["eval_return_mean"] == pytest.approx(12.0)
    assert cvpo_a["eval_return_std"] == pytest.approx(np.sqrt(8 / 3))
    # PPOLag on EnvA: costs 8, 5 -> 1 feasible (5 <= 5), 5 + 2 over.
    ppo_a = by_key[("PPOLag", "EnvA-v0")]
    assert (ppo_a["feasible_seeds"], ppo_a["eval_episodes_over_limit"], ppo_a["unfinished"]) == (1, 7, 0)
    assert ppo_a["eval_return_std"] == pytest.approx(5.0)
    # No cost limit on EnvB: no feasibility, no over-limit count.
    for algo in ("CVPO", "PPOLag"):
        row = by_key[(algo, "EnvB-v0")]
        assert row["feasible_seeds"] is None and row["eval_episodes_over_limit"] is None and row["cost_limit"] is None


def test_only_unfinished_runs_give_an_empty_row(tmp_path: Path) -> None:
    runs = [load_run(make_run(tmp_path / f"s{seed}", "TD3Lag", "EnvA-v0", seed, finished=False)) for seed in (0, 1)]
    (row,) = aggregate_results(runs)
    assert (row["seeds"], row["unfinished"], row["eval_return_mean"], row["feasible_seeds"]) == (0, 2, None, 0)
    assert "| EnvA-v0 | TD3Lag | 0 |" in format_results_table([row])


def test_write_results_csv_and_markdown(bench: Path, tmp_path: Path) -> None:
    rows = aggregate_results(_load_all(bench))
    csv_path, markdown_path = tmp_path / "out" / "results.csv", tmp_path / "out" / "results.md"
    write_results(rows, csv_path, markdown_path)
    with open(csv_path, newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames or ()) == RESULT_COLUMNS
        table = list(reader)
    assert [(row["env"], row["algo"]) for row in table] == [(row["env"], row["algo"]) for row in rows]
    assert float(table[0]["eval_return_mean"]) == pytest.approx(12.0)
    assert table[0]["feasible_seeds"] == "2" and table[0]["unfinished"] == "1"
    assert table[2]["cost_limit"] == "" and table[2]["feasible_seeds"] == ""
    markdown = markdown_path.read_text()
    assert markdown == format_results_table(rows)
    lines = markdown.splitlines()
    assert lines[0].startswith("| env | algo |") and "return (eval)" in lines[0] and "feasible seeds" in lines[0]
    assert len(lines) == 2 + len(EVAL)
    for algo, env in EVAL:
        (line,) = [line for line in lines if line.startswith(f"| {env} | {algo} |")]
        assert "±" in line
    (cvpo_a,) = [line for line in lines if line.startswith("| EnvA-v0 | CVPO |")]
    assert "12.00 ± 1.63" in cvpo_a and "| 2/3 |" in cvpo_a
    assert not list(csv_path.parent.glob(".*"))  # no temporary files left behind


def test_plot_runs_one_row_per_environment(bench: Path, tmp_path: Path) -> None:
    runs = _load_all(bench)
    both = plot_runs(runs, tmp_path / "plots" / "both.png", n_bins=5, title="benchmark")
    one = plot_runs([run for run in runs if run.env == "EnvA-v0"], tmp_path / "one.png", n_bins=5)
    images = {}
    for name, path in (("both", both), ("one", one)):
        assert Path(path).stat().st_size > 5000
        with Image.open(path) as image:
            assert image.format == "PNG"
            images[name] = image.size
    (width_both, height_both), (width_one, height_one) = images["both"], images["one"]
    assert width_both == width_one and height_both > 1.8 * height_one
    assert height_one < width_one


def test_plot_runs_skips_runs_without_episodes(tmp_path: Path) -> None:
    good = load_run(make_run(tmp_path / "good", "CVPO", "EnvA-v0", 0))
    empty = load_run(make_run(tmp_path / "empty", "CVPO", "EnvA-v0", 1, episodes=False))
    with pytest.warns(UserWarning, match=r"Skipping .*empty"):
        path = plot_runs([good, empty], tmp_path / "plot.png", n_bins=4)
    assert Path(path).is_file()
    nothing = load_run(make_run(tmp_path / "nothing", "CVPO", "EnvA-v0", 2, episodes=False))
    (nothing.path / "logs" / "evaluations.csv").unlink()
    nothing = load_run(nothing.path)
    with pytest.warns(UserWarning), pytest.raises(NothingToPlotError, match="No run has a finished episode or an"):
        plot_runs([nothing], tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()


def test_plot_runs_without_episodes_plots_the_evaluations(tmp_path: Path) -> None:
    empty = load_run(make_run(tmp_path / "empty", "CVPO", "EnvA-v0", 1, episodes=False))
    with pytest.warns(UserWarning, match="plotting the periodic evaluations instead"):
        path = plot_runs([empty], tmp_path / "evaluations.png", n_bins=4)
    assert Path(path).stat().st_size > 5000
    for bins in (0, -3, MAX_BINS + 1):
        with pytest.raises(ValueError, match=f"between 1 and {MAX_BINS}"):
            plot_runs([empty], tmp_path / "bad.png", n_bins=bins)
