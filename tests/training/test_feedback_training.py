"""fit, the CLI and TensorBoard with feedback rules: config, checkpoints, resume, alignment angles."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import torchbp
from torchbp.cli import main
from torchbp.training import load_checkpoint
from torchbp.training.alignment import angle, b_vs_w
from torchbp.training.config import load_config


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torchbp.nn.MLP([64, 30, 20, 10])


def _lenet() -> torch.nn.Module:
    torch.manual_seed(0)
    return torchbp.nn.models.lenet(8, 1, 10)


@pytest.mark.parametrize("feedback", ["brsf", "kolen_pollack", "dfa"])
@pytest.mark.parametrize("make", [_model, _lenet], ids=["mlp", "lenet"])
def test_resume_is_bit_identical_with_b_in_the_checkpoint(feedback: str, make, digits: tuple, tmp_path: Path) -> None:
    train, val = digits
    options = {"cost": "cross_entropy", "lr": 0.05, "seed": 2, "verbose": False, "feedback": feedback}
    straight = make()
    history = torchbp.fit(straight, train, val_data=val, epochs=2, **options)
    first = make()
    torchbp.fit(first, train, val_data=val, epochs=1, logdir=tmp_path, name="run", **options)
    directory = tmp_path / "run" / "version_0"
    assert any(key.endswith("feedback_weight") for key in load_checkpoint(directory)["model"])
    resumed = make()
    resumed_history = torchbp.fit(
        resumed, train, val_data=val, epochs=2, resume=directory, cost="cross_entropy", lr=0.05, verbose=False
    )
    assert [h["val_loss"] for h in resumed_history] == [h["val_loss"] for h in history]
    assert straight.state_dict().keys() == resumed.state_dict().keys()
    for key, value in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key


def test_b_seed_is_the_runs_and_independent_of_the_weights_stream() -> None:
    torch.manual_seed(0)
    a = torchbp.nn.MLP([4, 3, 2], feedback=torchbp.get_feedback("fa", seed=7))
    torch.manual_seed(1)
    b = torchbp.nn.MLP([4, 3, 2], feedback=torchbp.get_feedback("fa", seed=7))
    c = torchbp.nn.MLP([4, 3, 2], feedback=torchbp.get_feedback("fa", seed=8))
    assert not torch.equal(a.layers[0].weight, b.layers[0].weight)
    assert torch.equal(a.layers[0].feedback_weight, b.layers[0].feedback_weight)
    assert not torch.equal(a.layers[0].feedback_weight, c.layers[0].feedback_weight)
    layer = torch.nn.Linear(3, 2)
    state = torch.get_rng_state()
    torchbp.nn.convert(layer, feedback="fa")
    assert torch.equal(torch.get_rng_state(), state)  # drawing B leaves the global stream alone


def test_cli_records_feedback_in_config_and_resumes_with_it(tmp_path: Path) -> None:
    common = ["--epochs", "1", "--logdir", str(tmp_path), "--name", "fb", "--alignment-every", "5"]
    assert main(["train", "--feedback", "fa", "--feedback-option", "scale=0.5", *common]) == 0
    directory = tmp_path / "fb" / "version_0"
    config = load_config(directory / "config.toml")
    assert config["feedback"] == "fa"
    assert config["feedback_options"] == {"seed": 0, "scale": 0.5}
    assert main(["train", "--resume", str(directory), "--epochs", "2"]) == 0
    checkpoint = load_checkpoint(directory)
    assert checkpoint["epoch"] == 1 and checkpoint["config"]["feedback"] == "fa"
    events = EventAccumulator(str(directory)).Reload()
    tags = events.Tags()["scalars"]
    assert "alignment/B_vs_W/layers.1" in tags and "alignment/update_vs_backprop/layers.0" in tags


def test_cli_unknown_feedback_lists_the_known_ones(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--feedback", "nope", "--epochs", "1", "--no-log"]) == 2
    error = capsys.readouterr().err
    assert "unknown feedback rule 'nope'" in error and "dfa, fa, frsf, kolen_pollack, usf" in error


def test_alignment_angles_in_tensorboard(digits: tuple, tmp_path: Path) -> None:
    train, _ = digits
    model = _model()
    options = {"cost": "cross_entropy", "lr": 0.05, "seed": 1, "verbose": False, "feedback": "fa"}
    history = torchbp.fit(model, train, epochs=1, logdir=tmp_path, name="a", alignment_every=1, **options)
    unmonitored = torchbp.fit(_model(), train, epochs=1, **options)
    assert history[0]["train_loss"] == unmonitored[0]["train_loss"]  # the monitor changes nothing
    events = EventAccumulator(str(tmp_path / "a" / "version_0")).Reload()
    top = [e.value for e in events.Scalars("alignment/update_vs_backprop/layers.2")]
    hidden = [e.value for e in events.Scalars("alignment/update_vs_backprop/layers.1")]
    assert len(top) == 20  # every step of 200 examples in batches of 10
    assert max(top) < 1e-3  # the top layer's gradient is exact under fa
    assert all(1 < value < 179 for value in hidden)  # hidden ones are not (near 90° before B and W align)
    b_w = events.Scalars("alignment/B_vs_W/layers.1")[0].value
    layer = model.layers[1]
    assert b_w == pytest.approx(angle(layer.feedback_weight, layer.weight), abs=1e-4)


def test_dfa_b_vs_w_is_the_angle_with_the_path_above() -> None:
    model = torchbp.nn.MLP([4, 5, 6, 3], feedback="dfa")
    w = [layer.weight.detach() for layer in model.layers]
    angles = b_vs_w(model)
    assert angles["layers.2"] == pytest.approx(angle(model.layers[2].feedback_weight, w[2]))
    assert angles["layers.1"] == pytest.approx(angle(model.layers[1].feedback_weight, w[2] @ w[1]))
    assert angles["layers.0"] == pytest.approx(angle(model.layers[0].feedback_weight, w[2] @ w[1] @ w[0]))
    assert math.isnan(angle(torch.zeros(2), torch.ones(2)))


@pytest.mark.parametrize("rule", ["fa", "usf", "brsf", "frsf"])
def test_b_vs_w_leaves_out_a_derived_b_that_is_out_of_date(rule: str) -> None:
    """Under a rule that derives B each batch, the first layer (fed data, so no BP2) derives none:
    its stored B is stale and has no angle; a fixed B (fa) keeps its own."""
    model = torchbp.nn.convert(
        torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3)), feedback=rule
    )
    rule_sgd = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(3):
        rule_sgd.zero_grad()
        model(torch.randn(6, 4)).square().sum().backward()
        rule_sgd.step()
    angles = b_vs_w(model)
    assert ("0" in angles) == (rule == "fa") and "2" in angles
    assert angles["2"] == pytest.approx(angle(model[2].feedback_weight, model[2].weight))
