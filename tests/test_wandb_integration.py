"""A safe algorithm's cost metrics reach W&B (offline run read back from disk) and SB3's CSV alike."""

from __future__ import annotations

import csv

import pytest

from sb3_safe import UnconstrainedSAC, make_vec_env
from sb3_safe.common.wandb_logger import attach_wandb, finish_wandb
from sb3_safe.common.wandb_offline import find_offline_runs, read_offline_run

COST_KEYS = ("rollout/ep_cost_mean", "safety/cost_rate", "safety/episodes_over_limit")


@pytest.fixture
def isolated_wandb(tmp_path, monkeypatch):
    for variable in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(variable, str(tmp_path / variable.lower()))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)  # offline must be the default without an account
    return tmp_path


def test_cost_metrics_in_the_offline_run_and_the_csv(toy_env_id, isolated_wandb):
    folder = isolated_wandb / "run"
    model = UnconstrainedSAC(
        "MlpPolicy", make_vec_env(toy_env_id, n_envs=2, seed=0), cost_limit=1.0, learning_starts=40, batch_size=16,
        policy_kwargs={"net_arch": [8]}, verbose=0,
    )  # fmt: skip
    run = attach_wandb(model, folder=str(folder), format_strings=("csv",), dir=str(folder), project="sb3-safe-tests")
    assert run.settings.mode == "offline"
    model.learn(160, log_interval=1)
    finish_wandb(model)

    runs = find_offline_runs(folder)
    assert len(runs) == 1
    history = read_offline_run(runs[0]).history
    with open(folder / "progress.csv") as handle:
        csv_rows = list(csv.DictReader(handle))
    for key in COST_KEYS:
        logged = {row["_step"]: row[key] for row in history if key in row}
        # SB3 dumps once per finished episode, so two envs ending together give two CSV rows at one step;
        # W&B keeps one row per step (explicit steps are merged).
        in_csv = {int(row["time/total_timesteps"]): float(row[key]) for row in csv_rows if row.get(key)}
        assert len(logged) >= 3, key
        assert logged == pytest.approx(in_csv), key
    last = history[-1]
    assert last["_step"] == model.num_timesteps
    assert last["safety/cost_rate"] == pytest.approx(model.cost_rate)
    assert last["safety/episodes_over_limit"] == model.episodes_over_limit
