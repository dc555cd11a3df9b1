"""Default hyperparameters per task family: resolution order, presets, errors, and that they build a CVPO."""

from __future__ import annotations

import pytest

from sb3_safe.cvpo import CVPO
from sb3_safe.hyperparams import load_hyperparams, split_run_settings, task_family


def test_family_then_task_overrides_then_preset():
    assert task_family("cvpo", "SafetyCarButton2-v0") == "navigation"
    assert task_family("cvpo", "SafetyPointCircle1-v0") == "circle"
    assert task_family("cvpo", "Pendulum-v1") is None
    navigation = load_hyperparams("cvpo", "SafetyPointGoal1-v0")
    assert (navigation["gamma"], navigation["n_steps"]) == (0.995, 3)
    assert navigation["policy_kwargs"] == {
        "net_arch": [128, 128], "covariance": "diag", "bounded_mean": False, "n_critics": 2,
        "n_cost_critics": 1, "cost_critic_reduce": "max",
    }  # fmt: skip
    assert load_hyperparams("cvpo", "SafetyHalfCheetahVelocity-v1")["buffer_size"] == 40000
    humanoid = load_hyperparams("cvpo", "SafetyHumanoidVelocity-v1")
    assert (humanoid["n_samples"], humanoid["gamma"], humanoid["policy_kwargs"]["bounded_mean"]) == (64, 0.995, False)
    assert load_hyperparams("cvpo", "Pendulum-v1")["gamma"] == 0.99  # defaults only
    orig = load_hyperparams("cvpo", "SafetyPointGoal1-v0", preset="orig_circle")
    assert (orig["mstep_iters"], orig["policy_kwargs"]["covariance"], orig["gamma"]) == (29, "full", 0.99)


@pytest.mark.parametrize(
    ("env_id", "budget"),
    [("SafetyCarCircle-v0", 2_000_000), ("SafetyBallCircle-v0", 1_000_000), ("SafetyDroneCircle-v0", 5_000_000)],
)
def test_bullet_family_follows_fsrl(env_id, budget):
    assert task_family("cvpo", env_id) == "bullet"
    params = load_hyperparams("cvpo", env_id)
    assert (params["cost_limit"], params["gamma"], params["n_steps"], params["n_samples"]) == (10.0, 0.97, 2, 16)
    assert params["n_timesteps"] == budget and params["policy_kwargs"]["bounded_mean"] is True
    assert task_family("cvpo", "SafetyCarCircle1-v0") == "circle"  # safety-gymnasium's Circle stays in its family


def test_unknown_algorithm_or_preset_is_a_clear_error():
    with pytest.raises(ValueError, match=r"No hyperparameter file for algorithm 'trpo_lag'.*Known: cvpo, ppo_lag"):
        load_hyperparams("trpo_lag")
    with pytest.raises(ValueError, match=r"Unknown preset 'fast'.*Known: orig_circle"):
        load_hyperparams("cvpo", preset="fast")


@pytest.mark.parametrize(("env_id", "preset"), [("SafetyPointGoal1-v0", None), ("SafetyAntVelocity-v1", "orig_circle")])
def test_every_key_is_a_cvpo_argument(toy_env_id, env_id, preset):
    params, run = split_run_settings(load_hyperparams("cvpo", env_id, preset=preset))
    assert set(run) <= {"n_envs", "n_timesteps"} and "n_envs" in run and not set(run) & set(params)
    params["policy_kwargs"]["net_arch"] = [8]
    model = CVPO(env=toy_env_id, **{**params, "buffer_size": 100})
    assert model.n_samples == params["n_samples"] and model.gamma == params["gamma"]


@pytest.mark.parametrize("env_id", ["SafetyPointGoal1-v0", "SafetyPointCircle1-v0", "SafetyBallCircle-v0"])
@pytest.mark.parametrize(
    ("algorithm", "preset"),
    [("sac_lag", None), ("sac_lag", "orig_pid"), ("td3_lag", None), ("td3_lag", "orig_pid"), ("ppo_lag", None)],
)
def test_every_key_is_an_argument_of_the_lagrangian_baselines(toy_env_id, env_id, algorithm, preset):
    from sb3_safe.lagrangian import PPOLag, SACLag, TD3Lag

    cls = {"sac_lag": SACLag, "td3_lag": TD3Lag, "ppo_lag": PPOLag}[algorithm]
    params, run = split_run_settings(load_hyperparams(algorithm, env_id, preset=preset))
    assert set(run) == {"n_envs", "n_timesteps"} and not set(run) & set(params)
    params["policy_kwargs"]["net_arch"] = [8]
    small = {"n_steps": 32, "batch_size": 16} if algorithm == "ppo_lag" else {"buffer_size": 100}
    model = cls(env=toy_env_id, **{**params, **small})
    bullet = env_id == "SafetyBallCircle-v0" and preset is None and algorithm != "ppo_lag"
    assert model.gamma == params["gamma"] == (0.97 if bullet else 0.99)  # FSRL: 0.97 on Bullet, else 0.99
    assert model.cost_limit[0] == (10.0 if env_id == "SafetyBallCircle-v0" else 25.0)
    assert model.duals["lambda"].shape == (1,)
    if preset is None:  # FSRL's PID gains, on the measured episode costs
        assert model.lagrange_method == "pid" and (model.lagrange.kp, model.lagrange.kd) == (0.05, 0.1)
        assert getattr(model, "lagrange_cost_source", "episodes") == "episodes"


def test_off_policy_baselines_share_cvpos_networks_batch_and_update_to_data_ratio():
    cvpo, _ = split_run_settings(load_hyperparams("cvpo", "SafetyBallCircle-v0"))
    for algorithm in ("sac_lag", "td3_lag"):
        params, run = split_run_settings(load_hyperparams(algorithm, "SafetyBallCircle-v0"))
        for key in ("batch_size", "utd_ratio", "train_freq", "buffer_size", "n_steps", "gamma", "cost_limit"):
            assert params[key] == cvpo[key], (algorithm, key)
        assert params["policy_kwargs"]["net_arch"] == cvpo["policy_kwargs"]["net_arch"]
    ppo, run = split_run_settings(load_hyperparams("ppo_lag", "SafetyBallCircle-v0"))
    assert ppo["n_steps"] * run["n_envs"] == 20 * 200  # about 20 episodes of 200 steps per rollout, as FSRL
