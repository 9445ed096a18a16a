"""Early stopping: a flat loss stops the run, the best weights come back when asked, --patience."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import torch

import torchbp
from torchbp.cli import main
from torchbp.training.stopping import EarlyStopping


def _model() -> torchbp.nn.MLP:
    torch.manual_seed(0)
    return torchbp.nn.MLP([64, 16, 10])


class Weights:
    """Each epoch's weights, as the epoch ended."""

    def __init__(self) -> None:
        self.per_epoch: list[dict[str, torch.Tensor]] = []

    @torchbp.hookimpl
    def torchbp_epoch_end(self, run) -> None:
        self.per_epoch.append({k: v.clone() for k, v in run.model.state_dict().items()})


@pytest.mark.parametrize("monitor", ["val_loss", "val_accuracy", "train_loss"])
def test_a_flat_metric_stops_after_patience_epochs(digits: tuple, monitor: str) -> None:
    statuses: list[str] = []

    class Status:
        @torchbp.hookimpl
        def torchbp_train_end(self, run) -> None:
            statuses.append(run.status)

    history = torchbp.fit(
        _model(),
        digits[0],
        val_data=digits[1],
        epochs=20,
        lr=0.0,
        patience=3,
        monitor=monitor,
        callbacks=[Status()],
        verbose=False,
    )
    assert len(history) == 4  # the first epoch sets the best, three more without a better one
    values = [h[monitor] for h in history]  # flat; a training loss up to rounding (summed in a new order)
    assert max(values) - min(values) <= 1e-6 * max(values) and statuses == ["stopped early"]


def test_improvement_resets_the_count_and_best_weights_come_back(digits: tuple) -> None:
    weights = Weights()
    torch.manual_seed(0)
    model = torchbp.nn.MLP([64, 16, 10], output_activation="identity")
    # cross-entropy at η = 6 overshoots: the validation loss goes up and down
    history = torchbp.fit(
        model,
        digits[0],
        val_data=digits[1],
        cost="cross_entropy",
        epochs=12,
        lr=6.0,
        patience=2,
        restore_best=True,
        seed=2,
        callbacks=[weights],
        verbose=False,
    )
    losses = [h["val_loss"] for h in history]
    best = min(range(len(losses)), key=losses.__getitem__)
    assert any(losses[i] > min(losses[:i]) for i in range(1, best))  # a worse epoch before the best did not stop it
    assert len(history) == best + 3 < 12  # stopped two epochs after the best
    for key, value in model.state_dict().items():
        assert torch.equal(value, weights.per_epoch[best][key])
    assert any(not torch.equal(v, weights.per_epoch[-1][k]) for k, v in model.state_dict().items())


def test_without_restore_the_last_weights_stay(digits: tuple) -> None:
    weights = Weights()
    model = _model()
    torchbp.fit(model, digits[0], val_data=digits[1], epochs=4, lr=0.0, patience=1, callbacks=[weights], verbose=False)
    assert len(weights.per_epoch) == 2
    for key, value in model.state_dict().items():
        assert torch.equal(value, weights.per_epoch[-1][key])


def test_bad_early_stopping_settings_are_explained(digits: tuple) -> None:
    with pytest.raises(ValueError, match="monitor: expected one of train_loss, got 'val_loss' \\(pass val_data"):
        torchbp.fit(_model(), digits[0], patience=2, verbose=False)
    with pytest.raises(ValueError, match="monitor: expected one of train_loss, val_loss, val_accuracy, got 'acc'"):
        torchbp.fit(_model(), digits[0], val_data=digits[1], patience=2, monitor="acc", verbose=False)
    with pytest.raises(ValueError, match="patience: expected a positive int"):
        torchbp.fit(_model(), digits[0], val_data=digits[1], patience=-1, verbose=False)


def test_cli_patience(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["train", "--dataset", "xor", "--layers", "2,4,2", "--lr", "0", "--epochs", "30", "--logdir", str(tmp_path)]
    assert main([*argv, "--patience", "2", "--monitor", "val_accuracy"]) == 0
    out = capsys.readouterr().out
    assert len([line for line in out.splitlines() if line.startswith("epoch")]) == 3
    assert "early stop: val_accuracy has not improved for 2 epoch(s); best" in out
    config = tomllib.loads((tmp_path / "xor" / "version_0" / "config.toml").read_text())
    assert config["patience"] == 2 and config["monitor"] == "val_accuracy" and config["restore_best"] is False


@pytest.mark.parametrize(
    "monitor, values, stops, best",
    [
        # a loss improves by going down, an accuracy by going up
        ("val_loss", [0.5, 0.4, 0.3, 0.2], [False] * 4, 0.2),
        ("val_loss", [0.5, 0.6, 0.7], [False, False, True], 0.5),
        ("val_accuracy", [0.5, 0.6, 0.7, 0.8], [False] * 4, 0.8),
        ("val_accuracy", [0.8, 0.7, 0.6], [False, False, True], 0.8),
        # the threshold is relative to the best value: 10% lower is better, even for a tiny loss …
        ("train_loss", [1e-6, 0.9e-6, 0.8e-6, 0.7e-6], [False] * 4, 0.7e-6),
        # … and a change of under 0.01% is rounding noise, not an improvement
        ("train_loss", [100.0, 100.0 - 5e-3, 100.0 - 9e-3], [False, False, True], 100.0),
    ],
)
def test_an_improvement_is_a_lower_loss_or_a_higher_accuracy_by_a_relative_margin(
    monitor: str, values: list[float], stops: list[bool], best: float
) -> None:
    stopping = EarlyStopping(patience=2, monitor=monitor)
    model = torch.nn.Linear(1, 1)
    assert [stopping.update({"epoch": i + 1, monitor: v}, model) for i, v in enumerate(values)] == stops
    assert stopping.best == best and stopping.best_epoch == values.index(best) + 1


def test_a_resumed_run_stops_where_the_unbroken_one_does(tmp_path: Path, digits: tuple) -> None:
    # lr = 0: a flat loss, so the unbroken run stops three epochs after its first
    train = (digits[0][0][:50], digits[0][1][:50])
    options = dict(lr=0.0, patience=3, monitor="train_loss", seed=1, verbose=False)
    straight = torchbp.fit(_model(), train, epochs=20, **options)
    assert len(straight) == 4
    torchbp.fit(_model(), train, epochs=2, logdir=tmp_path, **options)
    resumed = torchbp.fit(_model(), train, epochs=20, resume=tmp_path / "torchbp-run" / "version_0", verbose=False)
    assert len(resumed) == len(straight)  # the epochs without improvement so far came back with the checkpoint


def test_best_weights_come_back_also_when_the_epochs_run_out(digits: tuple) -> None:
    weights = Weights()
    torch.manual_seed(0)
    model = torchbp.nn.MLP([64, 16, 10], output_activation="identity")
    history = torchbp.fit(
        model,
        digits[0],
        val_data=digits[1],
        cost="cross_entropy",
        epochs=8,
        lr=6.0,
        patience=20,
        restore_best=True,
        seed=2,
        callbacks=[weights],
        verbose=False,
    )
    losses = [h["val_loss"] for h in history]
    best = min(range(len(losses)), key=losses.__getitem__)
    assert len(history) == 8 and best < 7  # not stopped early, and the last epoch was not the best
    for key, value in model.state_dict().items():
        assert torch.equal(value, weights.per_epoch[best][key])
