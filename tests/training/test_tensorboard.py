"""TensorBoard logging, read back with TensorBoard's own EventAccumulator and served by the real server."""

from __future__ import annotations

import json
import math
import re
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import torchbp
from torchbp.training import load

PATHS = ["graph-free", "autograd"]


class _Recorder:
    """What a run's hooks see, to compare with what was logged: each step's loss, every δ of each
    layer (per epoch, through the layers' own delta hooks) and, at each epoch's end, the parameters
    and their gradients."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.losses: list[float] = []
        self.deltas: dict[str, list[list[torch.Tensor]]] = {}
        self.parameters: list[dict[str, torch.Tensor]] = []
        self.gradients: list[dict[str, torch.Tensor]] = []
        for name, layer in model.named_modules():
            if isinstance(layer, torchbp.nn.DeltaHooks):
                self.deltas[name] = [[]]
                layer.register_delta_hook(
                    lambda layer, delta, name=name: self.deltas[name][-1].append(delta.detach().clone())
                )

    @torchbp.hookimpl
    def torchbp_step_end(self, loss: torch.Tensor) -> None:
        self.losses.append(loss.item())

    @torchbp.hookimpl
    def torchbp_epoch_end(self, run: Any) -> None:
        self.parameters.append({name: p.detach().clone() for name, p in run.model.named_parameters()})
        self.gradients.append({name: p.grad.clone() for name, p in run.model.named_parameters()})
        for deltas in self.deltas.values():
            deltas.append([])


@dataclass
class LoggedRun:
    directory: Path
    history: list[dict[str, float]]
    recorder: _Recorder


@pytest.fixture(scope="module")
def logged_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, LoggedRun]:
    """The same 3-epoch digits run, graph-free and through autograd, each with a recorder listening."""
    data = load("digits")
    train, val = data.split(0.2, seed=0)
    runs = {}
    for path in PATHS:
        torch.manual_seed(0)
        model = torchbp.nn.MLP([64, 30, 10])
        recorder = _Recorder(model)
        logdir = tmp_path_factory.mktemp("runs")
        name = torchbp.register_plugin(recorder, name="tensorboard-test-recorder")
        try:
            history = torchbp.fit(
                model,
                (train.inputs[:500], train.targets[:500]),
                val_data=(val.inputs[:200], val.targets[:200]),
                epochs=3,
                seed=0,
                logdir=logdir,
                name="digits",
                verbose=False,
                config={"layers": [64, 30, 10]},
                graph_free=path == "graph-free",
            )
        finally:
            torchbp.unregister_plugin(name)
        runs[path] = LoggedRun(logdir / "digits" / "version_0", history, recorder)
    return runs


@pytest.fixture(scope="module")
def run_directory(logged_runs: dict[str, LoggedRun]) -> Path:
    return logged_runs["graph-free"].directory


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
        "delta_rms/layers.0",
        "delta_rms/layers.1",
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


def _float32(value: float) -> float:
    """``value`` as TensorBoard stores a scalar (a float32)."""
    return torch.tensor(value, dtype=torch.float32).item()


@pytest.mark.parametrize("path", PATHS)
def test_epoch_scalars_are_the_history_fit_returned(logged_runs: dict[str, LoggedRun], path: str) -> None:
    run = logged_runs[path]
    events = _events(run.directory)
    for tag, key in (("loss/train", "train_loss"), ("loss/val", "val_loss"), ("accuracy/val", "val_accuracy")):
        logged = events.Scalars(tag)
        assert [e.step for e in logged] == [1, 2, 3], tag
        assert [e.value for e in logged] == [_float32(epoch[key]) for epoch in run.history], tag
        (final,) = events.Scalars(f"hparam/{key}")
        assert (final.step, final.value) == (3, _float32(run.history[-1][key]))
    assert [e.value for e in events.Scalars("lr")] == [_float32(epoch["lr"]) for epoch in run.history]


@pytest.mark.parametrize("path", PATHS)
def test_step_losses_are_those_the_steps_reported(logged_runs: dict[str, LoggedRun], path: str) -> None:
    run = logged_runs[path]
    logged = _events(run.directory).Scalars("loss/train_step")
    assert [e.step for e in logged] == list(range(3 * 50))
    assert [e.value for e in logged] == [_float32(loss) for loss in run.recorder.losses]


@pytest.mark.parametrize("path", PATHS)
def test_delta_norms_are_the_epoch_means_of_the_deltas_the_hooks_saw(
    logged_runs: dict[str, LoggedRun], path: str
) -> None:
    run = logged_runs[path]
    events = _events(run.directory)
    assert set(run.recorder.deltas) == {"layers.0", "layers.1"}
    for name, per_epoch in run.recorder.deltas.items():
        logged = events.Scalars(f"delta_norm/{name}")
        assert [e.step for e in logged] == [1, 2, 3]
        for event, deltas in zip(logged, per_epoch):
            assert len(deltas) == 50  # one δ per step
            norms = [float(torch.linalg.vector_norm(delta.double())) for delta in deltas]
            assert event.value == pytest.approx(sum(norms) / len(norms), rel=1e-5)


def _check_histogram(events: EventAccumulator, tag: str, tensors: list[torch.Tensor]) -> None:
    """The histograms logged under ``tag`` (steps 1, 2, …) are of ``tensors``: count, extremes, sums."""
    logged = events.Histograms(tag)
    assert [e.step for e in logged] == list(range(1, len(tensors) + 1)), tag
    for event, tensor in zip(logged, tensors):
        histogram, values = event.histogram_value, tensor.double().flatten()
        assert histogram.num == values.numel(), tag
        assert (histogram.min, histogram.max) == (values.min().item(), values.max().item()), tag
        assert histogram.sum == pytest.approx(values.sum().item(), rel=1e-9, abs=1e-12), tag
        assert histogram.sum_squares == pytest.approx(values.square().sum().item(), rel=1e-9), tag


@pytest.mark.parametrize("path", PATHS)
def test_histograms_are_of_the_weights_gradients_and_last_deltas(logged_runs: dict[str, LoggedRun], path: str) -> None:
    run = logged_runs[path]
    events = _events(run.directory)
    recorder = run.recorder
    for name in recorder.parameters[0]:
        _check_histogram(events, f"weights/{name}", [epoch[name] for epoch in recorder.parameters])
        _check_histogram(events, f"gradients/{name}", [epoch[name] for epoch in recorder.gradients])
    for name, per_epoch in recorder.deltas.items():
        _check_histogram(events, f"delta/{name}", [deltas[-1] for deltas in per_epoch if deltas])


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


def _layout_regexes(events: EventAccumulator) -> dict[str, list[str]]:
    from tensorboard.plugins.custom_scalar import layout_pb2

    (event,) = events.Tensors("custom_scalars__config__")
    layout = layout_pb2.Layout.FromString(event.tensor_proto.string_val[0])
    return {chart.title: list(chart.multiline.tag) for category in layout.category for chart in category.chart}


def _charted(regexes: list[str], tags: set[str]) -> set[str]:
    """The tags a Multiline chart draws: TensorBoard *searches* each tag with each regex."""
    return {tag for tag in tags if any(re.search(regex, tag) for regex in regexes)}


def test_custom_scalar_charts_match_exactly_their_tags(run_directory: Path) -> None:
    events = _events(run_directory)
    tags = set(events.Tags()["scalars"])
    charts = _layout_regexes(events)
    assert _charted(charts["loss"], tags) == {"loss/train", "loss/val"}  # not loss/train_step
    assert _charted(charts["accuracy"], tags) == {"accuracy/val"}
    assert _charted(charts["δ-norm per layer"], tags) == {"delta_norm/layers.0", "delta_norm/layers.1"}
    assert _charted(charts["δ RMS per example, per layer"], tags) == {"delta_rms/layers.0", "delta_rms/layers.1"}


def test_one_layout_serves_nets_of_any_depth(tmp_path: Path) -> None:
    x, y = torch.rand(20, 4), torch.randint(0, 2, (20,))
    for sizes in ([4, 2], [4, 5, 5, 5, 2]):
        torchbp.fit(torchbp.nn.MLP(sizes), (x, y), epochs=1, logdir=tmp_path, name=str(len(sizes)), verbose=False)
    shallow, deep = (_events(tmp_path / str(depth) / "version_0") for depth in (2, 5))
    assert _layout_regexes(shallow) == _layout_regexes(deep)
    charted = _charted(_layout_regexes(deep)["δ-norm per layer"], set(deep.Tags()["scalars"]))
    assert charted == {f"delta_norm/layers.{l}" for l in range(4)}


def test_hparams_hold_no_empty_columns(tmp_path: Path) -> None:
    from google.protobuf import json_format
    from tensorboard.plugins.hparams import plugin_data_pb2

    x, y = torch.rand(20, 4), torch.randint(0, 2, (20,))
    config = {"data_file": "", "data_dir": "", "target": "", "layers": [4, 2], "dataset": "moons"}
    torchbp.fit(torchbp.nn.MLP([4, 2]), (x, y), epochs=1, logdir=tmp_path, verbose=False, config=config)
    content = _events(tmp_path / "torchbp-run" / "version_0").PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    values = json_format.MessageToDict(start.session_start_info)["hparams"]
    assert values["dataset"] == "moons" and values["layers"] == "[4, 2]" and values["lr"] == 3.0
    assert not {"data_file", "data_dir", "target"} & set(values)
    assert all(value != "" for value in values.values())


def _rms_and_norm(tmp_path: Path, model: torch.nn.Module, x: torch.Tensor, batch_size: int) -> tuple[float, float]:
    """One epoch at lr = 0 (the weights stay put), read back: the layer's δ RMS and δ-norm."""
    name = f"{model.layers[0].out_features}x{batch_size}"
    y = torch.zeros(len(x), model.layers[0].out_features)
    torchbp.fit(model, (x, y), lr=0.0, epochs=1, batch_size=batch_size, logdir=tmp_path, name=name, verbose=False)
    events = _events(tmp_path / name / "version_0")
    ((rms,), (norm,)) = events.Scalars("delta_rms/layers.0"), events.Scalars("delta_norm/layers.0")
    return rms.value, norm.value


def test_delta_rms_does_not_grow_with_batch_size_or_width(tmp_path: Path) -> None:
    torch.manual_seed(0)
    x = torch.randn(200, 4)
    narrow = torchbp.nn.MLP([4, 8], output_activation="identity")
    wide = torchbp.nn.MLP([4, 64], output_activation="identity")
    with torch.no_grad():  # the wide layer is the narrow one 8 times over: the same per-unit signal
        wide.layers[0].weight.copy_(narrow.layers[0].weight.repeat(8, 1))
        wide.layers[0].bias.copy_(narrow.layers[0].bias.repeat(8))
    # quadratic cost, zero targets, identity output: the examples' own δₖ = ∂Cₖ/∂z = z
    z = x @ narrow.layers[0].weight.detach().T + narrow.layers[0].bias.detach()
    rms, norm = _rms_and_norm(tmp_path, narrow, x, 200)
    assert rms == pytest.approx(float(z.pow(2).mean().sqrt()), rel=1e-5)
    assert norm == pytest.approx(float(torch.linalg.vector_norm(z / 200)), rel=1e-5)
    small_batch_rms, small_batch_norm = _rms_and_norm(tmp_path, narrow, x, 20)
    wide_rms, wide_norm = _rms_and_norm(tmp_path, wide, x, 200)
    assert small_batch_rms == pytest.approx(rms, rel=0.1)
    assert wide_rms == pytest.approx(rms, rel=1e-5)
    # while the norm moves with both: × √10 for batches 10 times smaller, × √8 for 8 times the width
    assert small_batch_norm == pytest.approx(norm * math.sqrt(10), rel=0.1)
    assert wide_norm == pytest.approx(norm * math.sqrt(8), rel=1e-5)


def test_a_plain_torch_model_logs_linear_deltas(tmp_path: Path) -> None:
    x, y = torch.randn(40, 3), torch.randint(0, 2, (40,))
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    norms: dict[int, list[float]] = {0: [], 2: []}
    for index, values in norms.items():

        def watch(module: torch.nn.Module, args: tuple, z: torch.Tensor, values: list[float] = values) -> None:
            z.register_hook(lambda delta: values.append(float(torch.linalg.vector_norm(delta))))

        model[index].register_forward_hook(watch)
    torchbp.fit(model, (x, y), cost="cross_entropy", lr=0.1, epochs=1, logdir=tmp_path, verbose=False)
    events = _events(tmp_path / "torchbp-run" / "version_0")
    for index, values in norms.items():
        assert len(values) == 4  # one δ = ∂C/∂z per step
        (logged,) = events.Scalars(f"delta_norm/{index}")
        assert logged.value == pytest.approx(sum(values) / len(values), rel=1e-5)


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


class _FailAt:
    """Raises at one step: the run fails mid-epoch, its checkpoint one epoch behind what was logged."""

    def __init__(self, epoch: int, step: int) -> None:
        self.at = (epoch, step)

    @torchbp.hookimpl
    def torchbp_step_end(self, epoch: int, step: int) -> None:
        if (epoch, step) == self.at:
            raise RuntimeError("failing mid-epoch")


@pytest.mark.parametrize("batch_size", [10, 40], ids=["4-steps-per-epoch", "1-step-per-epoch"])
def test_a_resumed_run_logs_each_epoch_and_step_once(tmp_path: Path, batch_size: int) -> None:
    data = load("xor")
    train = (data.inputs[:40], data.targets[:40])
    steps = 40 // batch_size
    options = dict(epochs=3, logdir=tmp_path, name="run", seed=0, verbose=False)
    torch.manual_seed(0)
    with pytest.raises(torchbp.PluginError):
        failing = _FailAt(1, steps - 1)
        torchbp.fit(torchbp.nn.MLP([2, 4, 2]), train, batch_size=batch_size, callbacks=[failing], **options)
    directory = tmp_path / "run" / "version_0"
    history = torchbp.fit(torchbp.nn.MLP([2, 4, 2]), train, epochs=3, resume=directory, verbose=False)
    events = _events(directory)
    # what the failed run logged after its checkpoint is dropped, and nothing before it
    assert [e.step for e in events.Scalars("loss/train")] == [1, 2, 3]
    assert [e.value for e in events.Scalars("loss/train")] == [_float32(epoch["train_loss"]) for epoch in history]
    logged = [e.step for e in events.Scalars("loss/train_step")]
    if steps > 1:
        assert logged == list(range(3 * steps))
    else:  # the failed step's loss shares step 1 with the checkpointed epoch's scalars, so it stays
        assert sorted(set(logged)) == [0, 1, 2]
