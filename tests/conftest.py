"""Shared test setup: the toy environments, one torch thread (W&B offline and headless GL: ../conftest.py)."""

from __future__ import annotations

import pytest
import torch
from toy_env import register_toy_envs

torch.set_num_threads(1)
register_toy_envs()


@pytest.fixture
def toy_env_id() -> str:
    """Id of the toy constrained environment (horizon 20, cost 1 inside the hazard)."""
    return "ToyConstrained-v0"
