"""Default hyperparameters per algorithm and task family, kept in readable YAML files beside this module.

``load_hyperparams("cvpo", "SafetyPointGoal1-v0")`` returns the constructor arguments for that task: the file's
``defaults``, overridden by the first matching family and its matching task entries, then by a named preset.
"""

from __future__ import annotations

import copy
import re
from importlib import resources
from typing import Any

import yaml

NOT_CONSTRUCTOR_ARGS = ("n_envs",)
"""Keys in the files that describe how to run, not how to build the algorithm (``load_hyperparams`` keeps them)."""


def _load_file(algorithm: str) -> dict[str, Any]:
    name = f"{algorithm.lower()}.yml"
    try:
        text = resources.files(__name__).joinpath(name).read_text()
    except FileNotFoundError:
        known = sorted(
            p.name.removesuffix(".yml") for p in resources.files(__name__).iterdir() if p.name.endswith(".yml")
        )
        raise ValueError(f"No hyperparameter file for algorithm '{algorithm}'. Known: {', '.join(known)}.") from None
    return yaml.safe_load(text)


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _matching_family(config: dict[str, Any], env_id: str) -> str | None:
    for name, family in config.get("families", {}).items():
        if re.search(family["match"], env_id):
            return name
    return None


def task_family(algorithm: str, env_id: str) -> str | None:
    """The name of the family whose pattern matches ``env_id`` in the algorithm's file, or None."""
    return _matching_family(_load_file(algorithm), env_id)


def load_hyperparams(algorithm: str, env_id: str | None = None, preset: str | None = None) -> dict[str, Any]:
    """Default hyperparameters of ``algorithm`` for ``env_id`` (and an optional named preset).

    Args:
        algorithm: Algorithm name, e.g. ``"cvpo"`` (case-insensitive).
        env_id: Environment id; its family's settings override the defaults.
        preset: A named preset of the file (e.g. ``"orig_circle"``), applied last.

    Returns:
        A dict of constructor arguments, plus ``n_envs`` (the recommended number of environments).

    Raises:
        ValueError: For an unknown algorithm or preset.
    """
    config = _load_file(algorithm)
    params = copy.deepcopy(config.get("defaults", {}))
    family_name = _matching_family(config, env_id) if env_id is not None else None
    if family_name is not None:
        family = config["families"][family_name]
        params = _merge(params, family.get("params", {}))
        for task in family.get("tasks", []):
            if re.search(task["match"], env_id or ""):
                params = _merge(params, task["params"])
    if preset is not None:
        presets = config.get("presets", {})
        if preset not in presets:
            raise ValueError(
                f"Unknown preset '{preset}' for {algorithm}. Known: {', '.join(sorted(presets)) or 'none'}."
            )
        params = _merge(params, presets[preset])
    return params


def split_run_settings(params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Separate constructor arguments from run settings (``n_envs``)."""
    run = {key: params[key] for key in NOT_CONSTRUCTOR_ARGS if key in params}
    return {key: value for key, value in params.items() if key not in NOT_CONSTRUCTOR_ARGS}, run
