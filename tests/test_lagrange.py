"""The Lagrange multiplier: rises over the limit, falls to 0 under it, for both update rules; state round trip."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest

from sb3_safe.common.lagrange import LagrangeMultiplier

OVER, UNDER = 40.0, 5.0  # episode costs against a limit of 25


@pytest.mark.parametrize(
    "kwargs",
    [
        {"method": "gradient", "parameterization": "projected", "learning_rate": 0.05},
        {"method": "gradient", "parameterization": "log", "init": 0.1, "learning_rate": 0.05},
        {"method": "gradient", "parameterization": "softplus", "init": 0.1, "learning_rate": 0.05},
        {"method": "pid"},
    ],
)
def test_rises_over_the_limit_and_falls_to_zero_under_it(kwargs):
    multiplier = LagrangeMultiplier(**kwargs)
    start = multiplier.value[0]
    over = [multiplier.update(OVER, 25.0)[0] for _ in range(50)]
    assert over[-1] > start + 0.1 and all(b >= a - 1e-12 for a, b in itertools.pairwise(over))
    under = [multiplier.update(UNDER, 25.0)[0] for _ in range(400)]
    assert under[-1] < 0.02 * over[-1]  # back to (nearly) zero: exactly 0 when projected or PID
    if kwargs["method"] == "pid" or kwargs.get("parameterization") == "projected":
        assert under[-1] == 0.0
    assert min(under) >= 0.0


def test_pid_terms():
    multiplier = LagrangeMultiplier(method="pid", kp=0.1, ki=0.01, kd=0.5)
    assert multiplier.update(30.0, 25.0)[0] == pytest.approx(0.1 * 5 + 0.01 * 5)  # no derivative on the first
    assert multiplier.update(35.0, 25.0)[0] == pytest.approx(0.1 * 10 + 0.01 * 15 + 0.5 * 5)
    assert multiplier.update(20.0, 25.0)[0] == pytest.approx(max(0.0, 0.1 * -5 + 0.01 * 10))  # falling: no D


def test_several_constraints_move_independently():
    multiplier = LagrangeMultiplier(n_constraints=2, learning_rate=0.1)
    for _ in range(20):
        value = multiplier.update([30.0, 10.0], [25.0, 25.0])
    assert value[0] > 0.5 and value[1] == 0.0


def test_state_dict_round_trip_restores_the_next_update():
    for method in ("gradient", "pid"):
        multiplier = LagrangeMultiplier(method=method, learning_rate=0.05)
        for cost in (30.0, 40.0, 20.0):
            multiplier.update(cost, 25.0)
        clone = LagrangeMultiplier(method=method, learning_rate=0.05)
        # deep copies, as a file would give: torch shares Adam's step tensor between the two otherwise
        clone.load_state_dict(copy.deepcopy(multiplier.state_dict()))
        clone.optimizer.load_state_dict(copy.deepcopy(multiplier.optimizer.state_dict()))
        np.testing.assert_array_equal(clone.value, multiplier.value)
        np.testing.assert_array_equal(clone.update(33.0, 25.0), multiplier.update(33.0, 25.0))


def test_max_value_caps_lambda():
    multiplier = LagrangeMultiplier(method="pid", kp=10.0, max_value=2.0)
    assert multiplier.update(100.0, 25.0)[0] == 2.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "newton"}, "method"),
        ({"parameterization": "square"}, "parameterization"),
        ({"init": -1.0}, "init"),
        ({"parameterization": "log", "init": 0.0}, "init"),
        ({"parameterization": "softplus", "init": 0.0}, "init"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"max_value": 0.0}, "max_value"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LagrangeMultiplier(**kwargs)


def test_non_finite_costs_are_rejected():
    with pytest.raises(ValueError, match="finite"):
        LagrangeMultiplier().update(float("nan"), 25.0)
