"""Divergence: a cost that becomes NaN or ±inf stops fit at its step, keeping the last finite checkpoint."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import torchbp
from torchbp.cli import main
from torchbp.training import DivergenceError, load, load_checkpoint
from torchbp.training.divergence import first_non_finite


@pytest.fixture(scope="module")
def digits() -> tuple:
    data = load("digits")
    return data.inputs[:200], data.targets[:200]


def _relu(seed: int = 0) -> torchbp.nn.MLP:
    torch.manual_seed(seed)
    return torchbp.nn.MLP([64, 30, 10], "relu", "identity")


class _StepsTaken:
    """A callback keeping the model's weights after each step taken."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.weights: list[list[torch.Tensor]] = []

    @torchbp.hookimpl
    def torchbp_step_end(self, run: object, epoch: int, step: int) -> None:
        self.weights.append([p.detach().clone() for p in self.model.parameters()])


@pytest.mark.parametrize("graph_free", [True, False])
def test_a_diverging_run_raises_at_the_step_where_the_cost_stops_being_finite(digits: tuple, graph_free: bool) -> None:
    fitted = _relu()
    steps = _StepsTaken(fitted)
    with pytest.raises(DivergenceError) as error:
        torchbp.fit(fitted, digits, lr=1e9, epochs=2, seed=0, verbose=False, graph_free=graph_free, callbacks=[steps])
    # the same run, step by step, finds the first step whose cost is not finite
    model = _relu()
    rule = torchbp.create_rule("sgd", model, lr=1e9)
    cost = torchbp.get_cost("quadratic")
    order = torch.randperm(200, generator=torch.Generator().manual_seed(0 * 1_000_003 + 0))
    inputs, targets = digits[0][order], torch.nn.functional.one_hot(digits[1][order], 10).float()
    first_bad = None
    for step, (x, y) in enumerate(zip(inputs.split(10), targets.split(10))):
        rule.zero_grad()
        loss = cost(model(x), y)
        if not math.isfinite(loss.item()):
            first_bad = step + 1
            break
        loss.backward()
        rule.step()
    assert first_bad is not None and (error.value.epoch, error.value.step) == (1, first_bad)
    # stopped at that step, before its update: every earlier step was taken, no later one, and the
    # weights are those of the last step taken
    assert len(steps.weights) == first_bad - 1
    for ours, last in zip(fitted.parameters(), steps.weights[-1]):
        torch.testing.assert_close(ours, last, rtol=0, atol=0, equal_nan=True)
    message = str(error.value)
    for words in (f"epoch 1, step {first_bad} of 20", "learning rate", "lr 1e+09", "data", "Nothing was saved"):
        assert words in message


def test_a_later_divergence_keeps_the_last_finite_checkpoint(digits: tuple, tmp_path: Path) -> None:
    class Blowup(torch.nn.Module):
        """Finite for its first 25 calls in training, then inf: divergence in the second epoch."""

        def __init__(self) -> None:
            super().__init__()
            self.mlp = _relu()
            self.calls = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.mlp(x)
            if self.training:
                self.calls += 1
                if self.calls > 25:
                    out = out * math.inf
            return out

    model = Blowup()
    with pytest.raises(DivergenceError) as error:
        torchbp.fit(model, digits, lr=0.01, epochs=3, seed=0, verbose=False, logdir=tmp_path, name="run")
    directory = tmp_path / "run" / "version_0"
    assert (error.value.epoch, error.value.step, error.value.checkpoint_epoch) == (2, 6, 1)
    assert f"The checkpoint of epoch 1, the last with a finite cost, is kept in {directory}" in str(error.value)
    checkpoint = load_checkpoint(directory)
    assert checkpoint["epoch"] == 0 and len(checkpoint["history"]) == 1
    assert all(torch.isfinite(t).all() for t in checkpoint["model"].values())
    assert not list(directory.glob(".checkpoint.pt.*"))


def test_skip_nonfinite_skips_the_bad_batches_and_counts_them(digits: tuple) -> None:
    inputs, targets = digits[0].clone(), digits[1]
    model = torchbp.nn.MLP([64, 30, 10])

    class Poison(torch.nn.Module):
        """inf outputs for the one example whose first pixel is marked, finite otherwise."""

        def __init__(self) -> None:
            super().__init__()
            self.mlp = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.mlp(x)
            return torch.where(x[:, :1] == -1.0, math.inf, out)

    inputs[7, 0] = -1.0
    with pytest.warns(RuntimeWarning, match=r"epoch 1: skipped 1 of 20 steps whose cost was not finite"):
        history = torchbp.fit(Poison(), (inputs, targets), lr=1.0, epochs=1, seed=0, verbose=False, skip_nonfinite=True)
    assert math.isfinite(history[0]["train_loss"])
    assert all(torch.isfinite(p).all() for p in model.parameters())
    with pytest.raises(DivergenceError):
        torchbp.fit(Poison(), (inputs, targets), lr=1.0, epochs=1, seed=0, verbose=False)


def test_a_cost_check_failing_on_nan_outputs_is_reported_as_divergence() -> None:
    # binary cross-entropy checks its outputs are probabilities: NaN ones are divergence, not bad data
    class TurnsNaN(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(2, 2)
            self.calls = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.calls += self.training
            a = torch.sigmoid(self.linear(x))
            return a * math.nan if self.calls > 3 else a

    data = load("moons")
    inputs, targets = data.inputs[:100], torch.nn.functional.one_hot(data.targets[:100], 2).float()
    with pytest.raises(DivergenceError, match="the cost became nan at epoch 1, step 4 of 10"):
        torchbp.fit(TurnsNaN(), (inputs, targets), cost="binary_cross_entropy", lr=0.1, epochs=2, verbose=False)
    inputs[3, 0] = 0.5
    with pytest.raises(ValueError, match="target: expected probabilities in"):  # bad targets stay bad targets
        torchbp.fit(TurnsNaN(), (inputs, targets * 2), cost="binary_cross_entropy", verbose=False)


def test_the_cli_exits_non_zero_naming_epoch_step_and_cause(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["train", "--epochs", "2", "--lr", "1e9", "--activation", "relu", "--output-activation", "identity"]
    assert main([*argv, "--logdir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "torchbp train: error: training diverged: the cost became inf at epoch 1, step" in err
    assert "learning rate" in err and "Traceback" not in err and "histogram" not in err
    assert not (tmp_path / "digits" / "version_0" / "checkpoint.pt").exists()


def test_first_non_finite_finds_nan_and_either_infinity() -> None:
    finite = torch.tensor([1.0, 2.0])
    for bad in (float("inf"), float("-inf"), float("nan")):
        assert first_non_finite([finite, finite, torch.tensor([0.0, bad]), torch.tensor([bad])]) == 2
    assert first_non_finite([finite, finite]) is None
