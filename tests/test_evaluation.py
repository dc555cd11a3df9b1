"""evaluate_safe_policy on any SB3 model, and SafeEvalCallback's feasibility-first model selection."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from stable_baselines3 import SAC
from stable_baselines3.common.logger import configure

from sb3_safe import SafeEvalCallback, UnconstrainedSAC, evaluate_safe_policy, make_env, make_vec_env
from sb3_safe.common.costs import MissingCostError
from sb3_safe.common.evaluation import SafeEvaluationResult


class ConstantPolicy:
    """Anything with SB3's predict() works: this one always moves by a fixed amount."""

    def __init__(self, move: float) -> None:
        self.move = move

    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        return np.full((len(observation), 1), self.move, dtype=np.float32), state


def test_costs_returns_and_lengths_of_a_known_policy(toy_env_id):
    # Moving +0.25 from x0 in [-0.5, 0.5]: 20 steps end near 5; the hazard [2, 3] holds 4 or 5 of the positions.
    result = evaluate_safe_policy(ConstantPolicy(0.25), make_env(toy_env_id), n_eval_episodes=6)
    assert result.n_episodes == 6
    np.testing.assert_array_equal(result.lengths, 20)
    assert set(result.costs) <= {4.0, 5.0}
    assert result.cost_rate == pytest.approx(result.costs.sum() / 120)
    assert result.n_over_limit(4.0) == int(np.sum(result.costs > 4.0))
    assert result.n_over_limit(10.0) == 0
    safe = evaluate_safe_policy(ConstantPolicy(-1.0), toy_env_id, n_eval_episodes=3)
    assert safe.mean_cost == 0.0 and safe.mean_return < 0.0


def test_vec_env_spreads_episodes_like_sb3(toy_env_id):
    env = make_vec_env(toy_env_id, n_envs=3, seed=0)
    result = evaluate_safe_policy(ConstantPolicy(0.25), env, n_eval_episodes=7)
    assert result.n_episodes == 7


def test_works_for_a_plain_sb3_model(toy_env_id):
    model = SAC("MlpPolicy", make_env(toy_env_id), learning_starts=10, policy_kwargs={"net_arch": [8]})
    result = evaluate_safe_policy(model, make_env(toy_env_id), n_eval_episodes=2)
    assert isinstance(result, SafeEvaluationResult)
    assert result.lengths.tolist() == [20, 20]
    assert "cost rate" in result.table(limit=5.0) and "episodes over limit" in result.table(limit=5.0)


def test_env_without_cost_is_an_error():
    import gymnasium as gym

    with pytest.raises(MissingCostError, match="ToyNoCost-v0"):
        evaluate_safe_policy(ConstantPolicy(0.1), gym.make("ToyNoCost-v0"), n_eval_episodes=1)


def test_result_validates_limits():
    result = SafeEvaluationResult(np.array([1.0, 2.0]), np.array([0.0, 3.0]), np.array([5, 5]))
    assert result.is_feasible(1.5) and not result.is_feasible(1.0)
    with pytest.raises(ValueError, match=">= 0"):
        result.n_over_limit(-1.0)


class _ScriptedEvalCallback(SafeEvalCallback):
    """Feeds scripted evaluation results, to test model selection without training."""

    def __init__(self, script, **kwargs):
        super().__init__(**kwargs)
        self.script = list(script)

    def _on_step(self) -> bool:
        import sb3_safe.common.callbacks as callbacks

        mean_return, mean_cost = self.script.pop(0)
        original = callbacks.evaluate_safe_policy
        callbacks.evaluate_safe_policy = lambda *a, **k: SafeEvaluationResult(
            np.array([mean_return]), np.array([mean_cost]), np.array([20])
        )
        try:
            return super()._on_step()
        finally:
            callbacks.evaluate_safe_policy = original


def test_best_model_is_feasible_first_then_highest_return(toy_env_id, tmp_path):
    model = UnconstrainedSAC("MlpPolicy", toy_env_id, learning_starts=1000, policy_kwargs={"net_arch": [8]})
    model.set_logger(configure(str(tmp_path), ["csv"]))
    # (return, cost) with limit 5: infeasible 100 is beaten by feasible 1; then feasible 3 beats it; the
    # infeasible 50 afterwards does not.
    script = [(100.0, 9.0), (1.0, 2.0), (3.0, 5.0), (50.0, 6.0)]
    callback = _ScriptedEvalCallback(
        script,
        eval_env=make_env(toy_env_id),
        cost_limit=5.0,
        eval_freq=1,
        n_eval_episodes=1,
        verbose=0,
        best_model_save_path=str(tmp_path),
        log_path=str(tmp_path),
    )
    bests = []
    callback.init_callback(model)
    for _ in range(4):
        callback.on_step()
        bests.append((callback.best_mean_reward, callback.best_is_feasible))
    assert bests == [(100.0, False), (1.0, True), (3.0, True), (3.0, True)]
    assert (tmp_path / "best_model.zip").exists()
    saved = np.load(tmp_path / "evaluations.npz")
    assert saved["costs"].tolist() == [[9.0], [2.0], [5.0], [6.0]]


def test_episode_history_records_return_cost_and_length(toy_env_id, tmp_path):
    from sb3_safe.common.callbacks import EpisodeHistoryCallback

    model = UnconstrainedSAC("MlpPolicy", toy_env_id, learning_starts=100, policy_kwargs={"net_arch": [8]})
    history = EpisodeHistoryCallback()
    model.learn(60, callback=history)
    assert [row["timestep"] for row in history.history] == [20.0, 40.0, 60.0]
    assert [row["cost"] for row in history.history] == [info["c"] for info in model.ep_info_buffer]
    history.to_csv(tmp_path / "episodes.csv")
    lines = (tmp_path / "episodes.csv").read_text().splitlines()
    assert lines[0] == "timestep,return,cost,length" and len(lines) == 4


def test_episode_history_appends_each_episode_to_a_csv_file(toy_env_id, tmp_path):
    from sb3_safe.common.callbacks import EpisodeHistoryCallback

    path = tmp_path / "live.csv"
    model = UnconstrainedSAC("MlpPolicy", toy_env_id, learning_starts=100, policy_kwargs={"net_arch": [8]})
    history = EpisodeHistoryCallback(csv_path=path)
    model.learn(40, callback=history)
    model.learn(20, callback=history, reset_num_timesteps=False)  # the file is continued, not rewritten
    with open(path, newline="") as handle:
        rows = [{key: float(value) for key, value in row.items()} for row in csv.DictReader(handle)]
    assert rows == history.history and [row["timestep"] for row in rows] == [20.0, 40.0, 60.0]


def test_eval_callback_logs_cost_during_training(toy_env_id, tmp_path):
    model = UnconstrainedSAC(
        "MlpPolicy", toy_env_id, learning_starts=20, batch_size=16, policy_kwargs={"net_arch": [8]}
    )
    model.set_logger(configure(str(tmp_path), ["csv"]))
    callback = SafeEvalCallback(make_env(toy_env_id), cost_limit=3.0, eval_freq=20, n_eval_episodes=2, verbose=0)
    model.learn(40, callback=callback)
    text = (tmp_path / "progress.csv").read_text()
    for key in ("eval/mean_cost", "eval/cost_rate", "eval/episodes_over_limit", "eval/feasible", "eval/mean_reward"):
        assert key in text
    assert callback.last_result is not None and callback.last_result.n_episodes == 2
