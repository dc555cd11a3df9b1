"""The ``sb3-safe`` command in a child process, started as from a shell (shared by the kill-and-resume tests)."""

from __future__ import annotations

import os
import subprocess
import sys


def cli_process(*args: str) -> subprocess.Popen[str]:
    """``python -m sb3_safe ARGS`` with W&B offline, its output (stdout and stderr) on a pipe.

    Without WANDB_SERVICE the child starts its own W&B service, as from a shell: otherwise it would share this
    process's service, which keeps a killed child's run open.
    """
    env = {key: value for key, value in os.environ.items() if key != "WANDB_SERVICE"}
    return subprocess.Popen(
        [sys.executable, "-m", "sb3_safe", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**env, "WANDB_MODE": "offline"},
    )
