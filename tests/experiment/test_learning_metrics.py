"""Learning metrics of runs and of a benchmark grid, and the Circle-grid report script, on hand-made runs."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from sb3_safe.experiment import learning_metrics as lm
from sb3_safe.experiment.runs import RunRecord

BUDGET = 1000
LIMIT = 10.0
SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "circle_200k_report.py"
EVAL_FIELDS = ["timestep", "mean_return", "std_return", "mean_cost", "std_cost", "cost_rate", "mean_length"]


def _episodes(returns, costs):
    """Ten episodes of 100 steps ending at 100, 200, ..., 1000, with return/cost functions of the end step."""
    return [
        {"timestep": float(t), "return": float(returns(t)), "cost": float(costs(t)), "length": 100.0}
        for t in range(100, BUDGET + 1, 100)
    ]


# Return t/10 (10..100); cost 20 up to step 500, then 5.
SAFE0 = _episodes(lambda t: t / 10, lambda t: 20.0 if t <= 500 else 5.0)
# Return t/10 - 10 (0..90), cost 15 throughout: never within the limit.
SAFE1 = _episodes(lambda t: t / 10 - 10, lambda t: 15.0)
GREEDY = _episodes(lambda t: 200.0, lambda t: 20.0)
MEH = _episodes(lambda t: 50.0, lambda t: 30.0)
# Window (t >= 900): 900 and 1000. Earlier evaluations are all over the limit and must not count.
EVALS = [
    {"timestep": float(t), "mean_return": r, "mean_cost": c, "episodes_over_limit": n}
    for t, r, c, n in [(200, 0.0, 50.0, 5), (600, 0.0, 50.0, 5), (900, 80.0, 4.0, 1), (1000, 90.0, 8.0, 2)]
]


def _record(episodes, evaluations=(), *, seed=0, limit_key="top", seconds=120.0):
    config = {"algo": "X", "env": "E", "seed": seed, "n_timesteps": BUDGET, "n_envs": 1, "eval_episodes": 5}
    config["hyperparams"] = {"cost_limit": LIMIT}
    if limit_key == "top":
        config["cost_limit"] = LIMIT
    summary = {"status": "finished", "commit": "abc123", "train_seconds": seconds}
    return RunRecord(Path("."), config, list(episodes), list(evaluations), summary)


def test_final_window_cost_rate_and_excess_cost():
    assert lm.final_window_means(SAFE0, BUDGET) == (95.0, 5.0)  # episodes ending at 900 and 1000
    assert lm.training_cost_rate(SAFE0) == pytest.approx((5 * 20 + 5 * 5) / 1000)
    assert lm.cumulative_excess_cost(SAFE0, LIMIT) == pytest.approx(5 * (20 - 10))
    assert lm.cumulative_excess_cost(SAFE1, 20.0) == 0.0
    assert all(math.isnan(v) for v in lm.final_window_means(SAFE0[:3], BUDGET))


def test_evaluation_window_share_over_limit():
    window = lm.evaluation_window(EVALS, BUDGET, eval_episodes=5)
    assert window.n_evaluations == 2
    assert window.over_limit_share == pytest.approx(3 / 10)
    assert (window.mean_return, window.mean_cost) == (85.0, 6.0)


def test_steps_to_target_needs_return_and_cost_on_right_closed_bins():
    # Return 30 is first reached at step 300, but cost stays 20 until 500: first qualifying episode ends at 600,
    # which belongs to the bin (550, 600].
    assert lm.steps_to_target(SAFE0, BUDGET, target=30.0, cost_limit=LIMIT) == 600.0
    assert lm.steps_to_target(SAFE0, BUDGET, target=30.0, cost_limit=None) == 300.0
    assert lm.steps_to_target(SAFE0, BUDGET, target=101.0, cost_limit=LIMIT) is None
    assert lm.steps_to_target([], BUDGET, target=0.0, cost_limit=LIMIT) is None


def test_run_metrics_reads_limit_from_hyperparams_when_config_has_none():
    metrics = lm.run_metrics(_record(SAFE0, EVALS, limit_key="hyperparams"), target=30.0)
    assert metrics.cumulative_excess_cost == pytest.approx(50.0)
    assert metrics.steps_to_target == 600.0
    assert metrics.eval_over_limit_share == pytest.approx(0.3)
    assert metrics.train_seconds == 120.0


def test_grid_target_from_best_feasible_algorithm_and_unreached_seeds():
    runs = {
        ("E", "safe"): [_record(SAFE0, seed=0, seconds=60.0), _record(SAFE1, seed=1, seconds=180.0)],
        ("E", "greedy"): [_record(GREEDY)],  # best return, but mean final cost 20 > 10: not the reference
    }
    task = lm.grid_metrics(runs)["E"]
    # safe: mean final return (95 + 85) / 2 = 90 at mean final cost (5 + 15) / 2 = 10 <= 10 (feasible).
    assert task.target_algo == "safe" and task.target == pytest.approx(0.8 * 90) and task.note == ""
    safe = task.algos["safe"]
    assert safe.stat("final_return") == (90.0, 5.0)  # population std (ddof=0); ddof=1 would give 7.07
    assert safe.stat("train_seconds")[0] == 120.0
    # Target 72: seed 0 first reaches it within the limit at step 800 (return 80, cost 5); seed 1 never (cost 15).
    assert [m.steps_to_target for m in safe.runs] == [800.0, None]
    assert (safe.reached, safe.seeds, safe.steps_to_target) == (1, 2, (800.0, 0.0))
    assert task.algos["greedy"].reached == 0 and math.isnan(task.algos["greedy"].steps_to_target[0])


def test_infeasible_grid_takes_best_of_all_with_a_note():
    task = lm.grid_metrics({("E", "greedy"): [_record(GREEDY)], ("E", "meh"): [_record(MEH)]})["E"]
    assert task.target_algo == "greedy" and task.target == pytest.approx(160.0)
    assert "no algorithm" in task.note and "10" in task.note
    assert [algo.reached for algo in task.algos.values()] == [0, 0]


def test_grid_refuses_mixed_cost_limits():
    other = _record(SAFE0)
    other.config["cost_limit"] = 25.0
    with pytest.raises(ValueError, match="different cost limits"):
        lm.grid_metrics({("E", "a"): [_record(SAFE0)], ("E", "b"): [other]})


def test_diagnostic_columns_skip_missing_and_empty_columns():
    rows = [
        {"time/total_timesteps": 100.0, "train/lambda_0": 0.1, "train/lambda_1": math.nan, "train/lambda": math.nan},
        {"time/total_timesteps": 200.0, "train/lambda_0": 0.3, "train/lambda_1": 2.0, "train/lambda_cost": 1.0},
    ]
    assert lm.diagnostic_columns(rows, "train/lambda") == ["train/lambda_0", "train/lambda_1"]
    assert lm.diagnostic_columns(rows, "train/eta") == []
    steps, values = lm.diagnostic_series(rows, "train/lambda_1")
    np.testing.assert_array_equal(steps, [200.0])
    np.testing.assert_array_equal(values, [2.0])
    assert lm.diagnostic_series(rows, "train/eta")[0].size == 0


def _write_csv(path: Path, rows, fields):
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(rows)


def _export(root, algo, env, seed, episodes, diagnostics=None, status="finished", limit=LIMIT):
    folder = root / algo / env / f"seed{seed}"
    folder.mkdir(parents=True)
    config = {"algo": algo, "env": env, "seed": seed, "n_timesteps": BUDGET, "n_envs": 1, "eval_episodes": 5}
    config.update(cost_limit=limit, hyperparams={"cost_limit": limit})
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    _write_csv(folder / "episodes.csv", episodes, ["timestep", "return", "cost", "length"])
    evals = [{**row, "std_return": 0, "std_cost": 0, "cost_rate": 0, "mean_length": 100} for row in EVALS]
    _write_csv(folder / "evaluations.csv", evals, [*EVAL_FIELDS, "episodes_over_limit"])
    if diagnostics is not None:
        _write_csv(folder / "diagnostics.csv", diagnostics, sorted({k for row in diagnostics for k in row}))
    info = {"status": status, "commit": f"commit{algo}", "train_seconds": 600.0, "num_timesteps": BUDGET}
    (folder / "run.json").write_text(json.dumps(info))


def test_report_script_on_a_partial_grid(tmp_path, capsys):
    runs = tmp_path / "runs"
    ball, point = "SafetyBallCircle-v0", "SafetyPointCircle1-v0"
    cvpo_diag = [{"time/total_timesteps": t, "train/eta": 1.0, "train/lambda": 0.5} for t in (100, 200)]
    sac_diag = [{"time/total_timesteps": 100, "train/lambda": "", "train/qc_mean": 3.0, "train/qc_threshold": 2.0}]
    _export(runs, "CVPO", ball, 0, SAFE0, cvpo_diag)
    _export(runs, "CVPO", ball, 1, SAFE1)
    _export(runs, "SACLag", ball, 0, GREEDY, sac_diag)
    _export(runs, "TD3Lag", ball, 0, GREEDY, status="running")  # not finished: listed, not counted
    _export(runs, "PPOLag", point, 0, MEH, limit=25.0)  # no diagnostics.csv
    spec = importlib.util.spec_from_file_location("circle_200k_report", SCRIPT)
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "report"
    script.main(["--runs", str(runs), "--out", str(out)])

    text = (out / "results.md").read_text()
    assert text.count("| algorithm | final return |") == 2  # Ball and Point; Car has no finished run
    assert "## SafetyCarCircle-v0\n\nNo finished run yet." in text
    assert "`commitCVPO`" in text and "`commitSACLag`" in text and "commitTD3Lag" not in text
    assert "TD3Lag/SafetyBallCircle-v0/seed0" in text.split("Exported but not finished")[1]
    assert "CVPO/SafetyBallCircle-v0/seed2" in text and "CVPO/SafetyBallCircle-v0/seed1," not in text
    ball_section = text.split(f"## {ball}")[1].split("## ")[0]
    # CVPO is the feasible reference (target 72); SACLag's cost 20 is over the limit.
    assert "| CVPO | 90.0 ± 5.0 | 10.0 ± 5.0 |" in ball_section
    assert "| 800 (1/2 seeds) |" in ball_section
    assert "| SACLag | 200.0 ± 0.0 | 20.0 ± 0.0 |" in ball_section and "(0/1 seeds)" in ball_section
    assert "| 30% |" in ball_section and "10.0 min" in ball_section
    assert "≈690" in text and "83.7" in text and "3M steps" in text
    for name in (f"curves_{ball}.png", f"diagnostics_{ball}.png", f"curves_{point}.png"):
        assert f"]({name})" in text and (out / name).stat().st_size > 5000
    assert not (out / f"diagnostics_{point}.png").exists() and "No diagnostics logged" in text
    assert not (out / "curves_SafetyCarCircle-v0.png").exists()
    printed = capsys.readouterr().out
    assert "| CVPO | 90.0 ± 5.0" in printed and "| PPOLag |" in printed


def test_a_trained_run_exports_what_the_report_reads(tmp_path):
    """The grid driver's export of a real run directory feeds the report: curves, diagnostics, one table row."""
    from sb3_safe.experiment.config import build_config
    from sb3_safe.experiment.runner import train

    def load(name: str, path: Path):
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    driver = load("circle_200k", SCRIPT.parent / "circle_200k.py")
    report = load("circle_200k_report", SCRIPT)
    overrides = {"learning_starts": 20, "train_freq": 10, "policy_kwargs": {"net_arch": [8]}, "buffer_size": 500}
    config = build_config(
        "sac_lag", "ToyConstrained-v0", n_timesteps=400, n_envs=2, overrides=overrides, cost_limit=1.0,
        eval_freq=200, eval_episodes=2, wandb_mode="disabled",
    )  # fmt: skip
    run_dir = tmp_path / "grid" / "runs" / config.algo / config.env / "seed0"
    train(config, run_dir, progress_bar=False)
    target = tmp_path / "export" / config.algo / config.env / "seed0"
    driver.export_run(run_dir, target, "abc123")

    assert json.loads((target / "run.json").read_text())["status"] == "finished"
    diagnostics = list(csv.DictReader((target / "diagnostics.csv").open()))
    assert diagnostics and {"train/lambda", "train/ep_cost_for_lambda", "train/qc_mean"} <= set(diagnostics[0])
    out = tmp_path / "report"
    text = report.write_report(tmp_path / "export", out, ["SACLag"], ["ToyConstrained-v0"], [0], "toy")
    assert "| SACLag |" in text and "`abc123`" in text and "1 of 1 grid points finished" in text
    assert (out / "curves_ToyConstrained-v0.png").is_file() and (out / "diagnostics_ToyConstrained-v0.png").is_file()


def test_the_grid_driver_recognises_finished_exports(tmp_path):
    from types import SimpleNamespace

    spec = importlib.util.spec_from_file_location("circle_200k", SCRIPT.parent / "circle_200k.py")
    assert spec is not None and spec.loader is not None
    driver = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(driver)
    done, running, absent = (SimpleNamespace(algo="CVPO", env="SafetyBallCircle-v0", seed=k) for k in range(3))
    for config, status in ((done, "finished"), (running, "running")):
        folder = tmp_path / config.algo / config.env / f"seed{config.seed}"
        folder.mkdir(parents=True)
        (folder / "run.json").write_text(json.dumps({"status": status}))
    assert [driver._finished_export(tmp_path, c) for c in (done, running, absent)] == [True, False, False]
