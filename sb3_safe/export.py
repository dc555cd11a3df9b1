"""A policy file that is safe to load from anywhere: weights in safetensors, the constructor arguments in JSON.

SB3's model zips and pickled replay buffers run code when they are loaded (they are pickles), so a model file from
someone else is as trusted as a script from them. :func:`export_policy` writes a model's policy as a
`safetensors <https://github.com/huggingface/safetensors>`_ file: the tensors of ``policy.state_dict()`` plus, in
the file's metadata, a JSON description of how to build the policy (its class, the observation and action spaces,
its constructor arguments). :func:`load_policy` rebuilds the policy from that description and loads the tensors
without unpickling anything. Classes named in the file are imported only from ``sb3_safe``, ``stable_baselines3``
and ``torch``, and must be policies, activation modules, optimizers or feature extractors; anything else is refused.

The loaded policy has SB3's ``predict``, so :func:`~sb3_safe.evaluate_safe_policy` and ``sb3-safe eval`` take it
like a model::

    sb3-safe export runs/cvpo-goal1-s1 policy.safetensors
    policy = sb3_safe.load_policy("policy.safetensors")
    sb3_safe.evaluate_safe_policy(policy, "SafetyPointGoal1-v0", n_eval_episodes=10)
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

FORMAT = "sb3-safe-policy"
FORMAT_VERSION = 1
METADATA_KEY = "sb3_safe"
_TRUSTED_MODULES = ("sb3_safe.", "stable_baselines3.", "torch.")
_CLASS_KINDS: dict[str, type] = {
    "policy_class": BasePolicy,
    "activation_fn": th.nn.Module,
    "optimizer_class": th.optim.Optimizer,
    "features_extractor_class": BaseFeaturesExtractor,
}


class PolicyFileError(ValueError):
    """A policy file that cannot be written or read; the message says why and what to do."""


# --- spaces -------------------------------------------------------------------------------------------------------


def _space_to_json(space: spaces.Space) -> dict[str, Any]:
    if isinstance(space, spaces.Box):
        return {
            "type": "Box",
            "low": space.low.tolist(),
            "high": space.high.tolist(),
            "shape": list(space.shape),
            "dtype": str(space.dtype),
        }
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, spaces.MultiDiscrete):
        return {"type": "MultiDiscrete", "nvec": space.nvec.tolist()}
    if isinstance(space, spaces.MultiBinary):
        return {"type": "MultiBinary", "n": np.asarray(space.n).tolist()}
    if isinstance(space, spaces.Dict):
        return {"type": "Dict", "spaces": {key: _space_to_json(value) for key, value in space.spaces.items()}}
    raise PolicyFileError(f"Cannot export a policy over a {type(space).__name__} space (Box, Discrete, "
                          "MultiDiscrete, MultiBinary and Dict are supported).")  # fmt: skip


def _space_from_json(data: Mapping[str, Any]) -> spaces.Space:
    kind = data.get("type")
    if kind == "Box":
        dtype = np.dtype(data["dtype"])
        low = np.asarray(data["low"], dtype=dtype).reshape(data["shape"])
        return spaces.Box(low, np.asarray(data["high"], dtype=dtype).reshape(data["shape"]), dtype=dtype)
    if kind == "Discrete":
        return spaces.Discrete(int(data["n"]), start=int(data.get("start", 0)))
    if kind == "MultiDiscrete":
        return spaces.MultiDiscrete(np.asarray(data["nvec"]))
    if kind == "MultiBinary":
        return spaces.MultiBinary(data["n"])
    if kind == "Dict":
        return spaces.Dict({key: _space_from_json(value) for key, value in data["spaces"].items()})
    raise PolicyFileError(f"Unknown space type {kind!r} in the policy file.")


# --- constructor arguments ----------------------------------------------------------------------------------------


def _class_name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _trusted_class(name: str, kind: str) -> type:
    """Import ``module:qualname`` if the module is trusted and the class is of the expected kind."""
    module_name, _, qualname = name.partition(":")
    if kind not in _CLASS_KINDS:
        raise PolicyFileError(f"The policy file names the class {name!r} for {kind}, where no class is expected.")
    base = _CLASS_KINDS[kind]
    if not qualname or not module_name.startswith(_TRUSTED_MODULES):
        raise PolicyFileError(
            f"The policy file names the class {name!r} for {kind}: only classes of sb3_safe, stable_baselines3 "
            "and torch are loaded from a policy file."
        )
    try:
        target: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as error:
        message = f"The policy file names {name!r} for {kind}, which is not installed here ({error})."
        raise PolicyFileError(message) from None
    if not (isinstance(target, type) and issubclass(target, base)):
        raise PolicyFileError(f"The policy file names {name!r} for {kind}, which is not a {base.__name__} class.")
    return target


def _encode(key: str, value: Any) -> Any:
    if isinstance(value, type):
        if key not in _CLASS_KINDS:
            raise PolicyFileError(f"Cannot export the policy argument {key}={value!r}: classes are only supported "
                                  f"for {', '.join(sorted(_CLASS_KINDS))}.")  # fmt: skip
        return {"__class__": _class_name(value)}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_encode(key, item) for item in value]
    if isinstance(value, Mapping):
        return {str(k): _encode(f"{key}.{k}", v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    raise PolicyFileError(
        f"Cannot export the policy argument {key}={value!r} ({type(value).__name__}): a policy file holds plain data "
        "(numbers, strings, lists, dicts) and the classes of torch, SB3 and sb3-safe only."
    )


def _decode(key: str, value: Any) -> Any:
    if isinstance(value, Mapping):
        if set(value) == {"__class__"}:
            return _trusted_class(str(value["__class__"]), key.split(".")[0])
        return {k: _decode(f"{key}.{k}", v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(key, item) for item in value]
    return value


def _constant_schedule(_: float) -> float:
    return 0.0  # a loaded policy is for acting; its optimizer is rebuilt but never stepped


# --- public API ---------------------------------------------------------------------------------------------------


def export_policy(
    model: BaseAlgorithm | BasePolicy, path: str | os.PathLike[str], info: Mapping[str, Any] | None = None
) -> Path:
    """Write ``model``'s policy to a safetensors file that :func:`load_policy` reads without unpickling.

    Args:
        model: An SB3 algorithm (CVPO, SAC-Lag, PPO-Lag, plain SB3 ...) or its policy.
        path: The file to write (``.safetensors`` by convention); its folder is created.
        info: Plain data stored beside the description (``sb3-safe export`` puts the run's environment, cost
            limit and seed there, for ``sb3-safe eval``).

    Returns:
        The path written.

    Raises:
        PolicyFileError: If the model has no SB3 policy, or a constructor argument is not plain data.
    """
    from safetensors.torch import save_file

    policy = model if isinstance(model, BasePolicy) else getattr(model, "policy", None)
    if not isinstance(policy, BasePolicy):
        raise PolicyFileError(
            f"{type(model).__name__} has no SB3 policy to export; save it with model.save() and load that file only "
            "from a source you trust."
        )
    arguments = dict(policy._get_constructor_parameters())
    observation_space, action_space = arguments.pop("observation_space"), arguments.pop("action_space")
    takes_schedule = arguments.pop("lr_schedule", None) is not None
    description = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "algorithm": type(model).__name__ if not isinstance(model, BasePolicy) else None,
        "policy_class": _class_name(type(policy)),
        "observation_space": _space_to_json(observation_space),
        "action_space": _space_to_json(action_space),
        "arguments": {key: _encode(key, value) for key, value in arguments.items()},
        "takes_lr_schedule": takes_schedule,
        "info": _encode("info", dict(info or {})),
    }
    tensors = {key: value.detach().cpu().contiguous() for key, value in policy.state_dict().items()}
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(target), metadata={METADATA_KEY: json.dumps(description)})
    return target


def read_policy_description(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON description stored in a policy file (class, spaces, constructor arguments), unchecked."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except FileNotFoundError:
        raise PolicyFileError(f"No policy file at {path}.") from None
    except Exception as error:  # safetensors reports a damaged header as its own error types
        raise PolicyFileError(f"{path} is not a readable safetensors file ({error}).") from None
    if METADATA_KEY not in metadata:
        raise PolicyFileError(f"{path} is a safetensors file but not an sb3-safe policy (no {METADATA_KEY!r} entry).")
    description = json.loads(metadata[METADATA_KEY])
    if description.get("format") != FORMAT or int(description.get("version", 0)) > FORMAT_VERSION:
        raise PolicyFileError(f"{path} holds policy format {description.get('version')!r}; this sb3-safe reads "
                              f"version {FORMAT_VERSION}.")  # fmt: skip
    return description


def load_policy(path: str | os.PathLike[str], device: th.device | str = "cpu") -> BasePolicy:
    """Build the policy described in a file written by :func:`export_policy` and load its weights.

    Nothing is unpickled: the tensors come from safetensors, the description from JSON, and the classes it names
    only from sb3_safe, stable_baselines3 and torch.

    Args:
        path: The policy file.
        device: Where to put the policy.

    Returns:
        The policy in evaluation mode; ``policy.predict(obs, deterministic=True)`` acts as the model did.

    Raises:
        PolicyFileError: If the file is missing, damaged, not an sb3-safe policy, or names an untrusted class.
    """
    from safetensors.torch import load_file

    description = read_policy_description(path)
    policy_class = _trusted_class(str(description["policy_class"]), "policy_class")
    arguments = {key: _decode(key, value) for key, value in description["arguments"].items()}
    if description.get("takes_lr_schedule", True):  # policies with an optimizer (not the linear agents')
        arguments["lr_schedule"] = _constant_schedule
    factory: Callable[..., BasePolicy] = policy_class
    try:
        policy = factory(
            observation_space=_space_from_json(description["observation_space"]),
            action_space=_space_from_json(description["action_space"]),
            **arguments,
        )
    except (TypeError, ValueError) as error:
        raise PolicyFileError(f"{path} describes a {policy_class.__name__} that cannot be built ({error}).") from None
    try:
        policy.load_state_dict(load_file(str(path), device="cpu"))
    except RuntimeError as error:
        raise PolicyFileError(f"The weights in {path} do not fit the policy it describes ({error}).") from None
    policy.set_training_mode(False)
    return policy.to(device)


__all__ = ["PolicyFileError", "export_policy", "load_policy", "read_policy_description"]
