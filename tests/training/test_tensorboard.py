"""TensorBoard logging, read back with TensorBoard's own EventAccumulator and served by the real server."""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import torchbp
from torchbp.training import load


@pytest.fixture(scope="module")
def run_directory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = load("digits")
    train, val = data.split(0.2, seed=0)
    torch.manual_seed(0)
    logdir = tmp_path_factory.mktemp("runs")
    torchbp.fit(
        torchbp.nn.MLP([64, 30, 10]),
        (train.inputs[:500], train.targets[:500]),
        val_data=(val.inputs[:200], val.targets[:200]),
        epochs=3,
        seed=0,
        logdir=logdir,
        name="digits",
        verbose=False,
        config={"layers": [64, 30, 10]},
    )
    return logdir / "digits" / "version_0"


def _events(directory: Path) -> EventAccumulator:
    events = EventAccumulator(str(directory), size_guidance={"scalars": 0, "histograms": 0, "tensors": 0})
    events.Reload()
    return events


def test_scalars_exist_with_sane_values(run_directory: Path) -> None:
    events = _events(run_directory)
    scalars = set(events.Tags()["scalars"])
    expected = {
        "loss/train",
        "loss/val",
        "accuracy/val",
        "lr",
        "loss/train_step",
        "delta_norm/layers.0",
        "delta_norm/layers.1",
    }
    assert expected <= scalars
    train = [e.value for e in events.Scalars("loss/train")]
    assert [e.step for e in events.Scalars("loss/train")] == [1, 2, 3]
    assert train[-1] < train[0]
    assert all(0 <= e.value <= 1 for e in events.Scalars("accuracy/val"))
    assert [e.value for e in events.Scalars("lr")] == [3.0, 3.0, 3.0]
    assert len(events.Scalars("loss/train_step")) == 3 * 50
    for layer in ("layers.0", "layers.1"):
        assert all(math.isfinite(e.value) and e.value > 0 for e in events.Scalars(f"delta_norm/{layer}"))


def test_histograms_of_weights_gradients_and_deltas(run_directory: Path) -> None:
    histograms = set(_events(run_directory).Tags()["histograms"])
    for layer in ("layers.0", "layers.1"):
        assert {
            f"weights/{layer}.weight",
            f"weights/{layer}.bias",
            f"gradients/{layer}.weight",
            f"delta/{layer}",
        } <= histograms


def test_hyperparameters_and_custom_scalar_layout(run_directory: Path) -> None:
    events = _events(run_directory)
    assert "custom_scalars__config__" in events.Tags()["tensors"]
    hparams = events.PluginTagToContent("hparams")
    assert {"_hparams_/experiment", "_hparams_/session_start_info", "_hparams_/session_end_info"} <= set(hparams)
    assert (
        b"lr" in hparams["_hparams_/session_start_info"] and b"hparam/val_accuracy" in hparams["_hparams_/experiment"]
    )


def test_a_plain_torch_model_logs_linear_deltas(tmp_path: Path) -> None:
    x, y = torch.randn(40, 3), torch.randint(0, 2, (40,))
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    torchbp.fit(model, (x, y), cost="cross_entropy", lr=0.1, epochs=1, logdir=tmp_path, verbose=False)
    scalars = _events(tmp_path / "torchbp-run" / "version_0").Tags()["scalars"]
    assert {"delta_norm/0", "delta_norm/2"} <= set(scalars)


def test_a_lenet_logs_each_layers_delta_norm_as_its_mean_over_the_epoch(tmp_path: Path) -> None:
    data = load("digits")
    model = torchbp.nn.models.lenet(8)
    norms: dict[int, list[float]] = {1: [], 4: [], 8: []}  # the two convolutions and the first linear layer
    for index, values in norms.items():
        model[index].register_delta_hook(
            lambda layer, delta, values=values: values.append(float(torch.linalg.vector_norm(delta)))
        )
    torchbp.fit(
        model,
        (data.inputs[:160], data.targets[:160]),
        cost="cross_entropy",
        lr=0.05,
        epochs=1,
        batch_size=32,
        logdir=tmp_path,
        verbose=False,
        seed=0,
    )
    events = _events(tmp_path / "torchbp-run" / "version_0")
    for index, values in norms.items():
        assert len(values) == 5  # one δ per step
        (logged,) = events.Scalars(f"delta_norm/{index}")
        assert logged.value == pytest.approx(sum(values) / len(values), rel=1e-5)
    assert {"delta/1", "gradients/1.weight", "weights/4.bias"} <= set(events.Tags()["histograms"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_real_tensorboard_server_serves_the_scalars(run_directory: Path) -> None:
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tensorboard.main",
            "--logdir",
            str(run_directory.parent),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        runs: list[str] = []
        while time.monotonic() < deadline and not runs:
            try:
                with urllib.request.urlopen(f"{base}/data/runs", timeout=5) as response:
                    runs = json.load(response)
            except OSError:
                time.sleep(0.5)
        assert runs == ["version_0"]
        with urllib.request.urlopen(
            f"{base}/data/plugin/scalars/scalars?run=version_0&tag=loss/train", timeout=10
        ) as response:
            points = json.load(response)
        assert [step for _, step, _ in points] == [1, 2, 3]
        expected = [e.value for e in _events(run_directory).Scalars("loss/train")]
        assert [value for _, _, value in points] == pytest.approx(expected)
        with urllib.request.urlopen(f"{base}/data/plugin/scalars/tags", timeout=10) as response:
            assert "delta_norm/layers.0" in json.load(response)["version_0"]
    finally:
        server.terminate()
        server.wait(timeout=30)
