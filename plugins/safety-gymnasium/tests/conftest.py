"""Fixtures for the safety-gymnasium plugin tests (constants live in ``_sg_helpers``)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from _sg_helpers import SHIM_PATH


@pytest.fixture
def run_python(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run a Python snippet in a fresh interpreter (so that import order is under the test's control).

    The snippet gets ``SHIM_PATH`` (the path of ``_shim.py``) as a global. ``env_update`` entries with value
    ``None`` are removed from the environment.
    """

    def run(
        code: str, env_update: dict[str, str | None] | None = None, timeout: float = 180
    ) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ)
        for key, value in (env_update or {}).items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        script = f"SHIM_PATH = {str(SHIM_PATH)!r}\n" + textwrap.dedent(code)
        return subprocess.run(
            [sys.executable, "-c", script],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    return run
