"""The resolved configuration of one training run, and how it is built from defaults, files and overrides.

Precedence, lowest first: the algorithm's packaged YAML (``sb3_safe/hyperparams``: defaults, then the task
family), a user file (``--conf-file``), ``--hyperparams key=value`` overrides, then the dedicated flags
(``--cost-limit``, ``--n-envs``, ``--n-timesteps``). Mappings such as ``policy_kwargs`` are merged key by key, as
in the packaged files. The result is saved as ``config.yaml`` in the run directory
and sent to W&B as the run config.
"""

from __future__ import annotations

import builtins
import collections.abc
import contextlib
import dataclasses
import difflib
import hashlib
import inspect
import math
import os
import re
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from sb3_safe.hyperparams import NOT_CONSTRUCTOR_ARGS, has_hyperparams, load_hyperparams, merge_params, parse_yaml
from sb3_safe.registry import get_algorithm, list_algorithms

DEFAULT_N_TIMESTEPS = 100_000
# Arguments the runner sets itself: users change them through the CLI's own flags, never as hyperparameters.
RUNNER_ARGS = ("env", "seed", "verbose", "tensorboard_log", "_init_setup_model")


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the problem and the fix."""


def resolve_algorithm_name(name: str) -> str:
    """The registered algorithm name for ``name``, ignoring case, ``_`` and ``-`` (``sac_lag`` -> ``SACLag``).

    Raises:
        UnknownAlgorithmError: With suggestions and every known name, if nothing matches.
    """
    wanted = _normalise(name)
    for known in list_algorithms():
        if _normalise(known) == wanted:
            return known
    get_algorithm(name)  # raises UnknownAlgorithmError with close matches and the known names
    return name


def _normalise(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


@cache
def accepted_arguments(algorithm_class: type) -> frozenset[str]:
    """Keyword arguments the algorithm's constructor accepts, following ``**kwargs`` up the class hierarchy."""
    names: set[str] = set()
    for klass in algorithm_class.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        parameters = inspect.signature(init).parameters.values()
        names.update(p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            break
    names.discard("self")
    return frozenset(names)


def parse_override(text: str) -> tuple[str, Any]:
    """Parse one ``key=value`` override; the value is YAML (``3e-4`` and ``1e6`` are read as numbers).

    Examples: ``batch_size=512``, ``policy_kwargs={net_arch: [64, 64]}``, ``dual_solver=scipy``.

    Raises:
        ConfigError: If there is no ``=`` or the key is empty.
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"Hyperparameter override '{text}' is not of the form key=value (e.g. batch_size=512).")
    value = parse_yaml(raw, f"the override '{text}'")
    if isinstance(value, str):  # YAML 1.1 reads 3e-4 as a string
        with contextlib.suppress(ValueError):
            value = float(value)
    return key, value


def load_conf_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a user hyperparameter file: a YAML mapping of constructor arguments (and run settings).

    Raises:
        ConfigError: If the file is missing or is not a mapping.
        HyperparameterFileError: If the YAML is malformed (with the file and line).
    """
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"Hyperparameter file {file} does not exist.")
    content = parse_yaml(file.read_text(), str(file))
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise ConfigError(f"{file} must hold a mapping of hyperparameters (key: value), not {type(content).__name__}.")
    return content


def check_hyperparameter_keys(algorithm: str, algorithm_class: type, keys: Iterable[str], source: str) -> None:
    """Refuse keys that are neither constructor arguments nor run settings, with close matches as suggestions.

    Raises:
        ConfigError: Naming each unknown key, its source, suggestions and where the valid keys are listed.
    """
    valid = (set(accepted_arguments(algorithm_class)) - set(RUNNER_ARGS)) | set(NOT_CONSTRUCTOR_ARGS)
    problems = []
    for key in keys:
        if key in RUNNER_ARGS:
            problems.append(f"'{key}' is set by the runner (use the command's own flag, e.g. --seed)")
        elif key not in valid:
            matches = difflib.get_close_matches(key, sorted(valid), n=3, cutoff=0.6)
            hint = f" (did you mean {', '.join(matches)}?)" if matches else ""
            problems.append(f"'{key}'{hint}")
    if problems:
        raise ConfigError(
            f"Unknown hyperparameter for {algorithm} in {source}: "
            + "; ".join(problems)
            + f".\nValid keys: {', '.join(sorted(valid))}."
        )


class _UnknownType(type):
    """Stands for an annotation name that cannot be resolved at run time (imported only for type checkers)."""

    def __getattr__(cls, name: str) -> _UnknownType:
        return cls

    def __getitem__(cls, item: Any) -> _UnknownType:
        return cls


class _Unknown(metaclass=_UnknownType):
    pass


class _Names(dict):  # type: ignore[type-arg]
    """Names for evaluating an annotation: the module's and the builtins, anything else is :class:`_Unknown`."""

    def __init__(self, module_globals: Mapping[str, Any]) -> None:
        super().__init__()
        self.module_globals = module_globals

    def __missing__(self, key: str) -> Any:
        if key in self.module_globals:
            return self.module_globals[key]
        return getattr(builtins, key, _Unknown)


@cache
def constructor_annotations(algorithm_class: type) -> dict[str, tuple[Any, str]]:
    """``{argument: (type, as written)}`` for the constructor's annotated keyword arguments (following ``**kwargs``).

    Annotations that name something importable only for type checkers resolve to a placeholder that accepts any
    value.
    """
    found: dict[str, tuple[Any, str]] = {}
    for klass in algorithm_class.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        parameters = inspect.signature(init).parameters.values()
        for parameter in parameters:
            if parameter.name in found or parameter.kind not in (
                parameter.POSITIONAL_OR_KEYWORD,
                parameter.KEYWORD_ONLY,
            ):
                continue
            annotation = parameter.annotation
            if annotation is parameter.empty:
                continue
            text = annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)
            text = text.replace("collections.abc.", "").replace("typing.", "")
            if isinstance(annotation, str):
                try:
                    annotation = eval(annotation, {}, _Names(getattr(init, "__globals__", {})))
                except Exception:  # an annotation we cannot read: accept any value
                    annotation = _Unknown
            found[parameter.name] = (annotation, text)
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            break
    return found


def _accepts(annotation: Any, value: Any) -> bool:
    """Whether ``value`` (plain YAML data) fits ``annotation``; annotations this does not understand accept anything."""
    if annotation is Any or annotation is _Unknown or isinstance(annotation, typing.TypeVar):
        return True
    origin = typing.get_origin(annotation)
    arguments = typing.get_args(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return any(_accepts(arm, value) for arm in arguments)
    if origin is typing.Literal:
        return value in arguments
    if annotation is None or annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if origin in (collections.abc.Callable,) or annotation is collections.abc.Callable:
        return callable(value)
    if origin is type or annotation is type:
        return isinstance(value, type)
    if origin is tuple or annotation is tuple:
        if not isinstance(value, list | tuple):
            return False
        if not arguments or (len(arguments) == 2 and arguments[1] is Ellipsis):
            return not arguments or all(_accepts(arguments[0], item) for item in value)
        return len(value) == len(arguments) and all(_accepts(a, item) for a, item in zip(arguments, value, strict=True))
    if origin in (list, collections.abc.Sequence) or annotation in (list, collections.abc.Sequence):
        return isinstance(value, list | tuple) and (not arguments or all(_accepts(arguments[0], v) for v in value))
    if origin in (dict, collections.abc.Mapping) or annotation in (dict, collections.abc.Mapping):
        return isinstance(value, dict)
    if isinstance(annotation, type):
        if annotation.__module__ == "numpy" and isinstance(value, list | tuple):  # np.ndarray from a YAML list
            return True
        try:
            return isinstance(value, annotation)
        except TypeError:  # a class that cannot be checked with isinstance
            return True
    return True


def _coerce(annotation: Any, value: Any) -> Any:
    """``"1e-3"`` as a float and ``1e6`` as an int where the annotation wants a number of that kind, else ``value``."""
    if _accepts(annotation, value):
        return value
    number = value
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
    if (
        isinstance(number, float)
        and math.isfinite(number)
        and number.is_integer()
        and _accepts(annotation, int(number))
    ):
        return int(number)
    return number if _accepts(annotation, number) else value


def check_hyperparameter_types(
    algorithm: str, algorithm_class: type, params: Mapping[str, Any], source: str
) -> dict[str, Any]:
    """Check each value against the constructor's annotation, before anything is built or written.

    Numbers written as text (``"3e-4"``, which YAML 1.1 reads as a string) become floats, and whole floats
    (``1e6``) become ints, where the annotation asks for them.

    Returns:
        ``params`` with those conversions.

    Raises:
        ConfigError: Naming each key whose value has the wrong type, the value, and the type expected.
    """
    annotations = constructor_annotations(algorithm_class)
    checked = dict(params)
    problems = []
    for key, value in params.items():
        if key not in annotations:
            continue
        annotation, text = annotations[key]
        value = _coerce(annotation, value)
        if _accepts(annotation, value):
            checked[key] = value
        else:
            problems.append(f"{key}={value!r} ({_type_name(value)}): {algorithm}'s {key} takes {text}")
    if problems:
        raise ConfigError(f"Wrong hyperparameter type in {source}: " + "; ".join(problems) + ".")
    return checked


def _type_name(value: Any) -> str:
    name = type(value).__name__
    named = {"str": "text", "NoneType": "null", "dict": "a mapping", "int": "an integer", "bool": "a boolean"}
    return named.get(name, f"a {name}")


_CREATOR_SUFFIX = re.compile(r"\s*was raised from the environment creator for .*$", re.DOTALL)


def env_kwargs_error(env: str, env_kwargs: Mapping[str, Any], error: Exception) -> ConfigError:
    """The ConfigError for an environment that refused its ``--env-kwargs`` (the gymnasium wrapper text dropped)."""
    given = " ".join(f"{key}={value!r}" for key, value in env_kwargs.items())
    reason = " ".join(_CREATOR_SUFFIX.sub("", str(error)).split())
    return ConfigError(f"--env-kwargs {given}: {env} refused them: {reason}")


def check_env_kwargs(env: str, env_kwargs: Mapping[str, Any]) -> None:
    """Make (and close) one environment with ``env_kwargs``, to refuse unknown options before anything is written.

    Raises:
        ConfigError: If the environment refuses them (``TypeError`` or ``ValueError``).
    """
    if not env_kwargs:
        return
    from sb3_safe.registry import make_env

    try:
        instance = make_env(env, **env_kwargs)
    except (TypeError, ValueError) as error:
        raise env_kwargs_error(env, env_kwargs, error) from None
    instance.close()


@dataclasses.dataclass
class RunConfig:
    """Everything that defines a training run; saved as ``config.yaml`` and used again by ``resume``.

    Attributes:
        algo: Registered algorithm name (e.g. ``"CVPO"``).
        env: Environment id.
        seed: Random seed (environment i of the VecEnv gets ``seed + i``).
        n_timesteps: Training budget in environment steps.
        n_envs: Number of parallel training environments.
        cost_limit: Per-episode cost limit used for evaluation and reporting (None: the algorithm has none).
        hyperparams: Constructor arguments, resolved.
        env_kwargs: Keyword arguments for every environment.
        eval_freq: Evaluate every this many environment steps (0: only at the end).
        eval_episodes: Episodes per evaluation.
        checkpoint_freq: Write a checkpoint every this many environment steps (0: only at the end).
        wandb_mode: A W&B mode (``"offline"``, ``"online"``, ``"disabled"``, ...).
        wandb_project: W&B project.
        sources: Where the hyperparameters came from (files and overrides), for the record.
        sb3_safe_version: Package version that wrote the run.
        code_version: Hash of the package's source files, compared on resume.
    """

    algo: str
    env: str
    seed: int = 0
    n_timesteps: int = DEFAULT_N_TIMESTEPS
    n_envs: int = 1
    cost_limit: float | None = None
    hyperparams: dict[str, Any] = dataclasses.field(default_factory=dict)
    env_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    eval_freq: int = 10_000
    eval_episodes: int = 5
    checkpoint_freq: int = 10_000
    wandb_mode: str = "offline"
    wandb_project: str = "sb3-safe"
    sources: list[str] = dataclasses.field(default_factory=list)
    sb3_safe_version: str = ""
    code_version: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain data for YAML and W&B."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "config") -> RunConfig:
        """Rebuild from :meth:`to_dict` output.

        Raises:
            ConfigError: For missing or unknown fields.
        """
        fields = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields)
        missing = sorted(name for name in ("algo", "env") if name not in data)
        if unknown or missing:
            raise ConfigError(f"{source} is not a run configuration (unknown: {unknown}, missing: {missing}).")
        return cls(**dict(data))

    def fingerprint(self) -> str:
        """SHA-256 of the settings that define the run (not the versions), to detect edits before a resume."""
        data = self.to_dict()
        data.pop("sb3_safe_version")
        data.pop("code_version")
        return hashlib.sha256(yaml.safe_dump(data, sort_keys=True).encode()).hexdigest()

    def run_name(self) -> str:
        """A readable name, e.g. ``cvpo-SafetyPointGoal1-v0-s0``."""
        return f"{self.algo.lower()}-{self.env.replace(':', '_').replace('/', '_')}-s{self.seed}"


@cache
def code_version() -> str:
    """``<version>+<12 hex digits>``: the package version and a hash of every ``.py`` file of ``sb3_safe``."""
    import sb3_safe

    root = Path(sb3_safe.__file__).parent
    digest = hashlib.sha256()
    for file in sorted(root.rglob("*.py")):
        digest.update(file.relative_to(root).as_posix().encode())
        digest.update(file.read_bytes())
    return f"{sb3_safe.__version__}+{digest.hexdigest()[:12]}"


def build_config(
    algo: str,
    env: str,
    *,
    seed: int = 0,
    n_timesteps: int | None = None,
    n_envs: int | None = None,
    cost_limit: float | None = None,
    overrides: Sequence[str] | Mapping[str, Any] = (),
    conf_file: str | os.PathLike[str] | None = None,
    preset: str | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
    eval_freq: int = 10_000,
    eval_episodes: int = 5,
    checkpoint_freq: int = 10_000,
    wandb_mode: str = "offline",
    wandb_project: str = "sb3-safe",
) -> RunConfig:
    """Resolve a run's configuration from the packaged defaults, a user file, overrides and flags.

    Args:
        algo: Algorithm name, matched against the registry ignoring case and ``_``/``-``.
        env: Environment id (checked against the installed plugins).
        seed: Random seed.
        n_timesteps: Budget in environment steps (default: the file's ``n_timesteps``, else 100k).
        n_envs: Parallel environments (default: the file's ``n_envs``, else 1).
        cost_limit: Per-episode cost limit (default: the file's ``cost_limit``).
        overrides: ``key=value`` strings (or a mapping) applied over the files.
        conf_file: A user YAML mapping of hyperparameters, applied before ``overrides``.
        preset: A named preset of the packaged file.
        env_kwargs: Keyword arguments for each environment (merged over the file's ``env_kwargs``).
        eval_freq: Evaluation period in environment steps (0: only at the end).
        eval_episodes: Episodes per evaluation.
        checkpoint_freq: Checkpoint period in environment steps (0: only at the end).
        wandb_mode: A W&B mode: ``offline``, ``online`` or ``disabled`` (no W&B run).
        wandb_project: W&B project name.

    Returns:
        The resolved configuration.

    Raises:
        UnknownAlgorithmError, UnknownEnvironmentError: With suggestions and the known names.
        ConfigError: For unknown hyperparameter keys, invalid values, or a cost limit given to an algorithm without
            one.
        HyperparameterFileError: For a malformed YAML file (file and line).
    """
    from sb3_safe.registry import is_known_env, make_env

    name = resolve_algorithm_name(algo)
    algorithm_class = get_algorithm(name)
    if not is_known_env(env):
        make_env(env)  # raises UnknownEnvironmentError listing the known ids and their plugins
    sources = []
    params: dict[str, Any] = {}
    if has_hyperparams(name):
        params = load_hyperparams(name, env, preset=preset)
        sources.append(f"sb3_safe/hyperparams ({name}{', preset ' + preset if preset else ''})")
    elif preset is not None:
        raise ConfigError(f"--preset {preset}: {name} has no packaged hyperparameter file with presets.")
    if conf_file is not None:
        user = load_conf_file(conf_file)
        check_hyperparameter_keys(name, algorithm_class, user, str(conf_file))
        user = check_hyperparameter_types(name, algorithm_class, user, str(conf_file))
        params = merge_params(params, user)
        sources.append(str(conf_file))
    pairs = dict(overrides) if isinstance(overrides, Mapping) else dict(parse_override(o) for o in overrides)
    check_hyperparameter_keys(name, algorithm_class, pairs, "--hyperparams")
    pairs = check_hyperparameter_types(name, algorithm_class, pairs, "--hyperparams")
    params = merge_params(params, pairs)
    if pairs:
        sources.append("--hyperparams " + " ".join(f"{k}={v}" for k, v in pairs.items()))

    file_env_kwargs = dict(params.pop("env_kwargs", None) or {})
    file_n_envs = params.pop("n_envs", None)
    file_n_timesteps = params.pop("n_timesteps", None)
    accepts_cost_limit = "cost_limit" in accepted_arguments(algorithm_class)
    if cost_limit is not None:
        if not accepts_cost_limit:
            raise ConfigError(
                f"{name} takes no cost limit: its safety threshold comes from the environment "
                "(the linear-MDP protocol's tau). Drop --cost-limit."
            )
        params["cost_limit"] = float(cost_limit)
    limit = params.get("cost_limit") if accepts_cost_limit else None
    if isinstance(limit, list | tuple):
        limit = float(sum(limit))  # several constraints: report against the summed cost
    linear = bool(getattr(algorithm_class, "learns_by_episodes", False))
    resolved_n_envs = int(n_envs if n_envs is not None else (file_n_envs or 1))
    if linear and resolved_n_envs != 1:
        raise ConfigError(f"{name} plans for a single environment: use --n-envs 1 (got {resolved_n_envs}).")
    config = RunConfig(
        algo=name,
        env=env,
        seed=int(seed),
        n_timesteps=int(n_timesteps if n_timesteps is not None else (file_n_timesteps or DEFAULT_N_TIMESTEPS)),
        n_envs=resolved_n_envs,
        cost_limit=None if limit is None else float(limit),
        hyperparams=params,
        env_kwargs={**file_env_kwargs, **dict(env_kwargs or {})},
        eval_freq=int(eval_freq),
        eval_episodes=int(eval_episodes),
        checkpoint_freq=int(checkpoint_freq),
        wandb_mode=wandb_mode,
        wandb_project=wandb_project,
        sources=sources,
    )
    validate_config(config)
    return config


def validate_config(config: RunConfig) -> None:
    """Check the run settings.

    Raises:
        ConfigError: Naming the bad setting and the valid range.
    """
    from sb3_safe.common.wandb_logger import WANDB_MODES

    checks = [
        (config.n_timesteps >= 1, f"--n-timesteps must be >= 1, got {config.n_timesteps}"),
        (config.n_envs >= 1, f"--n-envs must be >= 1, got {config.n_envs}"),
        (config.eval_freq >= 0, f"--eval-freq must be >= 0 (0: only at the end), got {config.eval_freq}"),
        (config.eval_episodes >= 1, f"--eval-episodes must be >= 1, got {config.eval_episodes}"),
        (config.checkpoint_freq >= 0, f"--checkpoint-freq must be >= 0, got {config.checkpoint_freq}"),
        (
            config.wandb_mode in WANDB_MODES,
            f"--wandb-mode must be one of {', '.join(WANDB_MODES)}, got {config.wandb_mode!r}",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message + ".")
