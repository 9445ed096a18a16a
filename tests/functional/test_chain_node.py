"""torchbp.functional.chain_node: a run of layers in a Sequential as one node, equal to the layers one by one."""

from __future__ import annotations

import copy
import gc
import weakref

import pytest
import torch
from test_layer_harness import graph_node_names
from torch.autograd import gradcheck, gradgradcheck

import torchbp
from torchbp.nn.models import lenet, small_resnet


def _one_by_one(model: torch.nn.Module) -> torch.nn.Module:
    """The same converted model, its Sequentials back to torch's: every layer its own node."""
    twin = copy.deepcopy(model)
    for module in twin.modules():
        if type(module) is torchbp.nn.Sequential:
            module.__class__ = torch.nn.Sequential
    return twin


@pytest.mark.parametrize(
    ("build", "shape"),
    [(lambda: lenet(8), (6, 64)), (small_resnet, (4, 1, 12, 12))],
    ids=["lenet", "resnet"],
)
def test_chain_equals_the_layers_one_by_one_bit_for_bit(build: object, shape: tuple[int, ...], device: str) -> None:
    torch.manual_seed(0)
    chained = build().to(device)  # type: ignore[operator]
    separate = _one_by_one(chained)
    x = torch.randn(*shape, device=device)
    # batch norm's running statistics move the same way, step after step; the second step's input,
    # like training data, takes no gradient, and the parameters below the last layer still get theirs
    for step, input_grad in enumerate((True, False)):
        x_chained, x_separate = x.clone().requires_grad_(input_grad), x.clone().requires_grad_(input_grad)
        out_chained, out_separate = chained(x_chained), separate(x_separate)
        assert "ChainFunctionBackward" in graph_node_names(out_chained)
        assert "ChainFunctionBackward" not in graph_node_names(out_separate)
        grad = torch.randn_like(out_chained)
        out_chained.backward(grad)
        out_separate.backward(grad)
        torch.testing.assert_close(out_chained, out_separate, rtol=0, atol=0)
        torch.testing.assert_close(x_chained.grad, x_separate.grad, rtol=0, atol=0)
        for (name, a), b in zip(chained.named_parameters(), separate.parameters()):
            assert a.grad is not None, f"{name}, step {step}"
            torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0, msg=f"{name}, step {step}")
        for (name, a), b in zip(chained.named_buffers(), separate.buffers()):
            torch.testing.assert_close(a, b, rtol=0, atol=0, msg=f"{name}, step {step}")


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_chain_gradcheck_and_gradgradcheck(training: bool) -> None:
    torch.manual_seed(0)
    model = small_resnet(width=4).double().train(training)
    x = torch.randn(2, 1, 6, 6, dtype=torch.float64, requires_grad=True)

    def function(x: torch.Tensor) -> torch.Tensor:
        with torch.random.fork_rng(devices=[]):
            return model(x)

    # the running statistics move on every call in training; the output does not depend on them
    assert gradcheck(function, (x,))
    assert gradgradcheck(function, (x,))


def test_delta_hooks_fire_inside_a_chain_with_the_layers_delta() -> None:
    torch.manual_seed(0)
    model = torchbp.nn.convert(torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.ReLU(), torch.nn.Flatten()))
    seen: list[torch.Tensor] = []
    model[0].register_delta_hook(lambda layer, delta: seen.append(delta))
    x = torch.randn(2, 1, 5, 5)
    out = model(x)
    assert "ChainFunctionBackward" in graph_node_names(out)
    out.pow(2).sum().backward()
    (delta,) = seen
    assert delta.shape == (2, 3, 3, 3)
    torch.testing.assert_close(delta.sum((0, 2, 3)), model[0].bias.grad)  # BP3: ∂C/∂b = Σ δ


def test_a_module_hook_takes_its_layer_out_of_the_chain_and_fires() -> None:
    model = torchbp.nn.convert(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)))
    calls: list[tuple[int, ...]] = []
    handle = model[1].register_full_backward_hook(lambda module, grad_in, grad_out: calls.append(grad_out[0].shape))
    out = model(torch.randn(5, 3))
    assert "ChainFunctionBackward" not in graph_node_names(out)
    out.sum().backward()
    assert calls == [(5, 4)]
    handle.remove()
    assert "ChainFunctionBackward" in graph_node_names(model(torch.randn(5, 3)))


def test_layers_that_cannot_link_split_the_chain() -> None:
    model = torchbp.nn.convert(
        torch.nn.Sequential(
            torch.nn.Linear(3, 4),
            torch.nn.Dropout(0.5),
            torch.nn.Linear(4, 4),
            torch.nn.Tanh(),
            torch.nn.LSTMCell(4, 2),
        )
    )
    x = torch.randn(5, 3)
    h, _ = model(x)
    names = graph_node_names(h)
    assert {"LinearFunctionBackward", "DropoutFunctionBackward", "ChainFunctionBackward"} <= names


def test_bad_input_inside_a_chain_is_the_layers_own_error() -> None:
    model = lenet(8)
    with pytest.raises(ValueError, match="input: expected 6 channels"):
        torchbp.nn.convert(torch.nn.Sequential(torch.nn.Conv2d(6, 2, 3), torch.nn.ReLU()))(torch.randn(1, 5, 4, 4))
    with pytest.raises(
        ValueError, match=r"input: expected dim 1 of size 64, to be unflattened into \(1, 8, 8\), got shape \(2, 63\)"
    ):
        model(torch.randn(2, 63))


def test_a_layer_used_twice_gets_each_uses_gradient_once_on_a_second_and_a_double_backward() -> None:
    torch.manual_seed(0)
    linear = torch.nn.Linear(4, 4).double()
    native = torch.nn.Sequential(linear, torch.nn.Tanh(), linear)
    ours = torchbp.nn.convert(copy.deepcopy(native))
    assert ours[0] is ours[2]
    x = torch.randn(3, 4, dtype=torch.float64)
    grads = []
    for model in (native, ours):
        out = model(x).pow(2).sum()
        first = torch.autograd.grad(out, model[0].weight, retain_graph=True)[0]
        second = torch.autograd.grad(out, model[0].weight, retain_graph=True)[0]
        (g,) = torch.autograd.grad(out, model[0].weight, create_graph=True)
        (hvp,) = torch.autograd.grad(g.sum(), model[0].weight)
        grads.append((first, second, g.detach(), hvp))
    for theirs, mine in zip(*grads):
        torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-12)
    weight = linear.weight.detach().requires_grad_()
    assert gradgradcheck(lambda w: torch.func.functional_call(ours, {"0.weight": w}, (x,)), (weight,))


def test_no_chain_where_nothing_is_recorded_or_saved_tensors_are_hooked() -> None:
    model = torchbp.nn.convert(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)))
    x = torch.randn(5, 3)
    with torch.inference_mode():
        torch.testing.assert_close(model(x), torchbp.nn.revert(copy.deepcopy(model))(x))
    packed: list[torch.Tensor] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: packed.append(t) or t, lambda t: t):
        out = model(x)
    assert "ChainFunctionBackward" not in graph_node_names(out)
    assert len(packed) >= 4  # each layer's own tensors went through the hooks


def test_a_remembered_link_follows_its_layers_attributes_and_parameters() -> None:
    torch.manual_seed(0)
    native = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten())
    ours = torchbp.nn.convert(copy.deepcopy(native))
    x = torch.randn(2, 2, 8, 8)
    for change in (
        lambda m: setattr(m[0], "stride", (2, 2)),
        lambda m: setattr(m[0], "padding", (1, 1)),
        lambda m: setattr(m[2], "kernel_size", 3),
    ):
        change(native)
        change(ours)
        out = ours(x)
        assert "ChainFunctionBackward" in graph_node_names(out)
        torch.testing.assert_close(out, native(x), rtol=0, atol=0)
    with torch.no_grad():  # a new kernel size, without an attribute of the layer being set
        ours[0].weight.data = torch.randn(3, 2, 5, 5)
    with pytest.raises(ValueError, match="smaller than the kernel"):
        ours(torch.randn(1, 2, 2, 2))  # padded to 4 × 4, smaller than the new 5 × 5 kernel
    with pytest.raises(ValueError, match="input: expected 2 channels"):
        ours(torch.randn(2, 4, 8, 8))  # each new input signature is checked on its first call


def test_a_remembered_link_is_worked_out_again_for_each_new_input_shape() -> None:
    torch.manual_seed(0)
    native = torch.nn.Sequential(
        torch.nn.Conv2d(2, 3, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2, ceil_mode=True), torch.nn.Flatten()
    )
    ours = torchbp.nn.convert(copy.deepcopy(native))
    for shape in [(2, 2, 8, 8), (3, 2, 7, 9), (2, 2, 8, 8)]:
        x = torch.randn(shape)
        out = ours(x)
        assert "ChainFunctionBackward" in graph_node_names(out)
        torch.testing.assert_close(out, native(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="input: expected 2 channels"):
        ours(torch.randn(2, 4, 8, 8))  # the same dtype and device, another shape: checked again


def test_a_remembered_link_is_neither_copied_nor_pickled(tmp_path: object) -> None:
    model = torchbp.nn.convert(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)))
    model(torch.randn(5, 3))
    assert "_link_memo" in model[0].__dict__
    assert "_link_memo" not in copy.deepcopy(model)[0].__dict__
    path = f"{tmp_path}/model.pt"
    torch.save(model, path)
    assert "_link_memo" not in torch.load(path, weights_only=False)[0].__dict__


def test_a_layer_called_without_grad_runs_no_function() -> None:
    model = torchbp.nn.convert(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Sigmoid()))
    x = torch.randn(5, 3)
    with torch.no_grad():
        out = model(x)
    assert out.grad_fn is None
    torch.testing.assert_close(out, torch.sigmoid(torch.nn.functional.linear(x, model[0].weight, model[0].bias)))
    with torch.no_grad(), torch.autograd.forward_ad.dual_level():  # forward-mode AD still gets the layer's jvp
        dual = torch.autograd.forward_ad.make_dual(x, torch.ones_like(x))
        tangent = torch.autograd.forward_ad.unpack_dual(model(dual)).tangent
    assert tangent is not None


def test_a_dense_layer_in_a_sequential_runs_its_own_fused_node() -> None:
    torch.manual_seed(0)
    model = torchbp.nn.Sequential(torchbp.nn.Dense(3, 4, "tanh"), torchbp.nn.Dense(4, 2, "sigmoid"))
    x = torch.randn(5, 3)
    out = model(x)
    assert "ChainFunctionBackward" not in graph_node_names(out)
    expected = torch.sigmoid(torch.tanh(x @ model[0].weight.t() + model[0].bias) @ model[1].weight.t() + model[1].bias)
    torch.testing.assert_close(out, expected)
    out.sum().backward()
    assert model[0].weight.grad is not None


def _sigmoid_stack() -> torch.nn.Module:
    # the sigmoid reads σ′ off its output, so the chain keeps its output too
    return torchbp.nn.convert(
        torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(6, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2), torch.nn.Sigmoid()
        )
    )


@pytest.mark.parametrize(
    "change",
    [
        lambda model, x, out: x.mul_(2),
        lambda model, x, out: x.view(-1)[0].add_(1),  # through a view of the input, as Flatten's output is
        lambda model, x, out: torch.no_grad()(model[1].weight.mul_)(2),
        lambda model, x, out: out.mul_(2),
    ],
    ids=["input", "view of the input", "weight", "output"],
)
def test_a_tensor_the_chain_reads_changed_in_place_is_an_error(change: object) -> None:
    torch.manual_seed(0)
    model = _sigmoid_stack()
    x = torch.randn(5, 2, 3, requires_grad=True) * 1  # not a leaf, so that it may be changed in place
    out = model(x)
    assert "ChainFunctionBackward" in graph_node_names(out)
    change(model, x, out)  # type: ignore[operator]
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


def test_a_layer_keeping_a_tensor_from_outside_the_chain_checks_its_version() -> None:
    # a feedback rule's B is a buffer of the layer, not a tensor the chain made or was handed
    torch.manual_seed(0)
    model = torchbp.nn.convert(
        torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)), feedback="fa"
    )
    out = model(torch.randn(5, 3, requires_grad=True))
    assert "ChainFunctionBackward" in graph_node_names(out)
    with torch.no_grad():
        model[2].feedback_weight.mul_(2)
    with pytest.raises(RuntimeError, match="the feedback layer saved for its backward pass was changed in place"):
        out.sum().backward()


@pytest.mark.parametrize("last", [torch.nn.Sigmoid, torch.nn.ReLU, None], ids=["sigmoid", "relu", "linear"])
def test_the_chain_does_not_hold_its_own_output(last: type[torch.nn.Module] | None) -> None:
    # a node keeping its output outside save_for_backward would keep itself alive through the
    # output's grad_fn: a reference cycle, freed by the garbage collector only
    layers = [torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)]
    model = torchbp.nn.convert(torch.nn.Sequential(*layers, *([] if last is None else [last()])))
    gc.disable()
    try:
        out = model(torch.randn(5, 3))
        assert "ChainFunctionBackward" in graph_node_names(out)
        ref = weakref.ref(out)
        del out
        assert ref() is None
    finally:
        gc.enable()


@pytest.mark.parametrize(
    ("last", "reads_output"),
    [(torch.nn.Sigmoid(), True), (torch.nn.BatchNorm1d(4), False)],
    ids=["sigmoid", "batch norm"],
)
def test_the_chain_keeps_its_output_only_where_a_layer_reads_it(last: torch.nn.Module, reads_output: bool) -> None:
    # σ′ is read off the sigmoid's output; batch norm reads its input: its output may go once the caller is done
    model = torchbp.nn.convert(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), last))
    out = model(torch.randn(5, 3))
    kept = out.grad_fn.saved_tensors[-1]
    if reads_output:
        assert torch.equal(kept, out)
    else:
        assert kept is None
    out.sum().backward()
    assert model[0].weight.grad is not None


@pytest.mark.parametrize("momentum", [0.1, None], ids=["momentum 0.1", "cumulative average"])
def test_batch_norm_in_a_chain_counts_every_batch_and_follows_train_and_eval(momentum: float | None) -> None:
    torch.manual_seed(0)
    native = torch.nn.Sequential(
        torch.nn.Conv2d(2, 3, 3), torch.nn.BatchNorm2d(3, momentum=momentum), torch.nn.ReLU(), torch.nn.Flatten()
    )
    ours = torchbp.nn.convert(copy.deepcopy(native))
    for step in range(6):
        training = step not in (2, 3)
        native.train(training)
        ours.train(training)
        x = torch.randn(4, 2, 6, 6)
        out = ours(x)
        assert "ChainFunctionBackward" in graph_node_names(out)
        torch.testing.assert_close(out, native(x))
        for (name, a), b in zip(ours.named_buffers(), native.buffers()):
            torch.testing.assert_close(a, b, msg=f"{name}, step {step}")
    assert int(ours[1].num_batches_tracked) == 4


def test_batch_norm_with_a_cumulative_average_moves_its_statistics_by_each_batchs_count_in_a_chain() -> None:
    # momentum None: each batch's momentum is 1 / (batches counted), so the layer's link changes every step
    torch.manual_seed(0)
    native = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4, momentum=None), torch.nn.Tanh())
    ours = torchbp.nn.convert(copy.deepcopy(native))
    for step in range(4):  # no train() between the steps: nothing but the count changes
        x = torch.randn(8, 3)
        out = ours(x)
        assert "ChainFunctionBackward" in graph_node_names(out)
        torch.testing.assert_close(out, native(x))
        for (name, a), b in zip(ours.named_buffers(), native.buffers()):
            torch.testing.assert_close(a, b, msg=f"{name}, step {step}")


@pytest.mark.parametrize("second", ["retain_graph", "create_graph"])
def test_a_replayed_chain_leaves_the_batch_norm_running_statistics_alone(second: str) -> None:
    torch.manual_seed(0)
    native = torch.nn.Sequential(
        torch.nn.Conv2d(2, 3, 3), torch.nn.BatchNorm2d(3), torch.nn.Tanh(), torch.nn.Flatten()
    ).double()
    ours = torchbp.nn.convert(copy.deepcopy(native))
    x = torch.randn(4, 2, 5, 5, dtype=torch.float64)
    results = []
    for model in (native, ours):
        out = model(x).pow(2).sum()
        (first,) = torch.autograd.grad(out, model[0].weight, retain_graph=True)
        if second == "retain_graph":  # a second backward replays the chain
            (again,) = torch.autograd.grad(out, model[0].weight)
        else:  # so does a double backward
            (g,) = torch.autograd.grad(out, model[0].weight, create_graph=True)
            (again,) = torch.autograd.grad(g.square().sum(), model[0].weight)
        results.append((first, again, *model.buffers()))
    for theirs, mine in zip(*results):
        torch.testing.assert_close(mine, theirs, rtol=1e-10, atol=1e-10)


# one layer of each kind with settings away from its defaults, and an input: in a chain (after a Tanh,
# before two) its link must give the equations of its own call, settings included; a convolution whose
# padding is a layer of its own stays out of the chain
LINKED_SETTINGS = [
    (torch.nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect"), (2, 2, 5, 5)),
    (torch.nn.Conv2d(2, 3, 3, padding=1, padding_mode="circular"), (2, 2, 5, 5)),
    (torch.nn.Conv1d(2, 3, 3, stride=2, padding=2, dilation=2), (2, 2, 9)),
    (torch.nn.MaxPool2d(2, dilation=2), (2, 2, 6, 6)),
    (torch.nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False), (2, 2, 5, 5)),
    (torch.nn.AvgPool2d(2, divisor_override=3), (2, 2, 4, 4)),
    (torch.nn.Flatten(1, 2), (2, 3, 4, 5)),
    (torch.nn.Unflatten(1, (2, 3)), (4, 6)),
    (torch.nn.LayerNorm(4, eps=0.5), (3, 4)),
    (torch.nn.RMSNorm(4), (3, 4)),  # eps=None: the input dtype's eps, which small inputs feel
    (torch.nn.Softplus(beta=2.0, threshold=1.0), (3, 4)),
    (torch.nn.GELU(approximate="tanh"), (3, 4)),
    (torch.nn.LeakyReLU(0.3), (3, 4)),
    (torch.nn.ELU(alpha=0.5), (3, 4)),
    (torch.nn.Softmax(dim=0), (3, 4)),
]


@pytest.mark.parametrize(("layer", "shape"), LINKED_SETTINGS, ids=[repr(layer) for layer, _ in LINKED_SETTINGS])
def test_each_layers_settings_hold_inside_a_chain(layer: torch.nn.Module, shape: tuple[int, ...]) -> None:
    native = torch.nn.Sequential(torch.nn.Tanh(), copy.deepcopy(layer), torch.nn.Tanh(), torch.nn.Tanh()).double()
    ours = torchbp.nn.convert(copy.deepcopy(native))
    scale = 1e-4 if isinstance(layer, torch.nn.RMSNorm) else 2.0
    x = scale * torch.randn(shape, dtype=torch.float64)
    x_native, x_ours = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_native, out_ours = native(x_native), ours(x_ours)
    assert "ChainFunctionBackward" in graph_node_names(out_ours)
    torch.testing.assert_close(out_ours, out_native)
    grad = torch.randn_like(out_native)
    out_native.backward(grad)
    out_ours.backward(grad)
    torch.testing.assert_close(x_ours.grad, x_native.grad)
    for (name, a), b in zip(ours.named_parameters(), native.parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=name)


def test_a_max_pool_returning_indices_runs_by_its_own_call_and_hands_them_out() -> None:
    native = torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Tanh(), torch.nn.MaxPool2d(2, return_indices=True))
    ours = torchbp.nn.convert(copy.deepcopy(native))
    x = torch.randn(2, 3, 4, 4)
    (values, indices), (values_native, indices_native) = ours(x), native(x)
    torch.testing.assert_close(values, values_native)
    assert torch.equal(indices, indices_native)
