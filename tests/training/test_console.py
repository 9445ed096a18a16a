"""The console: a progress bar with rate and ETA, a summary line at the end, `torchbp --version`."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import torchbp
from torchbp.cli import main
from torchbp.training import console, load
from torchbp.training.console import _duration, progress_line, summary_line


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


@pytest.mark.parametrize(
    "seconds, shown",
    [(0, "0:00"), (7.4, "0:07"), (59.5, "1:00"), (723, "12:03"), (3599.5, "1:00:00"), (3723.2, "1:02:03")],
)
def test_durations_are_rounded_to_the_second(seconds: float, shown: str) -> None:
    assert _duration(seconds) == shown


@pytest.mark.parametrize(
    "step, steps, elapsed, expected",
    [
        (0, 5, 0.5, "epoch 1/2 [#####...................] 1/5  loss 1.2346  2.0 steps/s  ETA 0:02"),
        (4, 5, 2.5, "epoch 1/2 [########################] 5/5  loss 1.2346  2.0 steps/s  ETA 0:00"),
        (2, 7, 0.0, "epoch 1/2 [##########..............] 3/7  loss 1.2346  inf steps/s  ETA 0:00"),
        (2999, 4000, 1.5, "epoch 1/2 [##################......] 3000/4000  loss 1.2346  2,000.0 steps/s  ETA 0:01"),
    ],
)
def test_progress_line_fills_the_bar_and_counts_the_steps_left(
    step: int, steps: int, elapsed: float, expected: str
) -> None:
    # the bar: round(24 · done) marks; the ETA: the steps left at the rate so far
    assert progress_line(0, 2, step, steps, 1.234567, elapsed) == expected


@pytest.mark.parametrize(
    "metrics, expected",
    [
        (
            {"train_loss": 0.1234567, "val_loss": 0.2345678, "val_accuracy": 0.955, "lr": 0.1, "seconds": 1.234},
            "epoch   3/12  train loss 0.12346  val loss 0.23457  val acc  95.50%  lr 0.1  (1.23 s)",
        ),
        ({"train_loss": 2.0, "lr": 3.0, "seconds": 0.5}, "epoch   3/12  train loss 2.00000  lr 3  (0.50 s)"),
    ],
)
def test_the_epoch_line(metrics: dict, expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    console.torchbp_epoch_end(run=SimpleNamespace(verbose=True, epochs=12), epoch=2, metrics=metrics)
    assert capsys.readouterr().out == expected + "\n"


def _history(**columns: list[float]) -> list[dict[str, float]]:
    rows = zip(*columns.values())
    return [{"epoch": i + 1, **dict(zip(columns, row))} for i, row in enumerate(rows)]


@pytest.mark.parametrize(
    "status, start, history, expected",
    [
        (
            "finished",
            0,
            _history(val_accuracy=[0.5, 0.9, 0.7]),
            "done: 3 epochs in 0:05; best val acc 90.00% at epoch 2",
        ),
        (
            "finished",
            2,
            _history(val_accuracy=[0.5, 0.6, 0.8]),
            "done: 1 epoch in 0:05; best val acc 80.00% at epoch 3",
        ),
        (
            "interrupted",
            2,
            _history(val_loss=[0.3, 0.1]),
            "interrupted: 0 epochs in 0:05; best val loss 0.10000 at epoch 2",
        ),
        (
            "failed",
            0,
            _history(val_loss=[0.5, 0.25, 0.4]),
            "failed: 3 epochs in 0:05; best val loss 0.25000 at epoch 2",
        ),
        ("finished", 0, _history(train_loss=[0.5, 0.25]), "done: 2 epochs in 0:05"),
    ],
)
def test_the_summary_counts_the_epochs_of_this_call_and_finds_the_best(
    status: str, start: int, history: list[dict[str, float]], expected: str
) -> None:
    run = SimpleNamespace(status=status, stop_reason=None, start_epoch=start)  # start: the epochs resumed from
    assert summary_line(run, history, 5.0) == expected


def test_the_progress_bar_stops_listening_when_the_run_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    data = load("digits")
    torchbp.fit(torchbp.nn.MLP([64, 8, 10]), (data.inputs[:20], data.targets[:20]), epochs=1, batch_size=10)
    assert not torchbp.get_plugin_manager().has_plugin("torchbp.training.console.progress")
