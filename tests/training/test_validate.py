"""fit's own checks: its arguments, the data's finiteness, the run name, cost/model mismatches, resume."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

import torchbp
from torchbp.training import CheckpointError, load
from torchbp.training.validate import check_finite, warn_if_probabilities_into_logit_cost


@pytest.fixture(scope="module")
def xor() -> tuple:
    data = load("xor")
    return data.inputs[:80], data.targets[:80]


def _model() -> torchbp.nn.MLP:
    torch.manual_seed(0)
    return torchbp.nn.MLP([2, 4, 2])


@pytest.mark.parametrize(
    "arguments, error, words",
    [
        ({"epochs": 2.5}, TypeError, ["epochs", "an int >= 0", "2.5", "float"]),
        ({"epochs": -1}, ValueError, ["epochs", "an int >= 0", "-1"]),
        ({"batch_size": 2.5}, TypeError, ["batch_size", "an int >= 1", "2.5"]),
        ({"batch_size": 0}, ValueError, ["batch_size", "an int >= 1", "0"]),
        ({"batch_size": True}, TypeError, ["batch_size", "True", "bool"]),
        ({"lr": "0.1"}, TypeError, ["lr", "a finite float", "'0.1'", "str"]),
        ({"lr": math.inf}, ValueError, ["lr", "a finite float", "inf"]),
        ({"lr": math.nan}, ValueError, ["lr", "nan"]),
        ({"lr": -0.1}, ValueError, ["lr", ">= 0", "-0.1"]),
        ({"seed": "a"}, TypeError, ["seed", "an int", "'a'"]),
        ({"seed": -3}, ValueError, ["seed", ">= 0", "-3"]),
        ({"cost_options": ["a"]}, TypeError, ["cost_options", "a dict", "['a']", "list"]),
        ({"cost": 3}, TypeError, ["cost", "a registered cost's name", "3"]),
        ({"verbose": "no"}, TypeError, ["verbose", "True or False", "'no'"]),
        ({"threads": 1.5}, ValueError, ["threads", "a positive int or None", "1.5"]),
        ({"device": "tpu"}, ValueError, ["device", "'cpu', 'cuda'", "'tpu'"]),
        ({"device": 3.5}, TypeError, ["device", "3.5"]),
        ({"momentum": "abc"}, ValueError, ["rule 'sgd'", "momentum", "a finite float", "'abc'"]),
        ({"momentum": math.inf}, ValueError, ["momentum must be finite"]),
    ],
)
def test_fit_names_the_argument_what_it_expects_and_what_came(
    xor: tuple, arguments: dict, error: type, words: list[str]
) -> None:
    with pytest.raises(error) as raised:
        torchbp.fit(_model(), xor, **{"epochs": 1, "verbose": False, **arguments})
    for word in words:
        assert word in str(raised.value)


def test_fit_checks_its_own_arguments_before_the_rules(xor: tuple) -> None:
    # both wrong: fit's own lr is the one reported, not the rule's momentum
    with pytest.raises(TypeError, match=r"^lr: "):
        torchbp.fit(_model(), xor, lr="0.1", momentum="abc", verbose=False)


def test_an_unknown_keyword_is_reported_as_fits(xor: tuple) -> None:
    with pytest.raises(TypeError) as raised:
        torchbp.fit(_model(), xor, epochs=1, patients=3, verbose=False)
    message = str(raised.value)
    assert message.startswith("fit() got unexpected keyword argument(s) patients")
    assert "neither an argument of fit" in message and "batch_size" in message
    assert "nor a hyperparameter of rule 'sgd' (lr, momentum, dampening, weight_decay, nesterov)" in message


@pytest.mark.parametrize("where", ["inputs", "targets"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_tensor_data_is_refused_with_its_index(xor: tuple, where: str, value: float) -> None:
    inputs, targets = xor[0].clone(), torch.nn.functional.one_hot(xor[1], 2).float()
    (inputs if where == "inputs" else targets)[17, 1] = value
    for data in ((inputs, targets), TensorDataset(inputs, targets)):
        with pytest.raises(ValueError) as raised:
            torchbp.fit(_model(), data, epochs=1, verbose=False)
        assert f"train_data {where}: expected finite numbers, got {value} at index (17, 1)" in str(raised.value)
    with pytest.raises(ValueError, match=f"val_data {where}: expected finite numbers"):
        torchbp.fit(_model(), xor, val_data=(inputs, targets), epochs=1, verbose=False)


def test_check_finite_names_a_flat_index_for_one_dimensional_data() -> None:
    with pytest.raises(ValueError, match=r"got nan at index 2 \(2 non-finite elements in all\)"):
        check_finite("y", torch.tensor([0.0, 1.0, math.nan, math.nan]))


@pytest.mark.parametrize("name", ["a/b", "../escape", "..", ".", "", "a\\b", "a\0b"])
def test_a_name_with_path_separators_or_dots_is_refused(xor: tuple, tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="name: expected a plain directory name"):
        torchbp.fit(_model(), xor, epochs=1, verbose=False, logdir=tmp_path / "runs", name=name)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "escape").exists()


def test_fit_in_the_working_directory_does_not_shadow_the_package(xor: tuple, tmp_path: Path) -> None:
    script = (
        "import torch, torchbp\n"
        "from torchbp.training import load\n"
        "d = load('xor')\n"
        "torchbp.fit(torchbp.nn.MLP([2, 4, 2]), (d.inputs[:40], d.targets[:40]), epochs=1, logdir='.', verbose=False)\n"
    )
    subprocess.run([sys.executable, "-c", script], cwd=tmp_path, check=True, timeout=300)
    assert [p.name for p in tmp_path.iterdir()] == ["torchbp-run"]
    check = "import torchbp, sys; sys.exit(0 if torchbp.__file__ and hasattr(torchbp, 'fit') else 1)"
    env = {**os.environ, "PYTHONSAFEPATH": ""}
    subprocess.run([sys.executable, "-c", check], cwd=tmp_path, check=True, timeout=300, env=env)


def test_cross_entropy_on_one_output_is_refused(xor: tuple) -> None:
    model = torchbp.nn.MLP([2, 4, 1], "sigmoid", "identity")
    targets = torch.zeros(len(xor[0]), dtype=torch.int64)
    with pytest.raises(ValueError) as raised:
        torchbp.fit(model, (xor[0], targets), cost="cross_entropy", epochs=1, verbose=False)
    message = str(raised.value)
    assert "cross_entropy needs logits for at least 2 classes, got 1 output" in message
    assert "binary_cross_entropy_with_logits" in message


@pytest.mark.parametrize("output", ["sigmoid", "softmax"])
def test_cross_entropy_after_a_probability_output_warns(xor: tuple, output: str) -> None:
    model = torchbp.nn.MLP([2, 4, 2], "sigmoid", output)
    with pytest.warns(UserWarning, match=f"cost 'cross_entropy' expects logits .* goes through {output}"):
        torchbp.fit(model, xor, cost="cross_entropy", lr=0.1, epochs=1, verbose=False)
    sequential = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Softmax(-1))
    with pytest.warns(UserWarning, match="goes through softmax"):
        torchbp.fit(sequential, xor, cost="cross_entropy", lr=0.1, epochs=1, verbose=False)


def test_resuming_another_architecture_is_a_clear_error(xor: tuple, tmp_path: Path) -> None:
    torchbp.fit(_model(), xor, epochs=1, verbose=False, logdir=tmp_path, name="run")
    directory = tmp_path / "run" / "version_0"
    with pytest.raises(CheckpointError) as raised:
        torchbp.fit(torchbp.nn.MLP([2, 7, 2]), xor, epochs=2, verbose=False, resume=directory)
    message = str(raised.value)
    assert "the checkpoint is of another model than this one" in message
    assert "layers.0.weight: saved (4, 2), model (7, 2)" in message
    assert "config.toml" in message


def test_zero_epochs_train_nothing(xor: tuple) -> None:
    model = _model()
    before = [p.detach().clone() for p in model.parameters()]
    assert torchbp.fit(model, xor, epochs=0, verbose=False) == []
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))


def test_a_one_element_tensor_learning_rate_trains_as_its_float(xor: tuple) -> None:
    as_float = torchbp.fit(_model(), xor, lr=0.5, epochs=2, seed=0, verbose=False)
    as_tensor = torchbp.fit(_model(), xor, lr=torch.tensor(0.5), epochs=2, seed=0, verbose=False)
    assert [h["train_loss"] for h in as_tensor] == [h["train_loss"] for h in as_float]


@pytest.mark.parametrize(
    "model, cost, warns",
    [
        (torchbp.nn.MLP([2, 4, 1], "sigmoid"), "binary_cross_entropy_with_logits", "sigmoid"),
        (torchbp.nn.MLP([2, 4, 2], "tanh", "softmax"), "cross_entropy", "softmax"),
        (torch.nn.Sequential(torch.nn.Linear(2, 1), torch.nn.Sigmoid()), "binary_cross_entropy_with_logits", "sigmoid"),
        (torchbp.nn.MLP([2, 4, 1], "sigmoid", "identity"), "binary_cross_entropy_with_logits", None),
        (torchbp.nn.MLP([2, 4, 2], "sigmoid"), "quadratic", None),
        (torchbp.nn.MLP([2, 4, 1], "sigmoid"), "binary_cross_entropy", None),
    ],
)
def test_a_logit_cost_after_a_probability_output_warns(model: torch.nn.Module, cost: str, warns: str | None) -> None:
    if warns is None:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            warn_if_probabilities_into_logit_cost(model, cost)
    else:
        with pytest.warns(UserWarning, match=f"cost {cost!r} expects logits .* goes through {warns}"):
            warn_if_probabilities_into_logit_cost(model, cost)
