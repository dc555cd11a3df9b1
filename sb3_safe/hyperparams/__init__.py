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

NOT_CONSTRUCTOR_ARGS = ("n_envs", "n_timesteps", "env_kwargs")
"""Keys in the files that describe how to run, not how to build the algorithm (``load_hyperparams`` keeps them)."""


class HyperparameterFileError(ValueError):
    """A hyperparameter YAML file that cannot be parsed; the message gives the file and line."""


def _normalise(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _packaged_files() -> dict[str, str]:
    """``normalised algorithm name -> file name`` of the YAML files shipped beside this module."""
    names = (p.name for p in resources.files(__name__).iterdir() if p.name.endswith(".yml"))
    return {_normalise(name.removesuffix(".yml")): name for name in sorted(names)}


def has_hyperparams(algorithm: str) -> bool:
    """Whether a hyperparameter file ships for ``algorithm`` (``"SACLag"``, ``"sac_lag"`` and ``"sac-lag"`` match)."""
    return _normalise(algorithm) in _packaged_files()


def parse_yaml(text: str, source: str) -> Any:
    """Parse YAML text, naming ``source`` and the line of the first error.

    Raises:
        HyperparameterFileError: ``"<source>, line L, column C: <problem>"``.
    """
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error)
        raise HyperparameterFileError(f"Malformed YAML in {source}{where}: {problem}") from None


def _load_file(algorithm: str) -> dict[str, Any]:
    files = _packaged_files()
    name = files.get(_normalise(algorithm))
    if name is None:
        known = ", ".join(file.removesuffix(".yml") for file in files.values())
        raise ValueError(f"No hyperparameter file for algorithm '{algorithm}'. Known: {known}.")
    path = resources.files(__name__).joinpath(name)
    return parse_yaml(path.read_text(), str(path)) or {}


def merge_params(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``update``; nested mappings (e.g. ``policy_kwargs``) are merged key by key."""
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_params(merged[key], value)
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
        A dict of constructor arguments, plus the run settings the file gives (``n_envs``, the recommended number of
        environments; ``n_timesteps``, a full-length budget; ``env_kwargs``); see :func:`split_run_settings`.

    Raises:
        ValueError: For an unknown algorithm or preset.
    """
    config = _load_file(algorithm)
    params = copy.deepcopy(config.get("defaults", {}))
    family_name = _matching_family(config, env_id) if env_id is not None else None
    if family_name is not None:
        family = config["families"][family_name]
        params = merge_params(params, family.get("params", {}))
        for task in family.get("tasks", []):
            if re.search(task["match"], env_id or ""):
                params = merge_params(params, task["params"])
    if preset is not None:
        presets = config.get("presets", {})
        if preset not in presets:
            raise ValueError(
                f"Unknown preset '{preset}' for {algorithm}. Known: {', '.join(sorted(presets)) or 'none'}."
            )
        params = merge_params(params, presets[preset])
    return params


def split_run_settings(params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Separate constructor arguments from run settings (``n_envs``, ``n_timesteps``, ``env_kwargs``)."""
    run = {key: params[key] for key in NOT_CONSTRUCTOR_ARGS if key in params}
    return {key: value for key, value in params.items() if key not in NOT_CONSTRUCTOR_ARGS}, run
