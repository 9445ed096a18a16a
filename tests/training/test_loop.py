"""torchbp.fit: data forms, determinism, hooks, run directories, checkpoints, kill-and-resume."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import torchbp
from torchbp.training import CheckpointError, evaluate, load, load_checkpoint
from torchbp.training.graph_free import GraphFreeStep
from torchbp.training.loop import threads_for


@pytest.fixture(scope="module")
def digits() -> tuple:
    data = load("digits")
    train, val = data.split(0.2, seed=0)
    return (train.inputs[:400], train.targets[:400]), (val.inputs[:200], val.targets[:200])


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torchbp.nn.MLP([64, 30, 10])


def _without_time(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in epoch.items() if k != "seconds"} for epoch in history]


def test_fit_learns_and_reports_each_epoch(digits: tuple, device: str) -> None:
    train, val = digits
    history = torchbp.fit(_model(), train, val_data=val, epochs=10, seed=0, verbose=False, device=device)
    assert [h["epoch"] for h in history] == list(range(1, 11))
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["val_accuracy"] > 0.85
    assert set(history[0]) == {"epoch", "train_loss", "val_loss", "val_accuracy", "lr", "seconds"}


def test_same_seed_same_numbers(digits: tuple) -> None:
    train, val = digits
    runs = [torchbp.fit(_model(), train, val_data=val, epochs=2, seed=3, verbose=False) for _ in range(2)]
    assert _without_time(runs[0]) == _without_time(runs[1])


def test_dataset_and_dataloader_work_like_tensors(digits: tuple) -> None:
    train, _ = digits
    as_tensors = torchbp.fit(_model(), train, epochs=1, seed=1, verbose=False)
    as_dataset = torchbp.fit(_model(), TensorDataset(*train), epochs=1, seed=1, verbose=False)
    assert _without_time(as_tensors) == _without_time(as_dataset)
    loader = DataLoader(TensorDataset(*train), batch_size=32)
    assert torchbp.fit(_model(), loader, epochs=1, seed=1, verbose=False)[0]["train_loss"] > 0


def test_any_module_and_any_registered_cost_and_rule(digits: tuple) -> None:
    train, val = digits
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    history = torchbp.fit(
        model,
        train,
        val_data=val,
        cost="cross_entropy",
        rule="adam",
        lr=0.01,
        epochs=3,
        batch_size=32,
        seed=0,
        verbose=False,
        amsgrad=True,
    )
    assert history[-1]["val_accuracy"] > 0.8


def test_bad_arguments_are_explained(digits: tuple) -> None:
    train, _ = digits
    with pytest.raises(TypeError, match="train_data: expected an \\(inputs, targets\\) pair"):
        torchbp.fit(_model(), [train], verbose=False)
    with pytest.raises(ValueError, match="inputs have 400 rows but targets have 399"):
        torchbp.fit(_model(), (train[0], train[1][:-1]), verbose=False)
    with pytest.raises(ValueError, match="unknown rule 'sgdd'"):
        torchbp.fit(_model(), train, rule="sgdd", verbose=False)


def test_training_hooks_are_called_in_order(digits: tuple) -> None:
    events: list[str] = []

    class Recorder:
        @torchbp.hookimpl
        def torchbp_train_start(self, run) -> None:
            events.append(f"start {run.steps_per_epoch}")

        @torchbp.hookimpl
        def torchbp_step_end(self, epoch: int, step: int) -> None:
            events.append("step")

        @torchbp.hookimpl
        def torchbp_epoch_end(self, epoch: int, metrics: dict) -> None:
            events.append(f"epoch {epoch} {metrics['epoch']}")

        @torchbp.hookimpl
        def torchbp_train_end(self, history: list) -> None:
            events.append(f"end {len(history)}")

    name = torchbp.register_plugin(Recorder(), name="recorder")
    try:
        torchbp.fit(_model(), (digits[0][0][:100], digits[0][1][:100]), epochs=2, batch_size=50, verbose=False)
    finally:
        torchbp.unregister_plugin(name)
    assert events == ["start 2", "step", "step", "epoch 0 1", "step", "step", "epoch 1 2", "end 2"]


def test_run_directories_count_up_and_hold_config_and_checkpoint(tmp_path: Path, digits: tuple) -> None:
    for version in range(2):
        torchbp.fit(_model(), digits[0], epochs=1, logdir=tmp_path, name="exp", seed=0, verbose=False)
        directory = tmp_path / "exp" / f"version_{version}"
        assert (directory / "config.toml").is_file()
        checkpoint = load_checkpoint(directory)
        assert checkpoint["epoch"] == 0 and checkpoint["config"]["seed"] == 0
    assert not list(tmp_path.rglob("*.tmp"))


def test_an_unwritable_logdir_is_a_clear_error(tmp_path: Path, digits: tuple) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(PermissionError, match="logdir: cannot create a run directory under"):
        torchbp.fit(_model(), digits[0], epochs=1, logdir=blocker / "runs", verbose=False)
    assert blocker.read_text() == "not a directory"


def test_a_corrupt_checkpoint_is_a_clear_error_and_is_kept(tmp_path: Path, digits: tuple) -> None:
    (tmp_path / "checkpoint.pt").write_bytes(b"garbage, not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable checkpoint.*left as it is"):
        torchbp.fit(_model(), digits[0], resume=tmp_path, verbose=False)
    assert (tmp_path / "checkpoint.pt").read_bytes() == b"garbage, not a checkpoint"
    with pytest.raises(CheckpointError, match="no checkpoint there"):
        load_checkpoint(tmp_path / "missing")
    run = tmp_path / "before-its-first-epoch"
    run.mkdir()
    (run / "config.toml").write_text('model = "mlp"\n')
    with pytest.raises(CheckpointError, match="ended before its first epoch did .*start it again, with the command"):
        load_checkpoint(run)


class Evil:
    def __reduce__(self):  # pragma: no cover - never unpickled
        return (os.system, ("echo pwned",))


def test_checkpoints_never_unpickle_arbitrary_objects(tmp_path: Path) -> None:
    torch.save(
        {"epoch": 0, "model": {}, "rule": {}, "history": [], "rng": Evil(), "config": {}},
        tmp_path / "checkpoint.pt",
    )
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path)


KILLED_RUN = """
import os, signal, sys, torch, torchbp
from torchbp.training import load

class Killer:
    @torchbp.hookimpl
    def torchbp_step_end(self, epoch, step):
        if epoch == 1 and step == 3:
            os.kill(os.getpid(), signal.SIGKILL)

data = load("digits")
train, val = data.split(0.2, seed=0)
torchbp.register_plugin(Killer())
torch.manual_seed(0)
torchbp.fit(torchbp.nn.MLP([64, 30, 10]), (train.inputs[:300], train.targets[:300]),
            val_data=(val.inputs[:100], val.targets[:100]), epochs=3, seed=5, logdir=sys.argv[1],
            name="killed", verbose=False, rule="sgd", lr=3.0, momentum=0.5)
"""


def test_a_run_killed_mid_epoch_resumes_to_the_same_result(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(KILLED_RUN), str(tmp_path)], check=False)
    assert result.returncode == -signal.SIGKILL
    directory = tmp_path / "killed" / "version_0"
    assert load_checkpoint(directory)["epoch"] == 0  # killed inside the second epoch

    data = load("digits")
    train, val = data.split(0.2, seed=0)
    train, val = (train.inputs[:300], train.targets[:300]), (val.inputs[:100], val.targets[:100])
    resumed_model = torchbp.nn.MLP([64, 30, 10])
    resumed = torchbp.fit(
        resumed_model,
        train,
        val_data=val,
        epochs=3,
        resume=directory,
        verbose=False,
        rule="sgd",
        lr=3.0,
        momentum=0.5,
    )
    torch.manual_seed(0)
    straight_model = torchbp.nn.MLP([64, 30, 10])
    straight = torchbp.fit(
        straight_model, train, val_data=val, epochs=3, seed=5, verbose=False, rule="sgd", lr=3.0, momentum=0.5
    )
    assert _without_time(resumed) == _without_time(straight)
    for key, value in straight_model.state_dict().items():
        assert torch.equal(resumed_model.state_dict()[key], value)


@pytest.mark.parametrize(
    "activation, cost, rule, options",
    [
        ("sigmoid", "quadratic", "sgd", {"lr": 3.0}),
        ("relu", "cross_entropy", "adam", {"lr": 0.01}),
        ("tanh", "mse", "sgd", {"lr": 0.5, "momentum": 0.9, "weight_decay": 1e-3}),
    ],
)
def test_graph_free_training_gives_the_autograd_numbers_bit_for_bit(
    digits: tuple, device: str, activation: str, cost: str, rule: str, options: dict
) -> None:
    train, val = digits
    results = []
    for graph_free in (True, False):
        torch.manual_seed(0)
        output = "identity" if cost == "cross_entropy" else None
        model = torchbp.nn.MLP([64, 30, 10], activation=activation, output_activation=output)
        history = torchbp.fit(
            model,
            train,
            val_data=val,
            cost=cost,
            rule=rule,
            epochs=2,
            seed=0,
            verbose=False,
            graph_free=graph_free,
            device=device,
            **options,
        )
        results.append((_without_time(history), model.state_dict()))
    (history_fast, weights_fast), (history_autograd, weights_autograd) = results
    assert history_fast == history_autograd
    for key, value in weights_autograd.items():
        assert torch.equal(weights_fast[key], value)


def test_targets_of_another_float_dtype_train_like_the_output_dtype() -> None:
    torch.manual_seed(0)
    x, y = torch.rand(40, 4), torch.rand(40, 2, dtype=torch.float64)
    runs = []
    for graph_free, targets in ((True, y), (False, y), (True, y.float())):
        torch.manual_seed(1)
        model = torchbp.nn.MLP([4, 3, 2])
        history = torchbp.fit(model, (x, targets), epochs=2, seed=0, graph_free=graph_free, verbose=False)
        runs.append((_without_time(history), model.state_dict()))
    for history, weights in runs[1:]:
        assert history == runs[0][0]
        for key, value in weights.items():
            assert torch.equal(value, runs[0][1][key])


def test_graph_free_needs_a_torchbp_mlp(digits: tuple) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(64, 10), torch.nn.Sigmoid())
    with pytest.raises(ValueError, match="graph_free=True needs a torchbp.nn.MLP"):
        torchbp.fit(model, digits[0], graph_free=True, verbose=False)


class _ThreadRecorder:
    def __init__(self) -> None:
        self.seen: set[int] = set()

    @torchbp.hookimpl
    def torchbp_step_end(self) -> None:
        self.seen.add(torch.get_num_threads())


@pytest.mark.parametrize(
    "model, threads, expected",
    [
        (torchbp.nn.MLP([64, 30, 10]), None, 1),  # small layers: one thread
        (torchbp.nn.MLP([64, 30, 10]), 2, 2),  # asked for
        (torch.nn.Sequential(torch.nn.Linear(64, 10), torch.nn.Sigmoid()), None, None),  # torch's own
    ],
    ids=["small-mlp", "asked", "other-module"],
)
def test_threads_while_training_and_restored_after(
    digits: tuple, model: torch.nn.Module, threads: int | None, expected: int | None
) -> None:
    before = torch.get_num_threads()
    recorder = _ThreadRecorder()
    name = torchbp.register_plugin(recorder, name="thread-recorder")
    try:
        torchbp.fit(model, (digits[0][0][:40], digits[0][1][:40]), epochs=1, threads=threads, verbose=False)
    finally:
        torchbp.unregister_plugin(name)
    assert recorder.seen == {before if expected is None else expected}
    assert torch.get_num_threads() == before


def test_threads_for_leaves_large_layers_and_gpus_alone() -> None:
    small, large = torchbp.nn.MLP([64, 30, 10]), torchbp.nn.MLP([784, 256, 10])
    assert threads_for(small, 10, torch.device("cpu")) == 1
    assert threads_for(large, 128, torch.device("cpu")) is None  # 128 × 784 × 256 ≈ 2²⁴.6
    assert threads_for(small, 10, torch.device("cuda")) is None


@pytest.mark.parametrize("threads", [0, -1, 1.5, True])
def test_bad_thread_counts_are_explained(digits: tuple, threads: object) -> None:
    with pytest.raises(ValueError, match=f"threads: expected a positive int or None, got {threads!r}"):
        torchbp.fit(_model(), digits[0], threads=threads, verbose=False)  # type: ignore[arg-type]


def test_graph_free_step_sets_the_gradients_afresh_and_checks_targets() -> None:
    torch.manual_seed(0)
    model = torchbp.nn.MLP([5, 4, 3], activation="tanh").double()
    x, y = torch.randn(6, 5, dtype=torch.float64), torch.rand(6, 3, dtype=torch.float64)
    cost = torchbp.get_cost("quadratic")
    cost(model(x), y).backward()
    expected = [p.grad.clone() for p in model.parameters()]
    for p in model.parameters():
        p.grad = torch.full_like(p, 7.0)  # stale gradients are replaced, not added to
    step = GraphFreeStep(model, cost)
    output = step(x, y)
    torch.testing.assert_close(output, model(x), rtol=0, atol=0)
    for p, grad in zip(model.parameters(), expected):
        torch.testing.assert_close(p.grad, grad, rtol=1e-14, atol=1e-15)
    with pytest.raises(ValueError, match=r"target: expected shape \(6, 3\)"):
        step(x, y[:, :2])
    with pytest.raises(ValueError, match="graph-free steps need a torchbp.nn.MLP with no module hooks, got Sequential"):
        GraphFreeStep(torch.nn.Sequential(), cost)  # type: ignore[arg-type]


class _LossRecorder:
    def __init__(self) -> None:
        self.losses: list[float] = []
        self.listening: list[bool] = []

    @torchbp.hookimpl
    def torchbp_step_end(self, loss: torch.Tensor) -> None:
        assert loss.dim() == 0
        self.losses.append(loss.item())
        self.listening.append(torchbp.get_plugin_manager().has_plugin("torchbp.training.tensorboard.steps"))


@pytest.mark.parametrize("graph_free", [True, False], ids=["graph-free", "autograd"])
def test_step_losses_reach_listeners_and_add_up_to_the_epoch_loss(
    tmp_path: Path, digits: tuple, graph_free: bool
) -> None:
    recorder = _LossRecorder()
    name = torchbp.register_plugin(recorder, name="loss-recorder")
    try:
        history = torchbp.fit(
            _model(),
            (digits[0][0][:100], digits[0][1][:100]),
            epochs=1,
            batch_size=25,
            logdir=tmp_path,
            graph_free=graph_free,
            verbose=False,
        )
    finally:
        torchbp.unregister_plugin(name)
    assert len(recorder.losses) == 4 and all(recorder.listening)  # TensorBoard's step logger, while logging
    assert history[0]["train_loss"] == pytest.approx(sum(recorder.losses) / 4, rel=1e-6)
    assert not torchbp.get_plugin_manager().has_plugin("torchbp.training.tensorboard.steps")


def test_resume_refuses_settings_that_cannot_change_and_keeps_the_runs(tmp_path: Path, digits: tuple) -> None:
    train = (digits[0][0][:100], digits[0][1][:100])
    torchbp.fit(
        _model(),
        train,
        epochs=1,
        lr=0.5,
        batch_size=20,
        logdir=tmp_path,
        name="kept",
        seed=4,
        verbose=False,
        momentum=0.5,
    )
    directory = tmp_path / "kept" / "version_0"
    for changed, words in [
        ({"lr": 0.1}, "lr=0.1 (the run has 0.5)"),
        ({"rule": "adam"}, "rule='adam' (the run has 'sgd')"),
        ({"momentum": 0.9}, "rule_options={'momentum': 0.9} (the run has {'momentum': 0.5})"),
        ({"batch_size": 7, "seed": 1}, "batch_size=7 (the run has 20), seed=1 (the run has 4)"),
        ({"patience": 3}, "patience=3 (the run has 0)"),
    ]:
        with pytest.raises(ValueError, match="only epochs and device may change, got " + re.escape(words)):
            torchbp.fit(_model(), train, epochs=2, resume=directory, verbose=False, **changed)
    assert tomllib.loads((directory / "config.toml").read_text())["epochs"] == 1  # untouched
    # settings left at fit's defaults take the run's: lr 0.5, batch 20, momentum 0.5
    history = torchbp.fit(_model(), train, epochs=2, resume=directory, verbose=False)
    assert history[-1]["lr"] == 0.5
    config = tomllib.loads((directory / "config.toml").read_text())
    assert (config["lr"], config["batch_size"], config["rule_options"], config["epochs"]) == (
        0.5,
        20,
        {"momentum": 0.5},
        2,
    )
    assert load_checkpoint(directory)["rule"]["param_groups"][0]["momentum"] == 0.5


def _dropout_net() -> torch.nn.Module:
    """A converted net with dropout: its training steps draw from torch's RNG."""
    return torchbp.nn.convert(
        torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Dropout(0.3), torch.nn.Linear(32, 10))
    )


def test_a_resumed_run_with_dropout_and_shuffling_equals_an_unbroken_one(tmp_path: Path, digits: tuple) -> None:
    train, val = (digits[0][0][:160], digits[0][1][:160]), (digits[1][0][:100], digits[1][1][:100])
    options = dict(val_data=val, cost="cross_entropy", lr=0.1, momentum=0.5, batch_size=32, verbose=False)
    torch.manual_seed(0)
    straight_model = _dropout_net()
    straight = torchbp.fit(straight_model, train, epochs=3, seed=11, logdir=tmp_path / "straight", **options)

    torch.manual_seed(0)
    stopped = torchbp.fit(_dropout_net(), train, epochs=1, seed=11, logdir=tmp_path / "stopped", **options)
    torch.manual_seed(1)  # another global RNG state, and other initial weights: the checkpoint restores both
    resumed_model = _dropout_net()
    resumed = torchbp.fit(
        resumed_model, train, epochs=3, resume=tmp_path / "stopped" / "torchbp-run" / "version_0", **options
    )
    assert _without_time(resumed) == _without_time(straight)
    assert _without_time(stopped) == _without_time(straight)[:1]
    for key, value in straight_model.state_dict().items():
        assert torch.equal(resumed_model.state_dict()[key], value), key

    # the run really depends on the RNG: another seed gives other numbers
    torch.manual_seed(0)
    other = torchbp.fit(_dropout_net(), train, epochs=1, seed=12, **options)
    assert other[0]["train_loss"] != straight[0]["train_loss"]


class _RowRecorder(torch.nn.Module):
    """A linear model of the second input column that notes the first, each row's number, per training step."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(1, 1)
        self.rows: list[list[int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.rows.append(x[:, 0].long().tolist())
        return self.linear(x[:, 1:])


class _Rows(torch.utils.data.Dataset):
    """A map-style dataset that is not a TensorDataset."""

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        self.inputs, self.targets = inputs, targets

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inputs[index], self.targets[index]


def _epoch_orders(form: str, seed: int | None, epochs: int = 3, resumed: int = 0, **options: Any) -> list[list[int]]:
    """The order in which ``fit`` hands 24 numbered rows to the model, per epoch trained (batches of
    5), ``resumed`` epochs having been trained before."""
    generator = torch.Generator().manual_seed(0)
    inputs = torch.stack([torch.arange(24.0), torch.randn(24, generator=generator)], 1)
    targets = torch.randn(24, 1, generator=generator)
    data = {"tensors": (inputs, targets), "dataset": _Rows(inputs, targets)}[form]
    model = _RowRecorder()
    torchbp.fit(model, data, epochs=epochs, batch_size=5, seed=seed, lr=1e-3, verbose=False, **options)
    assert [len(rows) for rows in model.rows] == [5, 5, 5, 5, 4] * (epochs - resumed)
    rows = [row for step in model.rows for row in step]
    return [rows[start : start + 24] for start in range(0, len(rows), 24)]


@pytest.mark.parametrize("form", ["tensors", "dataset"])
def test_shuffling_differs_between_epochs_and_repeats_for_the_same_seed(form: str) -> None:
    orders = _epoch_orders(form, seed=4)
    assert all(sorted(order) == list(range(24)) for order in orders)  # every row once per epoch
    assert len({tuple(order) for order in [*orders, list(range(24))]}) == 4  # each epoch its own order
    assert _epoch_orders(form, seed=4) == orders  # the same seed: the same orders
    assert _epoch_orders(form, seed=5)[0] != orders[0]  # another seed: another order
    assert _epoch_orders("tensors", seed=4) == orders  # the order depends on (seed, epoch) only


def test_a_resumed_run_sees_the_epochs_in_the_unbroken_runs_order(tmp_path: Path) -> None:
    straight = _epoch_orders("tensors", seed=4)
    assert _epoch_orders("tensors", seed=4, epochs=1, logdir=tmp_path) == straight[:1]
    torch.manual_seed(123)  # another global RNG state: the checkpoint's seed decides the order
    resumed = _epoch_orders("tensors", seed=None, resumed=1, resume=tmp_path / "torchbp-run" / "version_0")
    assert resumed == straight[1:]


@pytest.mark.parametrize("training", [True, False], ids=["from-train-mode", "from-eval-mode"])
def test_evaluate_scores_in_eval_mode_over_uneven_batches_and_restores_the_mode(training: bool) -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(10, 4, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 3, (10,), generator=generator)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Dropout(0.5)).double()
    model.train(training)
    # batches of 3, 3, 3 and 1: each batch weighs by its number of examples
    metrics = evaluate(model, torchbp.get_cost("cross_entropy"), (x, y), torch.device("cpu"), batch_size=3)
    assert model.training is training
    with torch.no_grad():
        output = model.eval()(x)  # dropout off, as in evaluation
    torch.testing.assert_close(metrics["loss"], torch.nn.functional.cross_entropy(output, y).item())
    assert metrics["accuracy"] == (output.argmax(1) == y).double().mean().item()
