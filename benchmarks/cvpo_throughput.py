"""CVPO speed: end to end against SB3 SAC on the same task, and ms per gradient update at two fixed settings.

Part 1 trains CVPO and SB3's SAC on one task with matched networks, batch size, update-to-data ratio and torch
threads, in the same process, and prints env steps/s and ms per gradient update of each and their ratio, plus
CVPO's per-phase breakdown. Part 2 times CVPO's gradient update alone, on a replay buffer of random data:
FSRL's settings (128x128, batch 256, K=16, 1 M-step iteration, diagonal) and the paper code's Circle settings
(256x256, batch 300, K=64, 29 M-step iterations, full covariance).

Targets (this project's, 2 cores, 1 torch thread; latest figures in README.md, 'Benchmarks'): CVPO >= 0.4x SAC's
env steps/s; <= 5 ms per update at FSRL's settings; <= 140 ms at the paper's. Timings are printed, never asserted.

    python benchmarks/cvpo_throughput.py            # default budget
    python benchmarks/cvpo_throughput.py --quick    # a short smoke run
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import SAC
from stable_baselines3.common.logger import KVWriter, Logger

import sb3_safe
from sb3_safe.cvpo import CVPO

PHASES = ("time/critic_ms", "time/estep_q_ms", "time/dual_ms", "time/mstep_ms", "time/target_ms")


class _Capture(KVWriter):
    """Keeps every logged value, to read CVPO's phase timings back."""

    def __init__(self) -> None:
        self.values: dict[str, list[float]] = defaultdict(list)

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, Any], step: int = 0) -> None:
        for key, value in key_values.items():
            if isinstance(value, int | float):
                self.values[key].append(float(value))


def _timed_train(model: Any) -> dict[str, float]:
    """Wrap ``model.train`` to accumulate the time spent in gradient updates and their number."""
    totals = {"seconds": 0.0, "updates": 0}
    original = model.train

    def train(gradient_steps: int, batch_size: int) -> None:
        before = model._n_updates
        start = time.perf_counter()
        original(gradient_steps=gradient_steps, batch_size=batch_size)
        totals["seconds"] += time.perf_counter() - start
        totals["updates"] += model._n_updates - before

    model.train = train
    return totals


def end_to_end(env_id: str, steps: int, learning_starts: int, seed: int) -> None:
    net, batch, train_freq, utd = [128, 128], 256, 100, 0.2
    print(f"\n== End to end on {env_id}: {steps} steps, nets {net}, batch {batch}, UTD {utd}, K=16, 1 thread ==")
    results = {}
    for name in ("SAC", "CVPO"):
        env = sb3_safe.make_vec_env(env_id, n_envs=1, seed=seed, env_kwargs={"fast_reset": True})
        common = {"batch_size": batch, "learning_starts": learning_starts, "train_freq": train_freq, "seed": seed}
        if name == "SAC":
            model = SAC(
                "MlpPolicy", env, gradient_steps=int(train_freq * utd), policy_kwargs={"net_arch": net}, **common
            )
        else:
            model = CVPO("MlpPolicy", env, utd_ratio=utd, n_samples=16, policy_kwargs={"net_arch": net}, **common)
        capture = _Capture()
        model.set_logger(Logger(folder=None, output_formats=[capture]))
        totals = _timed_train(model)
        start = time.perf_counter()
        model.learn(steps, log_interval=1)
        wall = time.perf_counter() - start
        ms_per_update = 1e3 * totals["seconds"] / max(totals["updates"], 1)
        results[name] = (steps / wall, ms_per_update, totals["updates"], capture)
        print(
            f"{name:5s} {steps / wall:8.1f} env steps/s   {ms_per_update:7.2f} ms/update   {totals['updates']} updates"
        )
    ratio = results["CVPO"][0] / results["SAC"][0]
    print(f"CVPO / SAC env steps/s: {ratio:.2f}x (target >= 0.40x: {'met' if ratio >= 0.4 else 'NOT met'})")
    print(f"CVPO / SAC ms per update: {results['CVPO'][1] / results['SAC'][1]:.2f}x")
    capture = results["CVPO"][3]
    print("CVPO per-phase ms per update: " + ", ".join(f"{k[5:-3]} {np.mean(capture.values[k]):.2f}" for k in PHASES))


class _RandomEnv(gym.Env):
    """Random observations with a cost, and a fixed horizon: only its spaces matter for Part 2."""

    def __init__(self, obs_dim: int, act_dim: int) -> None:
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (act_dim,), np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        return self.observation_space.sample(), 0.0, False, False, {"cost": float(self.np_random.random() < 0.1)}


SETTINGS = {
    "fsrl": {
        "target_ms": 5.0,
        "kwargs": {
            "batch_size": 256,
            "n_samples": 16,
            "mstep_iters": 1,
            "policy_kwargs": {"net_arch": [128, 128], "covariance": "diag"},
        },
    },
    "orig_circle": {
        "target_ms": 140.0,
        "kwargs": {
            "batch_size": 300,
            "n_samples": 64,
            "mstep_iters": 29,
            "policy_kwargs": {"net_arch": [256, 256], "covariance": "full"},
        },
    },
}


def fixed_settings(obs_dim: int, act_dim: int, updates: int, seed: int) -> None:
    print(f"\n== ms per gradient update on random data (obs {obs_dim}, actions {act_dim}, 1 thread) ==")
    for name, setting in SETTINGS.items():
        env = gym.wrappers.TimeLimit(_RandomEnv(obs_dim, act_dim), max_episode_steps=300)
        # gradient_steps (not utd_ratio): train(gradient_steps=n) then runs exactly n updates.
        model = CVPO(
            "MlpPolicy", env, learning_starts=10**9, buffer_size=5000, gradient_steps=1, seed=seed, **setting["kwargs"]
        )
        model.set_logger(Logger(folder=None, output_formats=[capture := _Capture()]))
        model.learn(2000)  # fills the buffer with random transitions (no training before learning_starts)
        model.train(gradient_steps=3, batch_size=setting["kwargs"]["batch_size"])  # warm-up
        start = time.perf_counter()
        model.train(gradient_steps=updates, batch_size=setting["kwargs"]["batch_size"])
        ms = 1e3 * (time.perf_counter() - start) / updates
        model.logger.dump(step=model.num_timesteps)  # hands the phase timings of train() to the capture
        verdict = "met" if ms <= setting["target_ms"] else "NOT met"
        phases = ", ".join(f"{k[5:-3]} {capture.values[k][-1]:.2f}" for k in PHASES)
        print(f"{name:12s} {ms:8.2f} ms/update (target <= {setting['target_ms']:g}: {verdict})   [{phases}]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="SafetyPointGoal1-v0")
    parser.add_argument("--steps", type=int, default=6000, help="env steps per algorithm in Part 1")
    parser.add_argument("--updates", type=int, default=50, help="timed gradient updates per setting in Part 2")
    parser.add_argument("--obs-dim", type=int, default=60, help="Part 2 observation size (PointGoal1's is 60)")
    parser.add_argument("--act-dim", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    args = parser.parse_args()
    torch.set_num_threads(1)
    steps, updates = (1500, 5) if args.quick else (args.steps, args.updates)
    end_to_end(args.env, steps, learning_starts=min(1000, steps // 3), seed=args.seed)
    fixed_settings(args.obs_dim, args.act_dim, updates, args.seed)


if __name__ == "__main__":
    main()
