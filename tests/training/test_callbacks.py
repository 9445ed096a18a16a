"""fit(callbacks=[…]): training hooks for one call only; module hooks put on in train_start fire."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import torchbp
from torchbp.training import load


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    digits = load("digits")
    return digits.inputs[:120], digits.targets[:120]


def _model() -> torchbp.nn.MLP:
    torch.manual_seed(0)
    return torchbp.nn.MLP([64, 12, 10])


class Recorder:
    def __init__(self) -> None:
        self.events: list[str] = []

    @torchbp.hookimpl
    def torchbp_train_start(self, run) -> None:
        self.events.append("start")

    @torchbp.hookimpl
    def torchbp_step_end(self, step: int) -> None:
        self.events.append(f"step {step}")

    @torchbp.hookimpl
    def torchbp_epoch_end(self, epoch: int, metrics: dict) -> None:
        self.events.append(f"epoch {epoch} {metrics['train_loss']:.6f}")

    @torchbp.hookimpl
    def torchbp_train_end(self, run, history: list) -> None:
        self.events.append(f"end {run.status} {len(history)}")


def test_a_callback_fires_in_its_own_call_only(data: tuple) -> None:
    first, second = Recorder(), Recorder()
    history = torchbp.fit(_model(), data, epochs=2, batch_size=60, callbacks=[first], verbose=False)
    torchbp.fit(_model(), data, epochs=1, batch_size=60, callbacks=[second], verbose=False)
    epochs = [f"epoch {i} {h['train_loss']:.6f}" for i, h in enumerate(history)]
    assert first.events == ["start", "step 0", "step 1", epochs[0], "step 0", "step 1", epochs[1], "end finished 2"]
    assert second.events[0] == "start" and second.events[-1] == "end finished 1" and len(second.events) == 5
    assert not any(
        name.startswith("torchbp.fit.callbacks") for name, _ in torchbp.get_plugin_manager().list_name_plugin()
    )


def test_callbacks_are_unregistered_when_training_fails(data: tuple) -> None:
    class Failing(Recorder):
        @torchbp.hookimpl
        def torchbp_step_end(self, step: int) -> None:
            raise RuntimeError("boom")

    failing = Failing()
    with pytest.raises(RuntimeError, match="boom"):
        torchbp.fit(_model(), data, epochs=2, callbacks=[failing], verbose=False)
    assert failing.events == ["start", "end failed 0"]  # train_end ran, with the run's status
    assert not torchbp.get_plugin_manager().is_registered(failing)


def test_bad_callbacks_are_explained(data: tuple, tmp_path: Path) -> None:
    class Misspelt:
        @torchbp.hookimpl
        def torchbp_epoch_ends(self, epoch: int) -> None:
            pass

    class WrongArgument:
        @torchbp.hookimpl
        def torchbp_epoch_end(self, epochs: int) -> None:
            pass

    with pytest.raises(torchbp.PluginError, match=r"callbacks\[0\] \(Misspelt\).*it has torchbp_epoch_ends"):
        torchbp.fit(_model(), data, callbacks=[Misspelt()], verbose=False)
    with pytest.raises(torchbp.PluginError, match=r"callbacks\[1\] \(WrongArgument\).*epochs"):
        torchbp.fit(_model(), data, callbacks=[Recorder(), WrongArgument()], logdir=tmp_path, verbose=False)
    assert not any(tmp_path.iterdir())  # refused before a run directory was made
    with pytest.raises(torchbp.PluginError, match=r"callbacks\[0\] \(object\).*it has none"):
        torchbp.fit(_model(), data, callbacks=[object()], verbose=False)
    with pytest.raises(TypeError, match="callbacks: expected a list"):
        torchbp.fit(_model(), data, callbacks=Recorder(), verbose=False)  # type: ignore[arg-type]
    assert not any(
        name.startswith("torchbp.fit.callbacks") for name, _ in torchbp.get_plugin_manager().list_name_plugin()
    )


class HookOnTheModel:
    """Puts a forward and a full backward hook on the first layer at train_start, removes them at the end."""

    def __init__(self) -> None:
        self.forward_outputs: list[torch.Tensor] = []
        self.backward_grads: list[torch.Tensor] = []
        self.handles: list = []
        self.bias_grads: list[torch.Tensor] = []

    @torchbp.hookimpl
    def torchbp_train_start(self, run) -> None:
        layer = run.model.layers[0]
        self.handles = [
            layer.register_forward_hook(lambda module, args, output: self.forward_outputs.append(output.detach())),
            layer.register_full_backward_hook(
                lambda module, grad_in, grad_out: self.backward_grads.append(grad_out[0].detach())
            ),
        ]

    @torchbp.hookimpl
    def torchbp_step_end(self, run) -> None:
        self.bias_grads.append(run.model.layers[0].bias.grad.clone())

    @torchbp.hookimpl
    def torchbp_train_end(self) -> None:
        for handle in self.handles:
            handle.remove()


@pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")  # the input needs no gradient
def test_module_hooks_put_on_in_train_start_fire_every_step(data: tuple) -> None:
    hook = HookOnTheModel()
    torchbp.fit(_model(), data, epochs=2, batch_size=40, callbacks=[hook], verbose=False)
    assert len(hook.forward_outputs) == len(hook.backward_grads) == 6  # 3 steps × 2 epochs
    # the backward hook sees ∂C/∂a of the layer; for its Dense (a = σ(z)) the bias gradient is Σₖ δₖ
    for outputs, grad_a, bias_grad in zip(hook.forward_outputs, hook.backward_grads, hook.bias_grads):
        delta = grad_a * outputs * (1 - outputs)  # δ = ∂C/∂a ⊙ σ′(z), σ′ = σ(1 − σ)
        torch.testing.assert_close(delta.sum(0), bias_grad, rtol=1e-5, atol=1e-7)


def test_module_hooks_put_on_before_fit_fire_every_step(data: tuple) -> None:
    model = _model()
    calls: list[int] = []
    handle = model.layers[1].register_forward_pre_hook(lambda module, args: calls.append(len(args[0])))
    try:
        torchbp.fit(model, data, epochs=2, batch_size=50, verbose=False)
    finally:
        handle.remove()
    # 3 steps per epoch (50, 50, 20 examples), and one 1-row probe encoding the targets
    assert calls == [1, 50, 50, 20, 50, 50, 20]


def test_graph_free_true_refuses_hooks_it_would_skip(data: tuple) -> None:
    hook = HookOnTheModel()
    with pytest.raises(ValueError, match="graph_free=True: a torchbp_train_start hook put module hooks on the model"):
        torchbp.fit(_model(), data, epochs=1, graph_free=True, callbacks=[hook], verbose=False)
    assert hook.forward_outputs == []


def test_a_callback_already_registered_as_a_plugin_is_refused(data: tuple) -> None:
    recorder = Recorder()
    name = torchbp.register_plugin(recorder, name="recorder")
    try:
        with pytest.raises(torchbp.PluginError, match=r"callbacks\[0\] \(Recorder\) is already registered as a plugin"):
            torchbp.fit(_model(), data, epochs=1, callbacks=[recorder], verbose=False)
    finally:
        torchbp.unregister_plugin(name)
    assert recorder.events == []  # refused before anything ran
