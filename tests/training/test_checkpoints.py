"""Checkpoints: a full disk keeps the old one and says so; temporaries of killed writers are cleaned up."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import torchbp
from torchbp.cli import main
from torchbp.training import CheckpointError, checkpoints, load, load_checkpoint
from torchbp.training.checkpoints import remove_stale_temporaries, save_checkpoint


def _full_disk(*args: object, **kwargs: object) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_keeps_the_old_checkpoint_and_says_the_disk_is_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_checkpoint(tmp_path, {"epoch": 0})
    old = (tmp_path / "checkpoint.pt").read_bytes()
    monkeypatch.setattr(checkpoints.torch, "save", _full_disk)
    with pytest.raises(CheckpointError) as raised:
        save_checkpoint(tmp_path, {"epoch": 1})
    message = str(raised.value)
    assert "cannot write the checkpoint: the disk is full (No space left on device)" in message
    assert "the previous checkpoint is kept" in message and "--resume" in message
    assert (tmp_path / "checkpoint.pt").read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def test_fit_on_a_full_disk_stops_with_the_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = load("xor")
    calls = []
    real_save = torch.save

    def full_after_the_first(*args: object, **kwargs: object) -> None:
        calls.append(1)
        if len(calls) > 1:
            _full_disk()
        real_save(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(checkpoints.torch, "save", full_after_the_first)
    with pytest.raises(CheckpointError, match="the disk is full"):
        torchbp.fit(torchbp.nn.MLP([2, 4, 2]), (data.inputs, data.targets), epochs=3, verbose=False, logdir=tmp_path)
    assert load_checkpoint(tmp_path / "torchbp-run" / "version_0")["epoch"] == 0


def test_the_cli_reports_a_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(checkpoints.torch, "save", _full_disk)
    assert main(["train", "--dataset", "xor", "--epochs", "1", "--logdir", str(tmp_path)]) == 2
    assert "the disk is full" in capsys.readouterr().err


def test_stale_temporaries_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".checkpoint.pt.{dead.stdout.strip()}.tmp"
    live = tmp_path / f".checkpoint.pt.{os.getppid()}.tmp"
    stale.write_bytes(b"half")
    live.write_bytes(b"being written")
    assert remove_stale_temporaries(tmp_path) == [stale]
    assert not stale.exists() and live.exists()


def test_resume_cleans_up_what_a_killed_writer_left(tmp_path: Path) -> None:
    data = load("xor")
    train = (data.inputs[:80], data.targets[:80])
    torch.manual_seed(0)
    torchbp.fit(torchbp.nn.MLP([2, 4, 2]), train, epochs=1, verbose=False, logdir=tmp_path, name="run")
    directory = tmp_path / "run" / "version_0"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = directory / f".checkpoint.pt.{dead.stdout.strip()}.tmp"
    stale.write_bytes(b"half a checkpoint")
    torch.manual_seed(0)
    torchbp.fit(torchbp.nn.MLP([2, 4, 2]), train, epochs=2, verbose=False, resume=directory)
    assert not stale.exists()
    assert load_checkpoint(directory)["epoch"] == 1


def test_the_settings_a_resume_keeps_carry_fits_own_defaults() -> None:
    """A value left at fit's default takes the run's: the table of fixed settings must know those defaults."""
    import inspect

    from torchbp.training.resume import FIXED

    defaults = {name: p.default for name, p in inspect.signature(torchbp.fit).parameters.items()}
    for key, default in FIXED.items():
        if key in defaults and key not in ("cost_options", "rule_options"):
            recorded = defaults[key] or 0 if key == "patience" else defaults[key]  # fit records no patience as 0
            assert recorded == default, key


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT], ids=["ENOSPC", "EDQUOT"])
def test_a_full_disk_or_quota_is_reported_as_a_full_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(checkpoints.torch, "save", fail)
    with pytest.raises(CheckpointError) as raised:
        save_checkpoint(tmp_path, {"epoch": 0})
    assert str(raised.value) == (
        f"{tmp_path / 'checkpoint.pt'}: cannot write the checkpoint: the disk is full ({os.strerror(code)}); "
        "no earlier checkpoint exists; free some space, then resume the run with --resume"
    )


_PAYLOAD = {"epoch": 0, "model": {}, "rule": {}, "history": [], "rng": {}, "config": {}}


@pytest.mark.parametrize("missing", sorted(_PAYLOAD))
def test_a_checkpoint_without_one_of_its_fields_is_refused(tmp_path: Path, missing: str) -> None:
    save_checkpoint(tmp_path, {key: value for key, value in _PAYLOAD.items() if key != missing})
    with pytest.raises(CheckpointError, match=r"expected a torchbp checkpoint with keys \['config', 'epoch', "):
        load_checkpoint(tmp_path)
    save_checkpoint(tmp_path, _PAYLOAD)
    assert load_checkpoint(tmp_path) == _PAYLOAD


def test_a_temporary_of_this_process_is_stale_too(tmp_path: Path) -> None:
    # a temporary named with this process's id was left by an earlier, failed write of this process
    own = tmp_path / f".checkpoint.pt.{os.getpid()}.tmp"
    own.write_bytes(b"half")
    assert remove_stale_temporaries(tmp_path) == [own]
    assert not own.exists()


def test_a_temporary_of_another_users_process_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def not_yours(pid: int, signal_number: int) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted")

    others = tmp_path / ".checkpoint.pt.1.tmp"
    others.write_bytes(b"being written")
    monkeypatch.setattr(checkpoints.os, "kill", not_yours)
    assert remove_stale_temporaries(tmp_path) == []
    assert others.exists()
