"""Test-wide environment: W&B offline (never the network), MuJoCo rendering headless."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ["WANDB_MODE"] = "offline"
os.environ.setdefault("WANDB_SILENT", "true")
