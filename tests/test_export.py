"""Policy files that load without unpickling: same actions as the model, evaluation, and refused bad files."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch as th
from safetensors.torch import save_file

import sb3_safe
from sb3_safe import CVPO, evaluate_safe_policy, export_policy, load_policy, make_vec_env
from sb3_safe.export import METADATA_KEY, PolicyFileError, read_policy_description
from sb3_safe.lagrangian import PPOLag, SACLag, TD3Lag

OBS = np.array([[0.0, 5.0], [2.5, 2.5], [4.0, 1.0], [-1.0, 6.0]], dtype=np.float32)
CASES = {
    "CVPO": (CVPO, {"buffer_size": 200, "learning_starts": 20, "policy_kwargs": {"net_arch": [16]}}),
    "SACLag": (SACLag, {"buffer_size": 200, "learning_starts": 20, "policy_kwargs": {"net_arch": [16]}}),
    "TD3Lag": (TD3Lag, {"buffer_size": 200, "learning_starts": 20, "policy_kwargs": {"net_arch": [16]}}),
    "PPOLag": (PPOLag, {"n_steps": 20, "batch_size": 20, "policy_kwargs": {"net_arch": [16]}}),
}


@pytest.mark.parametrize("name", list(CASES))
def test_an_exported_policy_acts_as_the_model_and_evaluates(toy_env_id, tmp_path, name):
    cls, kwargs = CASES[name]
    model = cls("MlpPolicy", make_vec_env(toy_env_id, n_envs=2, seed=0), cost_limit=1.0, seed=0, **kwargs)
    model.learn(80)
    path = export_policy(model, tmp_path / "policy.safetensors")
    assert read_policy_description(path)["algorithm"] == name

    def no_unpickling(*args, **kwargs):
        raise AssertionError("load_policy unpickled something")

    with pytest.MonkeyPatch.context() as patch:  # nothing on the load path may unpickle
        patch.setattr(pickle, "loads", no_unpickling)
        patch.setattr(pickle, "load", no_unpickling)
        patch.setattr(th, "load", no_unpickling)
        policy = load_policy(path)
    np.testing.assert_array_equal(policy.predict(OBS, deterministic=True)[0], model.predict(OBS, deterministic=True)[0])
    result = evaluate_safe_policy(policy, make_vec_env(toy_env_id, seed=3), n_eval_episodes=2)
    expected = evaluate_safe_policy(model, make_vec_env(toy_env_id, seed=3), n_eval_episodes=2)
    assert result.mean_return == pytest.approx(expected.mean_return) and result.mean_cost == expected.mean_cost


def _crafted(tmp_path, **changes) -> str:
    model = CVPO("MlpPolicy", "ToyConstrained-v0", buffer_size=100, policy_kwargs={"net_arch": [8]})
    path = export_policy(model, tmp_path / "good.safetensors")
    description = read_policy_description(path)
    description.update(changes)
    from safetensors.torch import load_file

    crafted = tmp_path / "crafted.safetensors"
    save_file(load_file(str(path)), str(crafted), metadata={METADATA_KEY: json.dumps(description)})
    return str(crafted)


@pytest.mark.parametrize(
    ("changes", "pattern"),
    [
        ({"policy_class": "os:system"}, r"only classes of sb3_safe, stable_baselines3 and torch"),
        ({"policy_class": "torch.nn:ReLU"}, r"not a BasePolicy class"),
        ({"arguments": {"activation_fn": {"__class__": "builtins:eval"}}}, r"only classes of sb3_safe"),
        ({"arguments": {"net_arch": [4]}}, r"do not fit the policy it describes"),
        ({"version": 99}, r"holds policy format 99"),
    ],
)
def test_a_crafted_or_mismatched_file_is_refused(toy_env_id, tmp_path, changes, pattern):
    with pytest.raises(PolicyFileError, match=pattern):
        load_policy(_crafted(tmp_path, **changes))


def test_files_that_are_not_policies_are_refused(tmp_path):
    with pytest.raises(PolicyFileError, match="No policy file"):
        load_policy(tmp_path / "missing.safetensors")
    plain = tmp_path / "plain.safetensors"
    save_file({"w": th.zeros(2)}, str(plain))
    with pytest.raises(PolicyFileError, match="not an sb3-safe policy"):
        load_policy(plain)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(PolicyFileError, match="not a readable safetensors file"):
        load_policy(broken)


def test_a_linear_agents_plan_exports_too(tmp_path):
    model = sb3_safe.LSVIUCB("FrozenLake10x10Safe-v0", safety="none", seed=0)
    model.learn(2 * model.policy.horizon)
    policy = load_policy(export_policy(model, tmp_path / "lsvi.safetensors"))
    obs = {"state": np.arange(10), "step": np.zeros(10, dtype=np.int64)}
    np.testing.assert_array_equal(policy.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])
    th.testing.assert_close(policy.plan, model.policy.plan)


def test_something_without_a_policy_is_refused(tmp_path):
    with pytest.raises(PolicyFileError, match="has no SB3 policy to export"):
        export_policy(object(), tmp_path / "x.safetensors")  # type: ignore[arg-type]
