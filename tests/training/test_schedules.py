"""Learning-rate schedules: stepped per epoch, plateau on the validation loss, state across a kill and resume."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest
import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, ReduceLROnPlateau, StepLR

import torchbp
from torchbp.cli import main
from torchbp.training import load_checkpoint
from torchbp.training.schedules import named_schedule


def _model() -> torchbp.nn.MLP:
    torch.manual_seed(0)
    return torchbp.nn.MLP([64, 16, 10])


def _without_time(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in epoch.items() if k != "seconds"} for epoch in history]


def test_history_lr_is_the_rate_each_epoch_trained_with(digits: tuple) -> None:
    seen: list[float] = []

    class Rates:
        @torchbp.hookimpl
        def torchbp_step_end(self, run) -> None:
            seen.append(run.rule.param_groups[0]["lr"])

    history = torchbp.fit(
        _model(),
        digits[0],
        epochs=5,
        batch_size=100,
        lr=2.0,
        scheduler=lambda rule: StepLR(rule, step_size=2, gamma=0.5),
        callbacks=[Rates()],
        verbose=False,
    )
    assert [h["lr"] for h in history] == [2.0, 2.0, 1.0, 1.0, 0.5]
    assert seen == [2.0, 2.0, 2.0, 2.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5]  # two steps per epoch


def test_plateau_reads_the_validation_loss(digits: tuple) -> None:
    built: list[ReduceLROnPlateau] = []

    def schedule(rule: torch.optim.Optimizer) -> ReduceLROnPlateau:
        built.append(ReduceLROnPlateau(rule, factor=0.5, patience=1))
        return built[-1]

    # lr ≈ 0: the loss moves by far less than the plateau's threshold, so epochs 2 and 3 are no
    # better than epoch 1, and the rate is halved after the third
    history = torchbp.fit(_model(), digits[0], val_data=digits[1], epochs=4, lr=1e-6, scheduler=schedule, verbose=False)
    assert [h["lr"] for h in history] == [1e-6, 1e-6, 1e-6, 5e-7]
    trained = torchbp.fit(_model(), digits[0], val_data=digits[1], epochs=3, lr=1.0, scheduler=schedule, verbose=False)
    assert built[-1].best == min(h["val_loss"] for h in trained) != min(h["train_loss"] for h in trained)


def test_bad_schedulers_are_explained(digits: tuple) -> None:
    with pytest.raises(TypeError, match="scheduler: the function must return a torch.optim.lr_scheduler"):
        torchbp.fit(_model(), digits[0], scheduler=lambda rule: 3, verbose=False)  # type: ignore[arg-type,return-value]
    other = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1)
    with pytest.raises(ValueError, match="drives another optimizer"):
        torchbp.fit(_model(), digits[0], scheduler=lambda rule: StepLR(other, 1), verbose=False)
    with pytest.raises(ValueError, match="unknown schedule 'linear'; known: step, cosine, plateau"):
        named_schedule("linear", {}, 10)
    with pytest.raises(ValueError, match="unknown option\\(s\\) gama; StepLR takes step_size, gamma"):
        named_schedule("step", {"gama": 0.5}, 10)


def test_named_schedules_build_their_torch_schedulers() -> None:
    rule = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    cosine = named_schedule("cosine", {}, 7)(rule)
    assert isinstance(cosine, CosineAnnealingLR) and cosine.T_max == 7
    step = named_schedule("step", {"step_size": 3, "gamma": 0.5}, 7)(rule)
    assert isinstance(step, StepLR) and (step.step_size, step.gamma) == (3, 0.5)
    with pytest.raises(ValueError, match="lr-schedule plateau .*threshold_mode='sideways'"):
        named_schedule("plateau", {"threshold_mode": "sideways"}, 7)(rule)
    with pytest.raises(ValueError, match=r"lr-schedule plateau: option factor expects a value in \[0, 1\)"):
        named_schedule("plateau", {"factor": 2}, 7)


KILLED_RUN = """
import os, signal, sys, torch, torchbp
from torch.optim.lr_scheduler import StepLR
from torchbp.training import load

class Killer:
    @torchbp.hookimpl
    def torchbp_step_end(self, epoch, step):
        if epoch == 2 and step == 3:
            os.kill(os.getpid(), signal.SIGKILL)

data = load("digits")
train, val = data.split(0.2, seed=0)
torch.manual_seed(0)
torchbp.fit(torchbp.nn.MLP([64, 16, 10]), (train.inputs[:200], train.targets[:200]),
            val_data=(val.inputs[:100], val.targets[:100]), epochs=5, seed=5, logdir=sys.argv[1],
            name="killed", verbose=False, lr=2.0, momentum=0.5, callbacks=[Killer()],
            scheduler=lambda rule: StepLR(rule, step_size=1, gamma=0.7))
"""


def test_scheduler_state_survives_a_kill_and_resume(tmp_path: Path, digits: tuple) -> None:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(KILLED_RUN), str(tmp_path)], check=False)
    assert result.returncode == -signal.SIGKILL
    directory = tmp_path / "killed" / "version_0"
    checkpoint = load_checkpoint(directory)
    assert checkpoint["epoch"] == 1 and checkpoint["scheduler"]["name"] == "StepLR"
    assert checkpoint["scheduler"]["state"]["last_epoch"] == 2

    def schedule(rule: torch.optim.Optimizer) -> StepLR:
        return StepLR(rule, step_size=1, gamma=0.7)

    resumed_model = torchbp.nn.MLP([64, 16, 10])
    resumed = torchbp.fit(
        resumed_model, digits[0], val_data=digits[1], epochs=5, resume=directory, scheduler=schedule, verbose=False
    )
    torch.manual_seed(0)
    straight_model = torchbp.nn.MLP([64, 16, 10])
    straight = torchbp.fit(
        straight_model,
        digits[0],
        val_data=digits[1],
        epochs=5,
        seed=5,
        lr=2.0,
        momentum=0.5,
        scheduler=schedule,
        verbose=False,
    )
    assert _without_time(resumed) == _without_time(straight)
    assert [h["lr"] for h in straight] == pytest.approx([2.0 * 0.7**i for i in range(5)])
    for key, value in straight_model.state_dict().items():
        assert torch.equal(resumed_model.state_dict()[key], value)

    with pytest.raises(ValueError, match="trained with a StepLR learning-rate scheduler; pass the same scheduler="):
        torchbp.fit(torchbp.nn.MLP([64, 16, 10]), digits[0], epochs=6, resume=directory, verbose=False)
    with pytest.raises(ValueError, match="trained with a StepLR learning-rate scheduler, got a CosineAnnealingLR"):
        torchbp.fit(
            torchbp.nn.MLP([64, 16, 10]),
            digits[0],
            epochs=6,
            resume=directory,
            scheduler=lambda rule: CosineAnnealingLR(rule, 5),
            verbose=False,
        )


def test_cli_lr_schedule_is_saved_and_resumed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["train", "--dataset", "xor", "--layers", "2,6,2", "--epochs", "2", "--logdir", str(tmp_path)]
    assert (
        main(
            [*argv, "--lr-schedule", "step", "--lr-schedule-option", "step_size=1", "--lr-schedule-option", "gamma=0.5"]
        )
        == 0
    )
    directory = tmp_path / "xor" / "version_0"
    config = tomllib.loads((directory / "config.toml").read_text())
    assert config["lr_schedule"] == "step" and config["lr_schedule_options"] == {"step_size": 1, "gamma": 0.5}
    assert main(["train", "--resume", str(directory), "--epochs", "3"]) == 0
    assert [h["lr"] for h in load_checkpoint(directory)["history"]] == [3.0, 1.5, 0.75]
    assert main(["train", "--resume", str(directory), "--lr-schedule", "cosine"]) == 2
    assert "only --epochs and --device may change, got --lr-schedule" in capsys.readouterr().err
    assert (
        main(["train", "--no-log", "--dataset", "xor", "--lr-schedule", "step", "--lr-schedule-option", "gama=1"]) == 2
    )
    assert "unknown option(s) gama" in capsys.readouterr().err


@pytest.mark.parametrize(
    "schedule",
    [lambda rule: StepLR(rule, step_size=2, gamma=0.5), lambda rule: CosineAnnealingLR(rule, T_max=4)],
    ids=["step", "cosine"],
)
def test_a_resumed_schedule_continues_where_the_run_left_it(tmp_path: Path, digits: tuple, schedule) -> None:
    train = (digits[0][0][:50], digits[0][1][:50])
    options = dict(lr=1.0, seed=3, scheduler=schedule, verbose=False)
    straight = torchbp.fit(_model(), train, epochs=4, **options)
    torchbp.fit(_model(), train, epochs=1, logdir=tmp_path, **options)
    resumed = torchbp.fit(
        _model(), train, epochs=4, resume=tmp_path / "torchbp-run" / "version_0", scheduler=schedule, verbose=False
    )
    oracle = schedule(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0))
    expected = []
    for _ in range(4):
        expected.append(oracle.get_last_lr()[0])
        oracle.optimizer.step()
        oracle.step()
    assert [h["lr"] for h in resumed] == [h["lr"] for h in straight] == pytest.approx(expected, rel=1e-12)
    assert _without_time(resumed) == _without_time(straight)
