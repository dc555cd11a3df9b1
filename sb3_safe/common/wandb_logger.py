"""Weights & Biases logging for Stable-Baselines3 models, offline by default.

SB3 metrics reach wandb only through an SB3 logger output format. This module provides one
(:class:`WandbOutputFormat`), helpers that build an SB3 :class:`~stable_baselines3.common.logger.Logger` with it
(:func:`configure_wandb_logger`, :func:`attach_wandb`). Offline runs are read back from disk by
:mod:`sb3_safe.common.wandb_offline`.

Mode selection (:func:`resolve_wandb_mode`): an explicit ``mode`` wins, then the ``WANDB_MODE`` environment
variable, then ``"online"`` when the user has configured wandb credentials (``WANDB_API_KEY``,
``WANDB_IDENTITY_TOKEN_FILE`` or a netrc entry for the wandb host), and ``"offline"`` otherwise. Nothing here
contacts the network unless the resolved mode is ``"online"`` or ``"shared"``.

Typical use::

    model = SAC("MlpPolicy", "Pendulum-v1")
    run = attach_wandb(model, folder="runs/sac", config={"seed": 0})
    model.learn(10_000)
    run.finish()  # or finish_wandb(model), which also closes SB3's CSV/JSON files

Offline runs can be uploaded later with ``wandb sync wandb/offline-run-*``.
"""

from __future__ import annotations

import netrc
import os
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import numpy as np
import torch as th
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.logger import Figure, HParam, Image, KVWriter, Logger, Video, configure

if TYPE_CHECKING:
    from wandb.sdk.wandb_run import Run

__all__ = [
    "DEFAULT_PROJECT",
    "WANDB_MODES",
    "WandbOutputFormat",
    "attach_wandb",
    "configure_wandb_logger",
    "finish_wandb",
    "get_wandb_run",
    "has_wandb_credentials",
    "init_wandb_run",
    "resolve_wandb_mode",
]

DEFAULT_PROJECT = "sb3-safe"
WANDB_MODES: tuple[str, ...] = ("online", "offline", "disabled", "shared")
"""The modes accepted by :func:`resolve_wandb_mode` (wandb's legacy ``dryrun``/``run`` are aliases)."""

_MODE_ALIASES = {"dryrun": "offline", "run": "online"}
_NETWORK_MODES = ("online", "shared")
_DEFAULT_HOST_URL = "https://api.wandb.ai"
_WRITER_NAME = "wandb"  # the name SB3's ``exclude=`` mechanism uses for this output format

_SKIP = object()  # sentinel: a logged value that has no wandb representation


# ----------------------------------------------------------------------------------------------------------------------
# Importing wandb
# ----------------------------------------------------------------------------------------------------------------------


def _import_wandb() -> ModuleType:
    """Import the ``wandb`` package lazily.

    Returns:
        The ``wandb`` module.

    Raises:
        ImportError: If ``wandb`` cannot be imported; the message says how to fix it.
    """
    try:
        import wandb
    except ImportError as exc:
        raise ImportError(
            f"sb3_safe's wandb logging needs the `wandb` package, which could not be imported ({exc}). "
            "wandb is one of sb3-safe's default dependencies: install it with `pip install wandb` "
            "(or reinstall sb3-safe)."
        ) from exc
    return wandb


# ----------------------------------------------------------------------------------------------------------------------
# Mode resolution
# ----------------------------------------------------------------------------------------------------------------------


def _validate_mode(mode: str, source: str) -> str:
    """Normalize a wandb mode and check it.

    Args:
        mode: The mode as given.
        source: Where the mode came from, for the error message.

    Returns:
        One of :data:`WANDB_MODES`.

    Raises:
        ValueError: If the mode is not a valid wandb mode.
    """
    normalized = str(mode).strip().lower()
    normalized = _MODE_ALIASES.get(normalized, normalized)
    if normalized not in WANDB_MODES:
        raise ValueError(f"Invalid wandb mode {mode!r} (from the {source}); valid modes are: {', '.join(WANDB_MODES)}.")
    return normalized


def _wandb_host_url() -> tuple[str, bool]:
    """Return the wandb server URL and whether it is the default one.

    Returns:
        ``(url, is_default)``: ``WANDB_BASE_URL`` if set, else wandb's default server.
    """
    configured = os.environ.get("WANDB_BASE_URL", "").strip()
    if configured:
        return configured, False
    try:
        from wandb.sdk.lib import urls
    except ImportError:
        return _DEFAULT_HOST_URL, True
    return str(urls.DEFAULT_BASE_URL), True


def _netrc_path() -> Path:
    """Return the netrc file wandb would read (``NETRC``, else ``~/.netrc``)."""
    configured = os.environ.get("NETRC")
    return Path(configured).expanduser() if configured else Path("~/.netrc").expanduser()


def _netrc_has_entry(hosts: Sequence[str]) -> bool:
    """Check the netrc file for a password entry for one of ``hosts`` (standard library only, no network).

    Args:
        hosts: Host names (netlocs) to look for.

    Returns:
        Whether one of the hosts has an entry with a password.
    """
    try:
        parsed = netrc.netrc(str(_netrc_path()))
    except (OSError, netrc.NetrcParseError):
        return False
    for host in hosts:
        entry = parsed.authenticators(host)
        if entry is not None and entry[2]:
            return True
    return False


def _netrc_has_wandb_key() -> bool:
    """Whether the netrc file holds an API key for the wandb host, read without network access.

    Uses wandb's own netrc reader when available (it knows the default host and its aliases), and the standard
    library otherwise or when wandb's reader rejects the entry (an invalid key still means the user meant to log
    in, and wandb will then report the problem itself).

    Returns:
        Whether an entry exists.
    """
    url, is_default = _wandb_host_url()
    try:
        from wandb.sdk.lib.wbauth import read_netrc_auth

        return read_netrc_auth(host=url) is not None
    except Exception:  # wandb missing, or a malformed key or URL: fall back to a plain lookup below
        pass
    hosts = [urlsplit(url).netloc]
    if is_default:
        hosts.append(urlsplit(_DEFAULT_HOST_URL).netloc)
    return _netrc_has_entry(hosts)


def has_wandb_credentials() -> bool:
    """Whether the user has configured wandb credentials, checked locally (no network).

    Credentials are a non-empty ``WANDB_API_KEY`` or ``WANDB_IDENTITY_TOKEN_FILE`` environment variable, or a
    netrc entry (``NETRC`` or ``~/.netrc``) for the wandb host (``WANDB_BASE_URL`` or wandb's default server).
    The key itself is not verified.

    Returns:
        True if credentials are configured.
    """
    for variable in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE"):
        if os.environ.get(variable, "").strip():
            return True
    return _netrc_has_wandb_key()


def resolve_wandb_mode(mode: str | None = None) -> str:
    """Choose the wandb mode: offline unless the user asked otherwise or has a wandb account configured.

    Precedence: the ``mode`` argument, then the ``WANDB_MODE`` environment variable, then ``"online"`` if
    :func:`has_wandb_credentials`, else ``"offline"``. wandb's settings files (``wandb offline``) are not read.

    Args:
        mode: An explicit mode, one of :data:`WANDB_MODES` (``"dryrun"`` and ``"run"`` are accepted as
            wandb's legacy aliases of ``"offline"`` and ``"online"``).

    Returns:
        The resolved mode, one of :data:`WANDB_MODES`.

    Raises:
        ValueError: If the explicit mode or ``WANDB_MODE`` is not a valid mode; the message lists the valid ones.
    """
    if mode is not None:
        return _validate_mode(mode, "mode argument")
    from_env = os.environ.get("WANDB_MODE", "").strip()
    if from_env:
        return _validate_mode(from_env, "WANDB_MODE environment variable")
    return "online" if has_wandb_credentials() else "offline"


# ----------------------------------------------------------------------------------------------------------------------
# Creating runs
# ----------------------------------------------------------------------------------------------------------------------


def _resolve_dir(directory: str | os.PathLike[str] | None) -> str:
    """Return the directory under which wandb creates its ``wandb/`` folder, creating it if needed.

    Args:
        directory: The requested directory; None means ``WANDB_DIR`` or else the current directory.

    Returns:
        An absolute path.
    """
    chosen = directory if directory is not None else (os.environ.get("WANDB_DIR") or os.getcwd())
    path = Path(chosen).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


DEFAULT_INIT_TIMEOUT = 15.0
"""Seconds :func:`init_wandb_run` lets ``wandb.init`` try to reach the server before it falls back to offline."""
INIT_TIMEOUT_ENV = "SB3_SAFE_WANDB_INIT_TIMEOUT"


def _init_timeout(init_timeout: float | None) -> float:
    """The explicit timeout, else ``SB3_SAFE_WANDB_INIT_TIMEOUT``, else the default; a clear error if not > 0."""
    source = "init_timeout"
    if init_timeout is None:
        raw = os.environ.get(INIT_TIMEOUT_ENV)
        if raw is None:
            return DEFAULT_INIT_TIMEOUT
        source = f"the {INIT_TIMEOUT_ENV} environment variable"
        try:
            init_timeout = float(raw)
        except ValueError:
            raise ValueError(f"{source} must be a number of seconds, got {raw!r}.") from None
    if not init_timeout > 0:
        raise ValueError(f"{source} must be > 0 seconds, got {init_timeout!r}.")
    return float(init_timeout)


def init_wandb_run(
    project: str = DEFAULT_PROJECT,
    *,
    name: str | None = None,
    config: Mapping[str, Any] | None = None,
    tags: Sequence[str] | None = None,
    mode: str | None = None,
    dir: str | os.PathLike[str] | None = None,
    group: str | None = None,
    init_timeout: float | None = None,
    console: str | None = None,
    reinit: str = "create_new",
    run_id: str | None = None,
    resume: str | None = None,
    offline_fallback: bool = True,
) -> Run:
    """Start a wandb run with a mode chosen by :func:`resolve_wandb_mode`.

    Args:
        project: wandb project name.
        name: Display name of the run (wandb generates one if None).
        config: Hyperparameters stored with the run.
        tags: Tags of the run.
        mode: Explicit mode; None resolves it (offline by default, online when credentials are configured).
        dir: Directory in which wandb creates its ``wandb/`` folder; None means ``WANDB_DIR`` or the current
            directory. Created if missing.
        group: wandb run group.
        init_timeout: Seconds ``wandb.init`` may take before it gives up on the server (None: the
            ``SB3_SAFE_WANDB_INIT_TIMEOUT`` environment variable, else :data:`DEFAULT_INIT_TIMEOUT`), so that an
            unreachable server does not hold training up for wandb's own 90 s.
        console: wandb console capture (``"off"``, ``"wrap"``, ...); None keeps wandb's default or
            ``WANDB_CONSOLE``.
        reinit: wandb's ``reinit`` policy. The default ``"create_new"`` lets several runs coexist in one process;
            it does not set ``wandb.run``, which this module never uses.
        run_id: A fixed run id (e.g. the one saved with a checkpoint, to continue the same run).
        resume: wandb's resume policy for ``run_id`` (``"allow"``, ``"must"``, ...); None starts a new run.
        offline_fallback: When ``wandb.init`` fails in online/shared mode (no network, a server that does not
            answer in time, bad credentials), warn and log offline instead, with the ``wandb sync`` command that
            uploads the run later. False raises instead.

    Returns:
        The wandb run. Finish it with ``run.finish()`` (or :func:`finish_wandb`).

    Raises:
        ImportError: If ``wandb`` cannot be imported.
        ValueError: If the mode is invalid.
        RuntimeError: If ``wandb.init`` fails in online/shared mode and ``offline_fallback`` is False; the message
            suggests ``WANDB_MODE=offline``. The mode is never changed silently: the fallback warns.
    """
    wandb = _import_wandb()
    resolved = resolve_wandb_mode(mode)
    timeout = _init_timeout(init_timeout)
    settings_kwargs: dict[str, Any] = {"init_timeout": timeout}
    if console is not None:
        settings_kwargs["console"] = console
    init_kwargs: dict[str, Any] = {
        "project": project,
        "name": name,
        "config": dict(config) if config is not None else None,
        "tags": list(tags) if tags is not None else None,
        "group": group,
        "mode": resolved,
        "dir": _resolve_dir(dir),
        "reinit": reinit,
        "settings": wandb.Settings(**settings_kwargs),
    }
    if run_id is not None:
        init_kwargs["id"] = run_id
    if resume is not None:
        init_kwargs["resume"] = resume
    try:
        return wandb.init(**init_kwargs)
    except Exception as exc:
        if resolved not in _NETWORK_MODES:
            raise
        if offline_fallback:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            warnings.warn(
                f"wandb.init could not start an {resolved} run within {timeout:g} s ({reason}). Logging offline "
                f"instead: upload the run later with `wandb sync {Path(init_kwargs['dir']) / 'wandb'}/offline-run-*`. "
                "Set WANDB_MODE=offline to skip the attempt, or SB3_SAFE_WANDB_INIT_TIMEOUT to wait longer.",
                stacklevel=2,
            )
            return wandb.init(**{**init_kwargs, "mode": "offline"})
        raise RuntimeError(
            f"wandb.init failed in {resolved} mode: {exc}\n"
            "To log without a wandb server, set WANDB_MODE=offline (or pass mode='offline'); offline runs are "
            "written under ./wandb and can be uploaded later with `wandb sync`."
        ) from exc


# ----------------------------------------------------------------------------------------------------------------------
# SB3 output format
# ----------------------------------------------------------------------------------------------------------------------


def _is_excluded(excluded: tuple[str, ...] | str | None) -> bool:
    """Whether SB3's exclusion entry for a key names the wandb output format.

    Args:
        excluded: The entry from SB3's ``key_excluded`` mapping.

    Returns:
        True if the key must not be sent to wandb.
    """
    if excluded is None:
        return False
    if isinstance(excluded, str):
        return excluded == _WRITER_NAME
    return _WRITER_NAME in excluded


def _to_numpy(value: Any) -> np.ndarray:
    """Convert a tensor or array-like to a numpy array on the CPU."""
    if isinstance(value, th.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _to_uint8(frames: np.ndarray) -> np.ndarray:
    """Convert image data to uint8, scaling floats in [0, 1] to [0, 255] (TensorBoard's convention)."""
    if frames.dtype == np.uint8:
        return frames
    if np.issubdtype(frames.dtype, np.floating) and frames.size and float(np.nanmax(frames)) <= 1.0:
        frames = frames * 255.0
    return np.clip(np.nan_to_num(frames), 0, 255).astype(np.uint8)


def _image_to_hwc(image: Any, dataformats: str) -> np.ndarray:
    """Reorder SB3 image data (``dataformats`` such as ``"HWC"``, ``"CHW"``, ``"NCHW"``, ``"HW"``) to HWC or HW.

    Args:
        image: Tensor or array.
        dataformats: One letter per axis among N, C, H, W. Only the first image of a batch is kept.

    Returns:
        An ``(H, W)`` or ``(H, W, C)`` array.

    Raises:
        ValueError: If ``dataformats`` does not match the array.
    """
    array = _to_numpy(image)
    layout = dataformats.upper()
    if len(layout) != array.ndim or set(layout) - set("NCHW") or not {"H", "W"} <= set(layout):
        raise ValueError(f"dataformats {dataformats!r} does not describe an array of shape {array.shape}")
    if "N" in layout:
        array = np.take(array, 0, axis=layout.index("N"))
        layout = layout.replace("N", "")
    order = [layout.index(axis) for axis in "HWC" if axis in layout]
    array = np.transpose(array, order)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    return array


def _video_frames_thwc(frames: Any) -> np.ndarray:
    """Turn SB3 video frames ``(N, T, C, H, W)`` or ``(T, C, H, W)`` into uint8 ``(T, H, W', C)``.

    A batch is tiled side by side along the width.
    """
    array = _to_numpy(frames)
    if array.ndim == 4:
        array = array[None]
    if array.ndim != 5:
        raise ValueError(f"video frames must be (N, T, C, H, W) or (T, C, H, W), got shape {array.shape}")
    batch, steps, channels, height, width = array.shape
    tiled = np.transpose(array, (1, 3, 0, 4, 2)).reshape(steps, height, batch * width, channels)
    return _to_uint8(tiled)


def _write_gif(frames: np.ndarray, fps: float, path: Path) -> Path:
    """Encode ``(T, H, W, C)`` uint8 frames as an animated GIF with Pillow.

    Args:
        frames: The frames.
        fps: Frames per second.
        path: Output file.

    Returns:
        ``path``.
    """
    from PIL import Image as PILImage

    images = [PILImage.fromarray(frame[:, :, 0] if frame.shape[2] == 1 else frame) for frame in frames]
    duration_ms = max(round(1000.0 / fps), 10) if fps and fps > 0 else 100
    images[0].save(path, save_all=True, append_images=images[1:], duration=duration_ms, loop=0)
    return path


class WandbOutputFormat(KVWriter):
    """SB3 output format that logs each ``logger.dump(step)`` as one wandb history row at ``step``.

    Numbers (python, numpy or single-element tensors) are logged as python numbers, larger arrays/tensors as
    ``wandb.Histogram``, SB3 ``Image``/``Figure`` as ``wandb.Image``, SB3 ``Video`` as a GIF ``wandb.Video``,
    ``HParam`` goes to the run config, and strings/None are skipped quietly. Keys recorded with
    ``exclude="wandb"`` (or a tuple containing ``"wandb"``) are skipped.

    The step is always passed explicitly (``run.log(row, step=step)``); wandb silently drops rows whose step is
    lower than a previous one, so a warning is issued when that happens (e.g. ``learn(reset_num_timesteps=True)``
    a second time on the same run).

    Args:
        run: The wandb run to log to. None creates one with :func:`init_wandb_run` and ``init_kwargs``.
        finish_on_close: Whether :meth:`close` finishes the run. Defaults to True only for a run created here;
            a run passed in is never finished unless this is True.
        **init_kwargs: Arguments of :func:`init_wandb_run`, only allowed when ``run`` is None.

    Raises:
        TypeError: If ``init_kwargs`` are given together with a run.
    """

    def __init__(self, run: Run | None = None, *, finish_on_close: bool | None = None, **init_kwargs: Any) -> None:
        if run is not None and init_kwargs:
            raise TypeError(f"init arguments {sorted(init_kwargs)} are only used when no run is given")
        created = run is None
        self.run: Run = init_wandb_run(**init_kwargs) if run is None else run
        self.finish_on_close = created if finish_on_close is None else finish_on_close
        self._last_step: int | None = None
        self._warned_keys: set[str] = set()
        self._closed = False

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, tuple[str, ...]], step: int = 0) -> None:
        """Log the non-excluded values as one wandb row at ``step``.

        Args:
            key_values: SB3's values for this dump.
            key_excluded: SB3's per-key exclusion tuples.
            step: The step (SB3 passes ``model.num_timesteps``).
        """
        with tempfile.TemporaryDirectory(prefix="sb3_safe_wandb_") as media_dir:
            row = self._build_row(key_values, key_excluded, Path(media_dir))
            if not row:
                return
            self._check_step(int(step))
            self.run.log(row, step=int(step))

    def close(self) -> None:
        """Finish the run if this writer owns it (see ``finish_on_close``); otherwise leave it running."""
        if self._closed:
            return
        self._closed = True
        if self.finish_on_close:
            finish_wandb(self.run)

    def _build_row(
        self, key_values: Mapping[str, Any], key_excluded: Mapping[str, Any], media_dir: Path
    ) -> dict[str, Any]:
        """Convert the values of one dump, dropping excluded and unsupported ones."""
        row: dict[str, Any] = {}
        for key, value in key_values.items():
            if _is_excluded(key_excluded.get(key)):
                continue
            converted = self._convert_or_warn(key, value, media_dir)
            if converted is not _SKIP:
                row[key] = converted
        return row

    def _convert_or_warn(self, key: str, value: Any, media_dir: Path) -> Any:
        """Convert one value; on failure warn once per key and skip it."""
        try:
            return self._convert(key, value, media_dir)
        except Exception as exc:
            self._warn_once(key, f"wandb logger: cannot log {key!r} ({type(value).__name__}): {exc}; skipped.")
            return _SKIP

    def _convert(self, key: str, value: Any, media_dir: Path) -> Any:
        """Map an SB3 logged value to what ``run.log`` accepts, or ``_SKIP``."""
        if value is None or isinstance(value, (str, bytes, np.str_, np.bytes_)):
            return _SKIP
        if isinstance(value, (bool, int, float)):
            return value
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, (th.Tensor, np.ndarray)):
            return self._convert_array(value)
        if isinstance(value, (Video, Figure, Image)):
            return self._convert_media(key, value, media_dir)
        if isinstance(value, HParam):
            self.run.config.update(dict(value.hparam_dict), allow_val_change=True)
            return _SKIP
        wandb = _import_wandb()
        if isinstance(value, wandb.data_types.WBValue):
            return value
        raise TypeError("unsupported value type")

    @staticmethod
    def _convert_array(value: th.Tensor | np.ndarray) -> Any:
        """Single numbers become python numbers, larger numeric arrays a ``wandb.Histogram``."""
        array = _to_numpy(value)
        if array.size == 0 or not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
            return _SKIP
        if array.size == 1:
            return array.reshape(()).item()
        return _import_wandb().Histogram(array.astype(np.float64).ravel())

    @staticmethod
    def _convert_media(key: str, value: Video | Figure | Image, media_dir: Path) -> Any:
        """SB3 ``Figure``/``Image`` become ``wandb.Image``; ``Video`` becomes a GIF ``wandb.Video``."""
        wandb = _import_wandb()
        if isinstance(value, Figure):
            converted = wandb.Image(value.figure)
            if value.close:
                import matplotlib.pyplot as plt

                plt.close(value.figure)
            return converted
        if isinstance(value, Image):
            if isinstance(value.image, str):
                return wandb.Image(value.image)
            return wandb.Image(_to_uint8(_image_to_hwc(value.image, value.dataformats)))
        safe_name = "".join(char if char.isalnum() else "_" for char in key)
        gif = _write_gif(_video_frames_thwc(value.frames), float(value.fps), media_dir / f"{safe_name}.gif")
        return wandb.Video(str(gif), format="gif")

    def _check_step(self, step: int) -> None:
        """Warn when the step goes backwards, since wandb would drop the row."""
        if self._last_step is not None and step < self._last_step:
            warnings.warn(
                f"wandb logger: step {step} is lower than the previous step {self._last_step}; wandb ignores rows "
                "logged at a lower step. Use learn(..., reset_num_timesteps=False) or a new run.",
                RuntimeWarning,
                stacklevel=3,
            )
        self._last_step = step if self._last_step is None else max(step, self._last_step)

    def _warn_once(self, key: str, message: str) -> None:
        """Issue ``message`` once per key."""
        if key not in self._warned_keys:
            self._warned_keys.add(key)
            warnings.warn(message, RuntimeWarning, stacklevel=4)


# ----------------------------------------------------------------------------------------------------------------------
# SB3 logger helpers
# ----------------------------------------------------------------------------------------------------------------------


def configure_wandb_logger(
    folder: str | None = None,
    format_strings: Sequence[str] = ("stdout", "csv"),
    run: Run | None = None,
    verbose: int = 1,
    **init_kwargs: Any,
) -> Logger:
    """Build an SB3 logger writing SB3's usual formats to ``folder`` and every dump to a wandb run.

    Args:
        folder: Folder for SB3's file formats (``progress.csv`` ...); None uses SB3's default
            (``SB3_LOGDIR`` or a temporary folder).
        format_strings: SB3 formats: ``"stdout"``, ``"log"``, ``"csv"``, ``"json"``, ``"tensorboard"``.
        run: The wandb run to log to; None creates one with :func:`init_wandb_run` (``init_kwargs``), and that run is
            then finished by ``logger.close()``.
        verbose: 0 drops ``"stdout"`` from ``format_strings`` (as SB3 does for ``verbose=0``).
        **init_kwargs: Arguments of :func:`init_wandb_run` (only when ``run`` is None).

    Returns:
        The logger; pass it to ``model.set_logger``.
    """
    writer = WandbOutputFormat(run, **init_kwargs)
    formats = [fmt for fmt in format_strings if verbose >= 1 or fmt != "stdout"]
    try:
        logger = configure(folder, formats)
    except BaseException:
        writer.close()  # do not leave a run we created behind
        raise
    logger.output_formats.append(writer)
    return logger


def get_wandb_run(logger: Logger) -> Run | None:
    """Return the run of the first :class:`WandbOutputFormat` of an SB3 logger, or None."""
    for output_format in logger.output_formats:
        if isinstance(output_format, WandbOutputFormat):
            return output_format.run
    return None


def attach_wandb(
    model: BaseAlgorithm,
    folder: str | None = None,
    format_strings: Sequence[str] = ("stdout", "csv"),
    run: Run | None = None,
    **init_kwargs: Any,
) -> Run:
    """Give an SB3 model a logger that also writes to wandb (via ``model.set_logger``).

    The model's ``verbose`` decides whether ``"stdout"`` is kept. The algorithm's class name is added to the run
    config as ``algorithm`` unless already set. The caller finishes the run: ``run.finish()``, or
    ``finish_wandb(model)``, which also closes SB3's files. A run created here is also finished by
    ``model.logger.close()``.

    Args:
        model: Any SB3 algorithm.
        folder: Folder for SB3's file formats (see :func:`configure_wandb_logger`).
        format_strings: SB3 formats.
        run: An existing run to log to; None creates one with :func:`init_wandb_run`.
        **init_kwargs: Arguments of :func:`init_wandb_run` (only when ``run`` is None).

    Returns:
        The wandb run the model logs to.
    """
    logger = configure_wandb_logger(
        folder, format_strings, run=run, verbose=int(getattr(model, "verbose", 1)), **init_kwargs
    )
    wandb_run = get_wandb_run(logger)
    assert wandb_run is not None
    wandb_run.config.setdefaults({"algorithm": type(model).__name__})
    model.set_logger(logger)
    return wandb_run


def finish_wandb(
    target: Run | Logger | BaseAlgorithm | None, *, exit_code: int | None = None, timeout: float = 10.0
) -> None:
    """Finish a wandb run and wait until its run file is complete; for an SB3 logger or model, also close its files.

    ``run.finish()`` returns before wandb's service has written the run file (in wandb 0.31 an offline run file
    can still hold only its 7-byte header right after ``finish()``). This waits, up to ``timeout`` seconds, for
    the file to end with the run's exit record, so that :func:`read_offline_run` sees everything.

    Args:
        target: A run, an SB3 logger built by :func:`configure_wandb_logger`, a model set up by
            :func:`attach_wandb`, or None (nothing to do).
        exit_code: Exit code recorded with the run (non-zero marks it failed).
        timeout: Seconds to wait for the run file; a warning is issued if it is not complete by then.
    """
    if target is None:
        return
    if isinstance(target, BaseAlgorithm):
        target = target.logger
    if isinstance(target, Logger):
        for output_format in target.output_formats:
            if isinstance(output_format, WandbOutputFormat):
                output_format.finish_on_close = False
                finish_wandb(output_format.run, exit_code=exit_code, timeout=timeout)
        target.close()
        return
    target.finish(exit_code=exit_code)
    _wait_for_run_file(target, timeout)


def _wait_for_run_file(run: Run, timeout: float) -> None:
    """Wait until the run's ``run-<id>.wandb`` file holds its exit record (no-op without a local run file)."""
    settings = getattr(run, "settings", None)
    sync_file = getattr(settings, "sync_file", None)
    if not sync_file or getattr(settings, "mode", None) == "disabled":
        return
    path = Path(sync_file)
    from sb3_safe.common.wandb_offline import _wait_until_complete

    if path.exists() and not _wait_until_complete(path, timeout):
        warnings.warn(
            f"wandb run file {path} was not complete {timeout:g} s after run.finish(); it may lack the last rows.",
            RuntimeWarning,
            stacklevel=3,
        )
