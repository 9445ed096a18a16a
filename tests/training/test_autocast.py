"""fit under torch.autocast (CPU bfloat16) on every path: graph-free, fused MLP node, chain node, conv, native."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import torchbp
from torchbp.cli import main
from torchbp.nn.models import lenet
from torchbp.training import load


@pytest.fixture(scope="module")
def digits() -> tuple:
    data = load("digits")
    return data.inputs[:200], data.targets[:200]


def _native() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.Sigmoid(), torch.nn.Linear(16, 10), torch.nn.Sigmoid())


def _converted() -> torch.nn.Module:
    return torchbp.nn.convert(_native())


def _hooked_mlp() -> torch.nn.Module:
    model = torchbp.nn.MLP([64, 16, 10])
    model.layers[0].register_forward_hook(lambda module, args, output: None)  # runs layer by layer
    return model


# the model, fit's options, and how far bfloat16's losses may lie from float32's (relative)
MODELS: dict[str, tuple[Callable[[], torch.nn.Module], dict, float]] = {
    "mlp-graph-free": (lambda: torchbp.nn.MLP([64, 16, 10]), {"graph_free": True}, 0.03),
    "mlp-autograd": (lambda: torchbp.nn.MLP([64, 16, 10]), {"graph_free": False}, 0.03),
    "mlp-layer-by-layer": (_hooked_mlp, {}, 0.03),
    "converted-sequential": (_converted, {}, 0.03),
    "native": (_native, {}, 0.03),
    "lenet": (lambda: lenet(8), {"cost": "cross_entropy", "rule": "adam", "lr": 0.01}, 0.1),
}


@pytest.mark.parametrize("name", MODELS)
def test_fit_under_cpu_bfloat16_autocast_trains_like_float32(digits: tuple, name: str) -> None:
    build, options, tolerance = MODELS[name]
    histories = []
    for autocast in (True, False):
        torch.manual_seed(0)
        model = build()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            history = torchbp.fit(model, digits, val_data=digits, epochs=3, seed=0, verbose=False, **options)
        assert {p.dtype for p in model.parameters()} == {torch.float32}
        histories.append(history)
    low, full = histories
    assert low[-1]["train_loss"] < 0.95 * low[0]["train_loss"]  # it learns: every step sees the updated weights
    for a, b in zip(low, full):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=tolerance)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=tolerance)


def test_graph_free_under_autocast_gives_the_autograd_numbers_bit_for_bit(digits: tuple) -> None:
    runs = []
    for graph_free in (True, False):
        torch.manual_seed(0)
        model = torchbp.nn.MLP([64, 16, 10])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            history = torchbp.fit(model, digits, epochs=2, seed=0, graph_free=graph_free, verbose=False)
        runs.append(([{k: v for k, v in h.items() if k != "seconds"} for h in history], model.state_dict()))
    assert runs[0][0] == runs[1][0]
    for key, value in runs[1][1].items():
        assert torch.equal(runs[0][1][key], value)


def test_cli_precision(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["train", "--dataset", "xor", "--layers", "2,6,2", "--epochs", "2", "--logdir", str(tmp_path)]
    assert main([*argv, "--precision", "bfloat16"]) == 0
    config = tomllib.loads((tmp_path / "xor" / "version_0" / "config.toml").read_text())
    assert config["precision"] == "bfloat16"
    with pytest.raises(SystemExit):
        main(["train", "--no-log", "--precision", "float8"])
    assert "invalid choice: 'float8'" in capsys.readouterr().err
