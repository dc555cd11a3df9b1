"""Tests of sb3_safe.common.wandb_logger: SB3 -> wandb logging, offline runs read back from disk, mode choice."""

from __future__ import annotations

import csv
import math
import socket
import struct
import sys
import threading
import warnings
import zlib
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch as th
from stable_baselines3.common.logger import Figure, Image, KVWriter, Video

from sb3_safe.common import wandb_offline
from sb3_safe.common.wandb_logger import (
    WandbOutputFormat,
    attach_wandb,
    configure_wandb_logger,
    finish_wandb,
    get_wandb_run,
    init_wandb_run,
    resolve_wandb_mode,
)
from sb3_safe.common.wandb_offline import OfflineRunFormatError, find_offline_runs, read_offline_run

FAKE_KEY = "0123456789abcdef0123456789abcdef01234567"  # 40 characters, the shape of a wandb API key


@pytest.fixture
def wandb_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Offline, silent wandb with every wandb file (and HOME/netrc) inside tmp_path; returns the wandb root."""
    home = tmp_path / "home"
    home.mkdir()
    root = tmp_path / "wandb_root"
    for variable in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL", "NETRC", "WANDB_ENTITY"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONSOLE", "off")
    monkeypatch.setenv("WANDB_DIR", str(root))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb_cache"))
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb_data"))
    monkeypatch.chdir(tmp_path)
    return root


def run_dir_of(run: Any) -> Path:
    """The offline-run-* folder of a run."""
    return Path(run.dir).parent


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


ROWS = {
    100: {
        "rollout/ep_rew_mean": -12.5,
        "rollout/ep_cost_mean": 3.0,
        "safety/cost_rate": 0.015,
        "safety/episodes_over_limit": 1,
        "train/x": 0.25,
    },
    250: {
        "rollout/ep_rew_mean": -8.75,
        "rollout/ep_cost_mean": 1.5,
        "safety/cost_rate": 0.0075,
        "safety/episodes_over_limit": 0,
        "train/x": -1.0e-3,
    },
    400: {
        "rollout/ep_rew_mean": 2.0,
        "rollout/ep_cost_mean": 0.0,
        "safety/cost_rate": 0.0,
        "safety/episodes_over_limit": 2,
        "train/x": 123456.789,
    },
}


def test_round_trip_wandb_and_csv(wandb_env: Path, tmp_path: Path) -> None:
    folder = tmp_path / "sb3_logs"
    logger = configure_wandb_logger(str(folder), format_strings=("csv",), project="rt", config={"seed": 3})
    run = get_wandb_run(logger)
    assert run is not None and run.settings.mode == "offline"
    assert Path(run.dir).is_relative_to(wandb_env)
    for step, row in ROWS.items():
        for key, value in row.items():
            # numpy scalars must arrive as plain numbers (torch scalars: see test_media_histogram_and_ownership)
            wrapped = np.float32(value) if key == "train/x" else value
            logger.record(key, np.float64(value) if key == "rollout/ep_cost_mean" else wrapped)
        logger.dump(step=step)
    finish_wandb(logger)

    offline = read_offline_run(run_dir_of(run))
    assert offline.run_id == run.id and offline.project == "rt"
    assert offline.config == {"seed": 3}
    assert [row["_step"] for row in offline.history] == list(ROWS)
    for logged, (step, expected) in zip(offline.history, ROWS.items(), strict=True):
        assert {k: v for k, v in logged.items() if not k.startswith("_")}.keys() == expected.keys()
        for key, value in expected.items():
            # float32 values are rounded by their dtype, everything else is exact
            assert logged[key] == pytest.approx(value, rel=1e-6), (step, key)
            assert isinstance(logged[key], (int, float)) and not isinstance(logged[key], bool)
    assert offline.summary["safety/episodes_over_limit"] == 2
    assert offline.series("rollout/ep_rew_mean") == [(100, -12.5), (250, -8.75), (400, 2.0)]

    csv_rows = read_csv(folder / "progress.csv")
    assert len(csv_rows) == len(ROWS)
    for csv_row, expected in zip(csv_rows, ROWS.values(), strict=True):
        assert set(csv_row) == set(expected)
        for key, value in expected.items():
            assert float(csv_row[key]) == pytest.approx(value, rel=1e-6)


def test_excluded_key_is_in_csv_but_not_in_wandb(wandb_env: Path, tmp_path: Path) -> None:
    folder = tmp_path / "logs"
    logger = configure_wandb_logger(str(folder), format_strings=("csv",), verbose=0)
    run = get_wandb_run(logger)
    logger.record("safety/cost_rate", 0.5)
    logger.record("safety/lagrange_debug", 7.0, exclude="wandb")
    logger.record("train/both_excluded", 1.0, exclude=("stdout", "wandb"))
    logger.record("train/text", "a string is skipped quietly")
    logger.dump(step=10)
    logger.close()  # the logger created the run, so closing it finishes the run

    history = read_offline_run(run_dir_of(run)).history
    assert len(history) == 1
    assert history[0]["safety/cost_rate"] == 0.5
    for key in ("safety/lagrange_debug", "train/both_excluded", "train/text"):
        assert key not in history[0]
    (csv_row,) = read_csv(folder / "progress.csv")
    assert float(csv_row["safety/lagrange_debug"]) == 7.0
    assert float(csv_row["train/both_excluded"]) == 1.0


def test_attach_wandb_on_sac(wandb_env: Path, tmp_path: Path) -> None:
    from stable_baselines3 import SAC

    class StepSpy(KVWriter):
        """Records the step of every dump (num_timesteps at dump time)."""

        def __init__(self) -> None:
            self.steps: list[int] = []

        def write(self, key_values: dict[str, Any], key_excluded: dict[str, tuple[str, ...]], step: int = 0) -> None:
            self.steps.append(step)

        def close(self) -> None:
            pass

    model = SAC(
        "MlpPolicy",
        "Pendulum-v1",
        learning_starts=50,
        batch_size=32,
        buffer_size=1_000,
        policy_kwargs={"net_arch": [16, 16]},
        seed=0,
        verbose=0,
        device="cpu",
    )
    folder = tmp_path / "sac"
    run = attach_wandb(model, folder=str(folder), project="sac-test", name="sac-smoke")
    spy = StepSpy()
    model.logger.output_formats.append(spy)
    model.learn(total_timesteps=400, log_interval=1)
    assert spy.steps == [200, 400] and model.num_timesteps == 400
    finish_wandb(model)

    offline = read_offline_run(run_dir_of(run))
    assert offline.name == "sac-smoke"
    assert offline.config["algorithm"] == "SAC"
    assert [row["_step"] for row in offline.history] == spy.steps
    assert [step for step, _ in offline.series("rollout/ep_rew_mean")] == spy.steps
    assert [step for step, _ in offline.series("train/actor_loss")] == spy.steps
    assert all(math.isfinite(value) for _, value in offline.series("train/actor_loss"))
    csv_rows = read_csv(folder / "progress.csv")
    assert [int(float(row["time/total_timesteps"])) for row in csv_rows] == spy.steps
    for csv_row, wandb_row in zip(csv_rows, offline.history, strict=True):
        assert wandb_row["rollout/ep_rew_mean"] == pytest.approx(float(csv_row["rollout/ep_rew_mean"]), rel=1e-6)


def test_media_histogram_and_ownership(wandb_env: Path) -> None:
    run = init_wandb_run("media", name="m")
    writer = WandbOutputFormat(run)
    assert not writer.finish_on_close
    frames = th.zeros((1, 4, 3, 8, 8), dtype=th.uint8)  # (N, T, C, H, W) as SB3 documents for Video
    frames[0, :, 0] = 200
    values = {"eval/video": Video(frames, fps=10), "train/hist": np.arange(10.0), "train/flag": np.bool_(True)}
    values |= {"train/tensor": th.tensor(2.5), "train/one": th.ones(1, 1), "train/none": None}
    figure = plt.figure(figsize=(1, 1))
    values |= {"eval/figure": Figure(figure, close=True), "eval/image": Image(th.rand(3, 6, 5), "CHW")}
    writer.write(values, dict.fromkeys(values, ("",)), step=5)
    writer.close()  # the run was passed in: still running, logging still works
    run.log({"after/close": 1}, step=6)
    finish_wandb(run)

    offline = read_offline_run(run_dir_of(run))
    video = offline.history[0]["eval/video"]
    assert video["_type"] == "video-file" and (run_dir_of(run) / "files" / video["path"]).is_file()
    assert offline.history[0]["train/hist"]["_type"] == "histogram"
    assert offline.history[0]["eval/figure"]["_type"] == "image-file" and not plt.fignum_exists(figure.number)
    assert {k: offline.history[0]["eval/image"][k] for k in ("_type", "height", "width")} == {
        "_type": "image-file",
        "height": 6,
        "width": 5,
    }
    assert offline.history[0]["train/flag"] is True
    assert offline.history[0]["train/tensor"] == 2.5 and offline.history[0]["train/one"] == 1.0
    assert "train/none" not in offline.history[0]
    assert offline.history[1] == {**offline.history[1], "_step": 6, "after/close": 1}


class FakeRun:
    """Stands in for a wandb run: records what the writer sends."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, Any], dict[str, Any]]] = []
        self.finished = False

    def log(self, row: dict[str, Any], **kwargs: Any) -> None:
        self.calls.append((row, kwargs))

    def finish(self, exit_code: int | None = None) -> None:
        self.finished = True


def test_writer_sends_python_numbers_with_explicit_step() -> None:
    run = FakeRun()
    writer = WandbOutputFormat(run)  # type: ignore[arg-type]
    values = {
        "train/f32": np.float32(0.5),
        "train/i64": np.int64(7),
        "train/tensor": th.tensor(1.25, dtype=th.float64),
        "train/int": 3,
        "rollout/text": "skipped quietly",
        "rollout/none": None,
        "safety/excluded": 9.0,
    }
    excluded = dict.fromkeys(values, ("",)) | {"safety/excluded": ("csv", "wandb")}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # strings and None are skipped without a warning
        writer.write(values, excluded, step=42)
        writer.write({"rollout/text": "only text"}, {"rollout/text": ("",)}, step=43)  # nothing to log: no row
    assert len(run.calls) == 1
    row, kwargs = run.calls[0]
    assert kwargs == {"step": 42}
    assert row == {"train/f32": 0.5, "train/i64": 7, "train/tensor": 1.25, "train/int": 3}
    assert [type(value) for value in row.values()] == [float, int, float, int]
    bad = {"eval/odd": object(), "eval/image": Image(np.zeros((4, 4)), "CHW"), "train/ok": 1.0}
    with pytest.warns(RuntimeWarning, match=r"cannot log 'eval/(odd|image)'") as caught:
        writer.write(bad, dict.fromkeys(bad, ("",)), step=44)
        writer.write(bad, dict.fromkeys(bad, ("",)), step=45)
    assert sorted(str(warning.message).split("'")[1] for warning in caught) == ["eval/image", "eval/odd"]  # once
    assert [row for row, _ in run.calls[1:]] == [{"train/ok": 1.0}, {"train/ok": 1.0}]
    writer.close()
    assert not run.finished  # a run passed in is not finished by close()
    WandbOutputFormat(run, finish_on_close=True).close()  # type: ignore[arg-type]
    assert run.finished
    with pytest.raises(TypeError, match="only used when no run is given"):
        WandbOutputFormat(run, project="p")  # type: ignore[arg-type]


def test_decreasing_step_warns(wandb_env: Path) -> None:
    writer = WandbOutputFormat(project="steps")
    writer.write({"a": 1.0}, {"a": ("",)}, step=10)
    with pytest.warns(RuntimeWarning, match="lower than the previous step 10"):
        writer.write({"a": 2.0}, {"a": ("",)}, step=3)
    writer.close()
    assert writer.finish_on_close


def test_several_runs_and_find_offline_runs(wandb_env: Path) -> None:
    first = init_wandb_run("multi", name="first")
    second = init_wandb_run("multi", name="second")  # both alive at once
    first.log({"v": 1}, step=1)
    second.log({"v": 2}, step=1)
    assert not read_offline_run(run_dir_of(first)).finished  # still running
    first.finish()  # returns before wandb has written the file: read with wait=
    assert read_offline_run(run_dir_of(first), wait=10).finished
    finish_wandb(second, exit_code=3)
    assert read_offline_run(run_dir_of(second)).exit_code == 3
    found = find_offline_runs(wandb_env)
    assert [path.name for path in found] == [run_dir_of(first).name, run_dir_of(second).name]
    assert find_offline_runs(wandb_env / "wandb") == found
    assert [read_offline_run(path).history[0]["v"] for path in found] == [1, 2]


def test_resolve_wandb_mode_precedence(wandb_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_wandb_mode("disabled") == "disabled"  # explicit beats WANDB_MODE=offline
    assert resolve_wandb_mode(" Online ") == "online"
    monkeypatch.setenv("WANDB_MODE", "online")
    assert resolve_wandb_mode() == "online"
    assert resolve_wandb_mode("offline") == "offline"
    monkeypatch.delenv("WANDB_MODE")
    assert resolve_wandb_mode() == "offline"  # no account configured
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    assert resolve_wandb_mode() == "online"
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert resolve_wandb_mode() == "offline"  # the env var beats credentials


@pytest.mark.parametrize("machine", ["api.wandb.ai", "api.forge.coreweave.com"])
def test_netrc_entry_means_online(wandb_env: Path, monkeypatch: pytest.MonkeyPatch, machine: str) -> None:
    monkeypatch.delenv("WANDB_MODE")
    netrc_file = Path.home() / ".netrc"
    netrc_file.write_text("machine example.org\n  login user\n  password secret\n")
    netrc_file.chmod(0o600)
    assert resolve_wandb_mode() == "offline"  # an entry for another host does not count
    netrc_file.write_text(f"machine {machine}\n  login user\n  password {FAKE_KEY}\n")
    assert resolve_wandb_mode() == "online"
    monkeypatch.setenv("WANDB_BASE_URL", "http://wandb.internal.example:8080")
    assert resolve_wandb_mode() == "offline"  # credentials for another server


def test_invalid_mode_errors(wandb_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match=r"Invalid wandb mode 'cloud' \(from the mode argument\)") as info:
        resolve_wandb_mode("cloud")
    assert "online, offline, disabled, shared" in str(info.value)
    monkeypatch.setenv("WANDB_MODE", "sometimes")
    with pytest.raises(ValueError, match="'sometimes' \\(from the WANDB_MODE environment variable\\)"):
        resolve_wandb_mode()
    with pytest.raises(ValueError, match="valid modes are"):
        init_wandb_run(mode="nope")


def test_missing_wandb_errors(wandb_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(ImportError, match=r"pip install wandb") as info:
        init_wandb_run()
    assert "could not be imported" in str(info.value) and "default dependencies" in str(info.value)
    with pytest.raises(ImportError, match="pip install wandb"):
        configure_wandb_logger(str(tmp_path / "logs"))
    with pytest.raises(ImportError, match="pip install wandb"):
        read_offline_run(tmp_path)
    monkeypatch.delenv("WANDB_MODE")
    assert resolve_wandb_mode() == "offline"  # mode resolution works without wandb
    netrc_file = Path.home() / ".netrc"
    netrc_file.write_text(f"machine api.wandb.ai login user password {FAKE_KEY}\n")
    assert resolve_wandb_mode() == "online"


def test_online_failure_is_a_clear_runtime_error(wandb_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A closed local port: nothing leaves the machine.
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    with pytest.raises(RuntimeError, match="set WANDB_MODE=offline") as info:
        init_wandb_run("unreachable", mode="online", init_timeout=1.0, offline_fallback=False)
    assert "wandb.init failed in online mode" in str(info.value)
    assert info.value.__cause__ is not None


@pytest.fixture
def silent_server() -> Any:
    """A local TCP server that accepts connections and never answers (a wandb server that hangs)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                accepted.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()
    for connection in accepted:
        connection.close()


def test_an_unanswering_server_falls_back_to_offline_with_a_sync_hint(
    wandb_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, silent_server: str
) -> None:
    # Credentials configured (so the resolved mode is online) and a server that never answers: nothing leaves the
    # machine, and the run must go on offline instead of waiting for wandb's own timeout and crashing.
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_BASE_URL", silent_server)
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.setenv("SB3_SAFE_WANDB_INIT_TIMEOUT", "2")
    with pytest.warns(UserWarning, match=r"could not start an online run within 2 s.*Logging offline.*wandb sync"):
        run = init_wandb_run("unreachable", dir=tmp_path / "run")
    try:
        assert run.settings.mode == "offline"
        run.log({"x": 1.0})
    finally:
        run.finish()
    assert find_offline_runs(tmp_path / "run" / "wandb")


@pytest.mark.parametrize(("value", "pattern"), [("soon", r"must be a number of seconds"), ("0", r"must be > 0")])
def test_a_bad_timeout_setting_is_a_clear_error(
    wandb_env: Path, monkeypatch: pytest.MonkeyPatch, value: str, pattern: str
) -> None:
    monkeypatch.setenv("SB3_SAFE_WANDB_INIT_TIMEOUT", value)
    with pytest.raises(ValueError, match=rf"SB3_SAFE_WANDB_INIT_TIMEOUT environment variable {pattern}"):
        init_wandb_run("p")


def test_not_an_offline_run_errors(wandb_env: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="No such wandb run"):
        read_offline_run(tmp_path / "missing")
    empty = tmp_path / "offline-run-20240101_000000-abc"
    empty.mkdir()
    with pytest.raises(OfflineRunFormatError, match=r"is not a wandb offline run directory: no run-\*\.wandb file"):
        read_offline_run(empty)
    (empty / "run-abc.wandb").write_bytes(b"SQLite format 3\x00 not a wandb file")
    with pytest.raises(OfflineRunFormatError, match="does not start with the ':W&B' header"):
        read_offline_run(empty)
    assert issubclass(OfflineRunFormatError, ValueError)
    with pytest.raises(FileNotFoundError):
        find_offline_runs(tmp_path / "nowhere")


def test_corruption_is_detected(wandb_env: Path) -> None:
    run = init_wandb_run("corrupt")
    run.log({"v": 1.0}, step=1)
    finish_wandb(run)
    file = next(run_dir_of(run).glob("run-*.wandb"))
    data = bytearray(file.read_bytes())
    # header: ':W&B', magic 0xBEE1 (little endian), version 0; then the first chunk header
    assert data[:7] == b":W&B\xe1\xbe\x00"
    checksum, length, chunk_type = struct.unpack_from("<IHB", data, 7)
    assert chunk_type == 1 and checksum == zlib.crc32(bytes([chunk_type]) + data[14 : 14 + length])
    data[14] ^= 0xFF
    file.write_bytes(bytes(data))
    with pytest.raises(OfflineRunFormatError, match="checksum mismatch at byte 7"):
        read_offline_run(file)


def test_large_records_span_blocks(wandb_env: Path) -> None:
    """Records longer than a 32 KiB block (FIRST/MIDDLE/LAST chunks) and many rows are reassembled."""
    run = init_wandb_run("big", config={"blob": "x" * 70_000})
    for step in range(1500):
        run.log({"train/x": step * 0.5}, step=step)
    finish_wandb(run)
    assert next(run_dir_of(run).glob("run-*.wandb")).stat().st_size > 3 * wandb_offline._BLOCK_SIZE
    offline = read_offline_run(run_dir_of(run))
    assert offline.config["blob"] == "x" * 70_000
    assert offline.series("train/x") == [(step, step * 0.5) for step in range(1500)]
