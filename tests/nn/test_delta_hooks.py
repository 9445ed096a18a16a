"""δ hooks on every torchbp layer with parameters: the δ handed over is the true ∂C/∂z, on every path.

The cost is a batch mean, C = (1/n) Σₖ Cₖ (torchbp's convention and ``reduction="mean"``'s), so
example k's δ is (1/n) ∂Cₖ/∂zₖ and BP3 and BP4 sum δ over the examples (and positions) with no
further 1/n: Σₖ δₖ = ∂C/∂b, δᵀ a = ∂C/∂W. The oracles are torch.nn's own layers (their outputs'
gradients, retained) and those sums written out; the δ seen by a hook is never compared with a
number the same torchbp code produced.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch

import torchbp
import torchbp.nn as tnn
from torchbp.specs import LayerSpec
from torchbp.training.graph_free import GraphFreeStep

Seen = list[tuple[torch.nn.Module, torch.Tensor]]

# every registered twin with parameters of its own, with each of its examples. Only leaves: a twin
# whose forward is one explicit-δ node, so that its δ is the gradient of its output. A twin that
# holds sub-modules (TransformerEncoderLayer, MultiheadAttention with its output projection) has
# no single δ at its output: its children's hooks see theirs, and MultiheadAttention's own hooks
# see the attention's δ before the output projection.
TWINS_WITH_PARAMETERS = [
    (entry.spec, index)
    for entry in torchbp.list_layers()
    if entry.spec.examples is not None
    for index, (module, _) in enumerate(entry.spec.examples(torch.float64))
    if not module._modules and any(True for _ in module.parameters(recurse=False))
]

NATIVE_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "relu": torch.relu,
    "identity": lambda z: z,
    "softmax": lambda z: torch.softmax(z, -1),
}


def _batch_mean_cost(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """C = (1/n) Σₖ Cₖ with Cₖ = ½ ‖aₖ − yₖ‖², written with plain torch ops (n = rows)."""
    return ((output - target).square().reshape(len(output), -1).sum(1) / 2).mean()


def _recorder(seen: Seen) -> Callable[[torch.nn.Module, torch.Tensor], None]:
    return lambda layer, delta: seen.append((layer, delta.clone()))


def _channel_dims(module: torch.nn.Module, delta: torch.Tensor) -> list[int]:
    """The dimensions of δ that run along the bias (those BP3 does not sum over)."""
    if isinstance(module, torch.nn.Linear):
        return [delta.dim() - 1]
    if isinstance(module, torch.nn.modules.conv._ConvNd):
        return [delta.dim() - len(module.kernel_size) - 1]  # (N, C, *spatial) or unbatched (C, *spatial)
    if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
        return [1]
    if isinstance(module, (torch.nn.LayerNorm, torch.nn.RMSNorm)):
        return list(range(delta.dim() - len(module.normalized_shape), delta.dim()))  # the trailing normalized_shape
    raise AssertionError(f"tell this test where {type(module).__name__}'s δ has its channels")


def _sum_but(delta: torch.Tensor, dims: list[int]) -> torch.Tensor:
    """BP3's Σ over the examples and positions: every dimension but ``dims``."""
    return delta.sum([d for d in range(delta.dim()) if d not in dims])


def _normalised(module: torch.nn.LayerNorm | torch.nn.RMSNorm, x: torch.Tensor) -> torch.Tensor:
    """x̂ over the trailing ``normalized_shape``: (x − μ)/√(σ² + ε) (biased σ²), or x/√(⟨x²⟩ + ε)."""
    dims = list(range(x.dim() - len(module.normalized_shape), x.dim()))
    if isinstance(module, torch.nn.LayerNorm):
        mean, var = x.mean(dims, keepdim=True), x.var(dims, unbiased=False, keepdim=True)
        return (x - mean) / (var + module.eps).sqrt()
    eps = torch.finfo(x.dtype).eps if module.eps is None else module.eps
    return x / (x.square().mean(dims, keepdim=True) + eps).sqrt()


def _scattered(module: torch.nn.Embedding, indices: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """∂C/∂W of a lookup: each δ row added into the row of its index (divided by that index's count
    with ``scale_grad_by_freq``); the ``padding_idx`` row gets nothing."""
    rows = delta.reshape(-1, module.embedding_dim)
    flat = indices.reshape(-1)
    if module.scale_grad_by_freq:
        rows = rows / torch.bincount(flat, minlength=module.num_embeddings)[flat].unsqueeze(1)
    gradient = torch.zeros_like(module.weight).index_add_(0, flat, rows)
    if module.padding_idx is not None:
        gradient[module.padding_idx] = 0
    return gradient


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize(
    ("spec", "index"), TWINS_WITH_PARAMETERS, ids=lambda v: v.name if isinstance(v, LayerSpec) else str(v)
)
def test_every_twin_with_parameters_hands_its_hooks_the_gradient_of_its_output(
    spec: LayerSpec, index: int, training: bool
) -> None:
    assert spec.examples is not None
    torch.manual_seed(0)
    theirs, x = spec.examples(torch.float64)[index]
    ours = tnn.convert(copy.deepcopy(theirs)).train(training)
    theirs.train(training)
    seen: Seen = []
    ours.register_delta_hook(_recorder(seen))
    differentiable = x.is_floating_point()  # an input of indices (Embedding) has no gradient
    z_ours, z_theirs = ours(x.clone().requires_grad_(differentiable)), theirs(x.clone().requires_grad_(differentiable))
    z_theirs.retain_grad()
    target = torch.randn_like(z_theirs)
    _batch_mean_cost(z_ours, target).backward()
    _batch_mean_cost(z_theirs, target).backward()

    ((layer, delta),) = seen
    assert layer is ours
    torch.testing.assert_close(delta, z_theirs.grad, rtol=1e-10, atol=1e-12)  # δ = ∂C/∂z
    if getattr(ours, "bias", None) is not None:  # RMSNorm and Embedding have none
        # BP3: ∂C/∂b = Σ δ over the examples and positions
        torch.testing.assert_close(ours.bias.grad, _sum_but(delta, _channel_dims(ours, delta)))
    if isinstance(ours, torch.nn.Linear):
        # BP4: ∂C/∂W = δᵀ a, rows = examples (and any leading dimensions)
        expected = delta.reshape(-1, ours.out_features).t() @ x.reshape(-1, ours.in_features)
        torch.testing.assert_close(ours.weight.grad, expected)
    if isinstance(ours, torch.nn.modules.batchnorm._BatchNorm) and ours.weight is not None:
        # ∂C/∂γ = Σ δ ⊙ x̂, x̂ normalised by the statistics the layer used
        dims = [d for d in range(x.dim()) if d != 1]
        shape = [-1 if d == 1 else 1 for d in range(x.dim())]
        if ours.training or ours.running_mean is None:
            mean, var = x.mean(dims), x.var(dims, unbiased=False)
        else:
            mean, var = ours.running_mean, ours.running_var
        x_hat = (x - mean.reshape(shape)) / (var.reshape(shape) + ours.eps).sqrt()
        torch.testing.assert_close(ours.weight.grad, (delta * x_hat).sum(dims))
    if isinstance(ours, (torch.nn.LayerNorm, torch.nn.RMSNorm)) and ours.weight is not None:
        # ∂C/∂γ = Σ δ ⊙ x̂ over the examples (the leading dimensions), x̂ each example's own
        x_hat = _normalised(ours, x)
        torch.testing.assert_close(ours.weight.grad, _sum_but(delta * x_hat, _channel_dims(ours, delta)))
    if isinstance(ours, torch.nn.Embedding):
        # ∂C/∂W[r] = Σ of δ over the positions holding index r, none into padding_idx
        torch.testing.assert_close(ours.weight.grad, _scattered(ours, x, delta))
    # and every parameter gradient is what torch.nn's own backward makes of this δ
    z_again = theirs(x)
    native = torch.autograd.grad(z_again, list(theirs.parameters()), delta)
    for (name, parameter), expected in zip(ours.named_parameters(), native):
        torch.testing.assert_close(parameter.grad, expected, msg=lambda m, n=name: f"{n}: {m}")


def test_linear_delta_sums_to_the_bias_gradient_and_equals_the_output_gradient(device: str) -> None:
    layer = tnn.convert(torch.nn.Linear(3, 2, device=device, dtype=torch.float64))
    seen: Seen = []
    handle = layer.register_delta_hook(_recorder(seen))
    x = torch.randn(5, 3, device=device, dtype=torch.float64)
    z = layer(x)
    z.retain_grad()
    (z**3).sum().backward()
    ((module, delta),) = seen
    assert module is layer
    torch.testing.assert_close(delta, z.grad)
    torch.testing.assert_close(delta.sum(0), layer.bias.grad)  # BP3
    torch.testing.assert_close(delta.t() @ x, layer.weight.grad)  # BP4
    handle.remove()
    layer(x).sum().backward()
    assert len(seen) == 1


@pytest.mark.parametrize("feedback", [None, "fa"], ids=["backprop", "fa"])
@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu", "softmax"])
def test_dense_hands_over_the_pre_activation_delta(device: str, activation: str, feedback: str | None) -> None:
    dense = tnn.Dense(3, 4, activation, device=device, dtype=torch.float64)
    linear = torch.nn.Linear(3, 4, device=device, dtype=torch.float64)
    linear.load_state_dict(dense.state_dict())
    if feedback is not None:  # a feedback rule changes BP2 only: the layer's own δ stays ∂C/∂z
        tnn.convert(dense, feedback=feedback, seed=0)
    seen: Seen = []
    dense.register_delta_hook(_recorder(seen))
    x = torch.randn(2, 5, 3, device=device, dtype=torch.float64)  # two leading batch dimensions
    target = torch.rand(2, 5, 4, device=device, dtype=torch.float64)
    _batch_mean_cost(dense(x), target).backward()
    z = linear(x)
    z.retain_grad()
    _batch_mean_cost(NATIVE_ACTIVATIONS[activation](z), target).backward()

    ((layer, delta),) = seen
    assert layer is dense
    # δ = ∂C/∂z = ∂C/∂a ⊙ σ′(z): the gradient at the pre-activation, not at the output
    torch.testing.assert_close(delta, z.grad)
    torch.testing.assert_close(dense.bias.grad, delta.sum((0, 1)))  # BP3
    torch.testing.assert_close(dense.weight.grad, delta.reshape(-1, 4).t() @ x.reshape(-1, 3))  # BP4


def _mlp_and_native(activation: str, output_activation: str) -> tuple[tnn.MLP, list[torch.nn.Linear]]:
    torch.manual_seed(0)
    mlp = tnn.MLP([5, 4, 3, 2], activation=activation, output_activation=output_activation).double()
    linears = [torch.nn.Linear(layer.in_features, layer.out_features).double() for layer in mlp.dense_layers]
    for linear, layer in zip(linears, mlp.dense_layers):
        linear.load_state_dict(layer.state_dict())
    return mlp, linears


def _native_deltas(
    linears: list[torch.nn.Linear], activations: list[str], x: torch.Tensor, target: torch.Tensor
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(zˡ.grad, aˡ⁻¹) per layer, from torch.nn.Linear and torch's activations."""
    a, zs, inputs = x, [], []
    for linear, activation in zip(linears, activations):
        inputs.append(a)
        z = linear(a)
        z.retain_grad()
        zs.append(z)
        a = NATIVE_ACTIVATIONS[activation](z)
    _batch_mean_cost(a, target).backward()
    return [z.grad for z in zs], [a.detach() for a in inputs]


def _check_deltas(mlp: tnn.MLP, seen: Seen, native: list[torch.Tensor], inputs: list[torch.Tensor]) -> None:
    layers = mlp.dense_layers
    # once per layer, from the top down as the δ-recursion goes (and as a layer-by-layer backward goes)
    assert [layers.index(layer) for layer, _ in seen] == list(reversed(range(len(layers))))
    for layer, delta in seen:
        l = layers.index(layer)
        torch.testing.assert_close(delta, native[l], msg=lambda m, l=l: f"δ of layer {l}: {m}")
        torch.testing.assert_close(layer.bias.grad, delta.sum(0))  # BP3
        torch.testing.assert_close(layer.weight.grad, delta.t() @ inputs[l])  # BP4


ACTIVATION_PAIRS = [("sigmoid", "sigmoid"), ("tanh", "identity"), ("relu", "softmax")]


@pytest.mark.parametrize("activations", ACTIVATION_PAIRS, ids="-".join)
def test_mlp_fused_node_hands_each_layer_its_own_delta(activations: tuple[str, str]) -> None:
    mlp, linears = _mlp_and_native(*activations)
    seen: Seen = []
    for layer in mlp.layers:
        layer.register_delta_hook(_recorder(seen))
    x, target = torch.randn(6, 5, dtype=torch.float64), torch.rand(6, 2, dtype=torch.float64)
    output = mlp(x)
    assert type(output.grad_fn).__name__ == "MLPFunctionBackward"  # the fused node, not layer by layer
    _batch_mean_cost(output, target).backward()
    native, inputs = _native_deltas(linears, [activations[0]] * 2 + [activations[1]], x, target)
    _check_deltas(mlp, seen, native, inputs)


@pytest.mark.parametrize("hooked", [0, 1, 2])
def test_mlp_fused_node_calls_a_hook_on_any_one_layer(hooked: int) -> None:
    mlp, linears = _mlp_and_native("tanh", "identity")
    seen: Seen = []
    mlp.layers[hooked].register_delta_hook(_recorder(seen))
    x, target = torch.randn(6, 5, dtype=torch.float64), torch.rand(6, 2, dtype=torch.float64)
    output = mlp(x)
    assert type(output.grad_fn).__name__ == "MLPFunctionBackward"
    _batch_mean_cost(output, target).backward()
    native, _ = _native_deltas(linears, ["tanh", "tanh", "identity"], x, target)
    ((layer, delta),) = seen
    assert layer is mlp.layers[hooked]
    torch.testing.assert_close(delta, native[hooked])


@pytest.mark.parametrize("activations", ACTIVATION_PAIRS[:2], ids="-".join)
def test_graph_free_step_hands_each_layer_its_own_delta(activations: tuple[str, str]) -> None:
    mlp, linears = _mlp_and_native(*activations)
    seen: Seen = []
    for layer in mlp.layers:
        layer.register_delta_hook(_recorder(seen))
    x, target = torch.randn(6, 5, dtype=torch.float64), torch.rand(6, 2, dtype=torch.float64)
    GraphFreeStep(mlp, torchbp.get_cost("quadratic"))(x, target)
    native, inputs = _native_deltas(linears, [activations[0]] * 2 + [activations[1]], x, target)
    _check_deltas(mlp, seen, native, inputs)
    for layer, linear in zip(mlp.dense_layers, linears):
        torch.testing.assert_close(layer.weight.grad, linear.weight.grad)
        torch.testing.assert_close(layer.bias.grad, linear.bias.grad)


def _delta_per_example(run: Callable[[torch.Tensor, torch.Tensor], list[torch.Tensor]]) -> None:
    """``run(x, y)`` → each layer's δ: on a batch of n it is 1/n of what each example alone gives."""
    x, y = torch.randn(4, 5, dtype=torch.float64), torch.rand(4, 2, dtype=torch.float64)
    batch = run(x, y)
    alone = [run(x[k : k + 1], y[k : k + 1]) for k in range(4)]
    for l, delta in enumerate(batch):
        torch.testing.assert_close(4 * delta, torch.cat([deltas[l] for deltas in alone]))


@pytest.mark.parametrize("path", ["linear", "dense", "mlp", "graph-free"])
def test_a_batch_delta_is_each_examples_own_gradient_over_n(path: str) -> None:
    mlp, _ = _mlp_and_native("tanh", "sigmoid")
    linear = tnn.convert(torch.nn.Linear(5, 2).double())
    layers = {"linear": [linear], "dense": mlp.dense_layers[:1]}
    layers["mlp"] = layers["graph-free"] = mlp.dense_layers
    cost = torchbp.get_cost("quadratic")

    def run(x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
        seen: Seen = []
        handles = [layer.register_delta_hook(_recorder(seen)) for layer in layers[path]]
        if path == "graph-free":
            GraphFreeStep(mlp, cost)(x, y)
        elif path == "dense":
            layers["dense"][0](x).sum().div(len(x)).backward()
        else:
            cost((linear if path == "linear" else mlp)(x), y).backward()
        for handle in handles:
            handle.remove()
        return [delta for _, delta in sorted(seen, key=lambda pair: layers[path].index(pair[0]))]

    _delta_per_example(run)


def _conv_net() -> torch.nn.Sequential:
    """A small CNN of torch.nn layers: every kind of twin with parameters, and some without."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(2, 3, 3, padding=1),
        torch.nn.BatchNorm2d(3),
        torch.nn.ReLU(),
        torch.nn.AvgPool2d(2),
        torch.nn.Conv2d(3, 2, 2),
        torch.nn.Tanh(),
        torch.nn.Flatten(),
        torch.nn.Linear(2, 4),
        torch.nn.Sigmoid(),
        torch.nn.Linear(4, 3),
    )


def test_a_converted_sequential_chain_hands_every_layer_its_own_delta_on_every_backward() -> None:
    torch.manual_seed(0)
    native = _conv_net().double()
    ours = tnn.convert(copy.deepcopy(native))
    with_parameters = [i for i, m in enumerate(native) if any(True for _ in m.parameters())]
    seen: Seen = []
    for i in with_parameters:
        ours[i].register_delta_hook(_recorder(seen))
    outputs: dict[int, torch.Tensor] = {}
    for i in with_parameters:

        def keep(module: torch.nn.Module, args: tuple, output: torch.Tensor, i: int = i) -> None:
            output.retain_grad()
            outputs[i] = output

        native[i].register_forward_hook(keep)
    x, target = torch.randn(4, 2, 4, 4, dtype=torch.float64), torch.rand(4, 3, dtype=torch.float64)
    output = ours(x)
    assert type(output.grad_fn).__name__ == "ChainFunctionBackward"  # one node for the whole net
    cost = _batch_mean_cost(output, target)
    cost.backward(retain_graph=True)
    first = list(seen)
    _batch_mean_cost(native(x), target).backward()
    expected = {id(ours[i]): (i, outputs[i].grad) for i in with_parameters}
    assert [expected[id(layer)][0] for layer, _ in first] == with_parameters[::-1]  # from the top down
    for layer, delta in first:
        i, native_delta = expected[id(layer)]
        torch.testing.assert_close(delta, native_delta, msg=lambda m, i=i: f"δ of layer {i}: {m}")
        torch.testing.assert_close(layer.bias.grad, _sum_but(delta, _channel_dims(layer, delta)))  # BP3
    for (name, p_ours), p_native in zip(ours.named_parameters(), native.parameters()):
        torch.testing.assert_close(p_ours.grad, p_native.grad, msg=lambda m, n=name: f"{n}: {m}")

    seen.clear()
    cost.backward()  # a second backward replays the chain layer by layer: the same δ again
    assert [id(layer) for layer, _ in seen] == [id(layer) for layer, _ in first]
    for (_, again), (_, delta) in zip(seen, first):
        torch.testing.assert_close(again, delta)


def test_every_registered_twin_with_parameters_has_delta_hooks() -> None:
    assert TWINS_WITH_PARAMETERS  # Linear, the convolutions, the norms and Embedding at least
    for spec, _ in TWINS_WITH_PARAMETERS:
        assert issubclass(spec.twin, tnn.DeltaHooks), spec.name


def test_a_converted_layer_keeps_no_hook_state_until_one_is_registered() -> None:
    layer = tnn.convert(torch.nn.Linear(2, 2))
    assert "_delta_hooks" not in layer.__dict__
    assert layer.on_delta() is None
    layer.register_delta_hook(lambda module, delta: None)
    assert layer.on_delta() is not None
    assert tnn.convert(torch.nn.Linear(2, 2)).on_delta() is None  # another layer is untouched
