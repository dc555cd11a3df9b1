"""SLUCB-QVI: zero violations, certified safe sets, equivalence with LSVI-UCB, save/load."""

from __future__ import annotations

import numpy as np
import pytest
from stable_baselines3.common.env_util import make_vec_env as sb3_make_vec_env
from toy_linear_mdp import ToyLinearMDP

import sb3_safe
from sb3_safe.linear import LSVIUCB
from sb3_safe.linear.slucb_qvi import SLUCBQVI

pytest.importorskip("sb3_safe_frozen_lake")


def _synthetic(seed: int):
    return sb3_safe.make_env("LinearMDPSynthetic-v0", seed=seed, n_states=5, n_segments=20)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_no_violations_on_small_synthetic_instances(seed):
    env = _synthetic(seed)
    bound = float(np.linalg.norm(env.unwrapped.gamma_star, axis=1).max())  # S must bound ||gamma*|| (Assumption 1)
    model = SLUCBQVI(env, c_beta=0.01, safety_norm_bound=max(bound, np.sqrt(5)), seed=seed)
    model.learn(3 * 400, log_interval=0)
    assert model.episodes == 400 and model.violations == 0
    # it does leave the safe action: some planned point differs from phi_0
    assert np.abs(model.policy.plan.numpy() - model.spec.safe_features[None]).max() > 1e-3


def test_the_safe_action_is_always_certified():
    model = SLUCBQVI(ToyLinearMDP(), sigma=0.05, c_beta=0.01, seed=0)
    for _ in range(5):
        _candidates, certified, costs = model.certified_candidates()
        states = np.arange(model.spec.n_states)
        assert certified[:, states, model.spec.safe_index].all()
        np.testing.assert_array_equal(costs[:, states, model.spec.safe_index], model.spec.safe_costs[:1])
        model.learn(50, log_interval=0, reset_num_timesteps=False)


def test_the_certified_set_grows_to_the_true_safe_set_and_never_exceeds_it():
    env = ToyLinearMDP(n_states=4, n_actions=3, noise=0.05)
    true_safe = env.costs <= env.cost_threshold
    model = SLUCBQVI(env, sigma=0.05, beta_mode="split", seed=0)  # safe sets with beta_safe alone
    rng = np.random.default_rng(0)
    sizes = []
    for _ in range(6):
        for _ in range(2000):  # uniform exploration data straight into the statistics
            s, a = rng.integers(4), rng.integers(3)
            z = env.costs[s, a] + 0.05 * rng.normal()
            model.stats.add(0, model.spec.candidates[s, a], 0.0, z, -1)
        _, certified, _ = model.certified_candidates()
        assert not (certified[0] & ~true_safe).any()
        sizes.append(int(certified[0].sum()))
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1] == true_safe.sum()


def test_lsvi_ucb_is_slucb_without_a_safe_set_and_with_kappa_one(monkeypatch):
    lsvi = LSVIUCB(sb3_make_vec_env(ToyLinearMDP, n_envs=1, seed=4), c_beta=0.05)
    slucb = SLUCBQVI(
        sb3_make_vec_env(ToyLinearMDP, n_envs=1, seed=4), c_beta=0.05, kappa_coef=0.0, sigma=0.0, safety_norm_bound=0.0
    )
    spec = slucb.spec
    everything = np.ones((1, spec.n_states, spec.n_candidates), dtype=bool)
    monkeypatch.setattr(slucb, "certified_candidates", lambda: (spec.candidates[None], everything, None))
    actions = {"lsvi": [], "slucb": []}
    for name, model in (("lsvi", lsvi), ("slucb", slucb)):
        original = model._choose

        def record(state, step, original=original, name=name):
            action = original(state, step)
            actions[name].append(int(action))
            return action

        model._choose = record
        model.learn(300, log_interval=0)
    assert actions["lsvi"] == actions["slucb"] and len(actions["lsvi"]) == 300
    assert lsvi.violations == slucb.violations > 0


def test_penalised_lsvi_ucb_does_violate_on_an_instance_built_for_it():
    # action 0 earns 1 and costs 0.9 > tau: r - 0.8 c = 0.28 still beats the safe actions' reward at many states
    model = LSVIUCB(ToyLinearMDP(), cost_penalty=0.8, c_beta=0.01, seed=0).learn(300, log_interval=0)
    assert model.violations > 0


def test_save_load_round_trip(tmp_path):
    model = SLUCBQVI(_synthetic(0), c_beta=0.01, safety_norm_bound=4.0, seed=0).learn(3 * 50, log_interval=0)
    model.save(tmp_path / "slucb.zip")
    loaded = SLUCBQVI.load(tmp_path / "slucb.zip", env=_synthetic(0))
    for name, tensor in model.policy.state_dict().items():
        np.testing.assert_array_equal(loaded.policy.state_dict()[name].numpy(), tensor.numpy(), err_msg=name)
    np.testing.assert_array_equal(loaded.kappa, model.kappa)
    assert loaded.sigma == model.sigma == 0.01
    obs = {"state": np.arange(5), "step": np.array([0, 1, 2, 0, 1])}
    np.testing.assert_array_equal(loaded.predict(obs)[0], model.predict(obs)[0])
    for a, b in zip(loaded.certified_candidates(), model.certified_candidates(), strict=True):
        if a is not None:
            np.testing.assert_array_equal(a, b)


def test_frozen_lake_uses_the_envs_safety_gap_and_a_missing_gap_is_an_error():
    env = sb3_safe.make_env("FrozenLake10x10Safe-v0")
    model = SLUCBQVI(env, seed=0)
    assert model.min_safety_gap == 0.05 and model.sigma == 0.5
    assert model.kappa.max() == pytest.approx(2 * 1000 / 0.05 + 1)
    model.learn(1000, log_interval=0)
    assert model.violations == 0
    boundary = ToyLinearMDP()
    boundary.cost_threshold = float(boundary.costs.min(axis=1).max())  # one state's safe action costs exactly tau
    with pytest.raises(ValueError, match="costs tau itself"):
        SLUCBQVI(boundary, sigma=0.05)
    assert SLUCBQVI(boundary, sigma=0.05, min_safety_gap=0.01).kappa.max() == pytest.approx(2 * 5 / 0.01 + 1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"beta_mode": "double"}, "beta_mode"),
        ({"kappa_coef": -1.0}, "kappa_coef"),
        ({"min_safety_gap": 0.0}, "min_safety_gap"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SLUCBQVI(ToyLinearMDP(), sigma=0.05, **kwargs)


def test_missing_sigma_is_an_error():
    with pytest.raises(ValueError, match="sigma"):
        SLUCBQVI(ToyLinearMDP())


@pytest.mark.slow
def test_no_violations_over_twenty_seeds_for_both_safe_agents():
    from sb3_safe.linear.rslucb_qvi import RSLUCBQVI

    for seed in range(20):
        env = _synthetic(seed)
        bound = max(float(np.linalg.norm(env.unwrapped.gamma_star, axis=1).max()), np.sqrt(5))
        slucb = SLUCBQVI(env, c_beta=0.01, safety_norm_bound=bound, seed=seed).learn(3 * 200, log_interval=0)
        assert slucb.violations == 0, seed
        toy = ToyLinearMDP(seed=seed, noise=0.05)
        rslucb = RSLUCBQVI(toy, sigma=0.05, c_beta=0.01, seed=seed).learn(5 * 40, log_interval=0)
        assert rslucb.violations == 0, seed
