"""The console: a progress bar with rate and ETA, a summary line at the end, `torchbp --version`."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch

import torchbp
from torchbp.cli import main
from torchbp.training import load
from torchbp.training.console import progress_line


def test_progress_line_shows_rate_and_eta() -> None:
    line = progress_line(epoch=1, epochs=5, step=9, steps=40, loss=0.25, elapsed=2.0)
    assert line == "epoch 2/5 [######..................] 10/40  loss 0.2500  5.0 steps/s  ETA 0:06"
    assert progress_line(0, 1, 99, 4000, 1.0, 1.0).endswith("100.0 steps/s  ETA 0:39")


def test_the_bar_is_drawn_on_a_terminal(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    data = load("digits")
    torchbp.fit(torchbp.nn.MLP([64, 8, 10]), (data.inputs[:50], data.targets[:50]), epochs=1, batch_size=10)
    err = capsys.readouterr().err
    assert re.search(r"epoch 1/1 \[#+\] 5/5  loss \d\.\d{4}  [\d,.]+ steps/s  ETA 0:00", err)


def test_a_run_ends_with_a_summary_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--dataset", "xor", "--layers", "2,6,2", "--epochs", "4", "--no-log"]) == 0
    lines = capsys.readouterr().out.splitlines()
    accuracies = [float(line.split("val acc")[1].split("%")[0]) for line in lines if line.startswith("epoch")]
    best = max(range(len(accuracies)), key=accuracies.__getitem__)
    match = re.fullmatch(r"done: 4 epochs in 0:\d\d; best val acc ([\d.]+)% at epoch (\d)", lines[-1])
    assert match is not None, lines[-1]
    assert float(match[1]) == pytest.approx(accuracies[best], abs=0.01) and int(match[2]) == best + 1


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"torchbp {torchbp.__version__} (torch {torch.__version__})"
