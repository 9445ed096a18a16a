"""torchbp.functional: gradcheck/gradgradcheck in float64 and PyTorch's own ops as oracles."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as torch_F
from torch.autograd import gradcheck, gradgradcheck

import torchbp.functional as F
from torchbp.derivatives.linear import Linear as LinearDerivatives
from torchbp.functional.mlp_node import _LAYOUTS, _MAX_LAYOUTS, LayerSlots, Source, mlp_layout

# (name, options, torchbp function, PyTorch oracle)
ACTIVATION_CASES = [
    ("sigmoid", {}, F.sigmoid, torch.sigmoid),
    ("tanh", {}, F.tanh, torch.tanh),
    ("relu", {}, F.relu, torch.relu),
    (
        "leaky_relu",
        {"negative_slope": 0.2},
        lambda z: F.leaky_relu(z, 0.2),
        lambda z: torch_F.leaky_relu(z, 0.2),
    ),
    ("elu", {"alpha": 0.7}, lambda z: F.elu(z, 0.7), lambda z: torch_F.elu(z, 0.7)),
    (
        "softplus",
        {"beta": 2.0, "threshold": 3.0},
        lambda z: F.softplus(z, 2.0, 3.0),
        lambda z: torch_F.softplus(z, 2.0, 3.0),
    ),
    ("gelu", {}, F.gelu, torch_F.gelu),
    (
        "gelu",
        {"approximate": "tanh"},
        lambda z: F.gelu(z, "tanh"),
        lambda z: torch_F.gelu(z, approximate="tanh"),
    ),
    ("silu", {}, F.silu, torch_F.silu),
    ("identity", {}, F.identity, lambda z: z.clone()),
    ("softmax", {"dim": -1}, lambda z: F.softmax(z, -1), lambda z: torch.softmax(z, -1)),
]
ACTIVATION_IDS = [f"{name}{options or ''}" for name, options, *_ in ACTIVATION_CASES]

# gradcheck's full set: reverse mode, forward mode (jvp), and both batched through vmap
FULL = {"check_forward_ad": True, "check_batched_grad": True, "check_batched_forward_grad": True}

# x shapes: one example, a batch, 3-D input with two leading batch dimensions
SHAPES = [(1, 3), (5, 3), (2, 4, 3), (3,)]


def _input(shape: tuple[int, ...], dtype: torch.dtype, device: str, contiguous: bool = True) -> torch.Tensor:
    if contiguous:
        return torch.randn(shape, dtype=dtype, device=device, requires_grad=True)
    # the same shape, but a transposed (non-contiguous) view of a leaf
    base = torch.randn(tuple(reversed(shape)), dtype=dtype, device=device)
    return base.permute(*reversed(range(len(shape)))).detach().requires_grad_()


def _layer(out_features: int, in_features: int, dtype: torch.dtype, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    weight = torch.randn(out_features, in_features, dtype=dtype, device=device, requires_grad=True)
    bias = torch.randn(out_features, dtype=dtype, device=device, requires_grad=True)
    return weight, bias


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("contiguous", [True, False], ids=["contiguous", "strided"])
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no-bias"])
def test_linear_gradcheck(device: str, shape: tuple[int, ...], contiguous: bool, with_bias: bool) -> None:
    x = _input(shape, torch.float64, device, contiguous)
    weight, bias = _layer(2, 3, torch.float64, device)
    inputs = (x, weight, bias if with_bias else None)
    assert gradcheck(F.linear, inputs, **FULL)
    assert gradgradcheck(F.linear, inputs)


@pytest.mark.parametrize("case", ACTIVATION_CASES, ids=ACTIVATION_IDS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("contiguous", [True, False], ids=["contiguous", "strided"])
def test_activation_gradcheck(device: str, case: tuple, shape: tuple[int, ...], contiguous: bool) -> None:
    _, _, function, _ = case
    z = _input(shape, torch.float64, device, contiguous)
    assert gradcheck(function, (z,), **FULL)
    assert gradgradcheck(function, (z,))


@pytest.mark.parametrize("case", ACTIVATION_CASES, ids=ACTIVATION_IDS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("contiguous", [True, False], ids=["contiguous", "strided"])
def test_dense_gradcheck(device: str, case: tuple, shape: tuple[int, ...], contiguous: bool) -> None:
    name, options, _, _ = case
    activation = F.get_activation(name, **options)
    x = _input(shape, torch.float64, device, contiguous)
    weight, bias = _layer(2, 3, torch.float64, device)

    def layer(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return F.dense(x, weight, bias, activation)

    assert gradcheck(layer, (x, weight, bias), **FULL)
    assert gradgradcheck(layer, (x, weight, bias))


def _tolerance(dtype: torch.dtype) -> dict[str, float]:
    return {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 1e-12}


@pytest.mark.parametrize("case", ACTIVATION_CASES, ids=ACTIVATION_IDS)
def test_activation_matches_pytorch(device: str, dtype: torch.dtype, case: tuple) -> None:
    _, _, function, oracle = case
    z = 3 * torch.randn(4, 5, dtype=dtype, device=device)
    z_ours = z.clone().requires_grad_()
    z_theirs = z.clone().requires_grad_()
    grad = torch.randn_like(z)
    a_ours, a_theirs = function(z_ours), oracle(z_theirs)
    a_ours.backward(grad)
    a_theirs.backward(grad)
    torch.testing.assert_close(a_ours, a_theirs, **_tolerance(dtype))
    torch.testing.assert_close(z_ours.grad, z_theirs.grad, **_tolerance(dtype))


@pytest.mark.parametrize("dim", [0, 1, -2, -3])
def test_softmax_along_a_dimension_that_is_not_the_last(device: str, dtype: torch.dtype, dim: int) -> None:
    # the sum in δz = a ⊙ (g − Σ g ⊙ a) runs along dim, not along the last dimension
    z = 3 * torch.randn(3, 4, 5, dtype=dtype, device=device)
    z_ours, z_theirs = z.clone().requires_grad_(), z.clone().requires_grad_()
    grad = torch.randn_like(z)
    a_ours, a_theirs = F.softmax(z_ours, dim), torch.softmax(z_theirs, dim)
    a_ours.backward(grad)
    a_theirs.backward(grad)
    torch.testing.assert_close(a_ours, a_theirs, **_tolerance(dtype))
    torch.testing.assert_close(z_ours.grad, z_theirs.grad, **_tolerance(dtype))
    if dtype == torch.float64:
        z64 = z.clone().requires_grad_()
        assert gradcheck(lambda z: F.softmax(z, dim), (z64,), **FULL)
        assert gradgradcheck(lambda z: F.softmax(z, dim), (z64,))


@pytest.mark.parametrize("dim", [0, -2])
def test_dense_and_mlp_with_softmax_across_the_batch(device: str, dim: int) -> None:
    """softmax over the examples (dim 0 of ``(n, out)``) inside the fused nodes, against torch."""
    softmax = F.get_activation("softmax", dim=dim)
    linear = torch.nn.Linear(3, 2, dtype=torch.float64, device=device)
    _against_linear(
        lambda x, weight, bias: F.dense(x, weight, bias, softmax),
        lambda z: torch.softmax(z, dim),
        torch.randn(5, 3, dtype=torch.float64, device=device),
        linear,
    )
    _against_linear(
        lambda x, weight, bias: F.mlp(x, [weight], [bias], [softmax]),
        lambda z: torch.softmax(z, dim),
        torch.randn(5, 3, dtype=torch.float64, device=device),
        torch.nn.Linear(3, 2, dtype=torch.float64, device=device),
    )
    x = torch.randn(5, 3, dtype=torch.float64, device=device, requires_grad=True)
    w1, b1 = _layer(4, 3, torch.float64, device)
    w2, _ = _layer(2, 4, torch.float64, device)
    assert gradcheck(lambda x, w1, b1, w2: F.mlp(x, [w1, w2], [b1, None], [softmax, "tanh"]), (x, w1, b1, w2), **FULL)


def _against_linear(layer, oracle, x: torch.Tensor, linear: torch.nn.Linear) -> None:
    """``layer(x, W, b)`` against ``oracle(linear(x))``: outputs and all three gradients."""
    weight = linear.weight.detach().clone().requires_grad_()
    bias = linear.bias.detach().clone().requires_grad_()
    x_ours, x_theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours, theirs = layer(x_ours, weight, bias), oracle(linear(x_theirs))
    grad = torch.randn_like(theirs)
    ours.backward(grad)
    theirs.backward(grad)
    tolerance = _tolerance(x.dtype)
    torch.testing.assert_close(ours, theirs, **tolerance)
    torch.testing.assert_close(x_ours.grad, x_theirs.grad, **tolerance)
    torch.testing.assert_close(weight.grad, linear.weight.grad, **tolerance)
    torch.testing.assert_close(bias.grad, linear.bias.grad, **tolerance)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("case", ACTIVATION_CASES, ids=ACTIVATION_IDS)
def test_dense_matches_linear_then_activation(device: str, dtype: torch.dtype, shape: tuple, case: tuple) -> None:
    name, options, _, oracle = case
    activation = F.get_activation(name, **options)
    _against_linear(
        lambda x, weight, bias: F.dense(x, weight, bias, activation),
        oracle,
        torch.randn(shape, dtype=dtype, device=device),
        torch.nn.Linear(3, 2, dtype=dtype, device=device),
    )


@pytest.mark.parametrize("low_precision", [torch.bfloat16, torch.float16], ids=["bfloat16", "float16"])
def test_linear_and_dense_in_low_precision(device: str, low_precision: torch.dtype) -> None:
    x = torch.randn(8, 3, device=device)
    linear = torch.nn.Linear(3, 2, device=device).to(low_precision)
    x_ours, x_theirs = x.to(low_precision).requires_grad_(), x.to(low_precision).requires_grad_()
    weight = linear.weight.detach().clone().requires_grad_()
    ours = F.dense(x_ours, weight, linear.bias.detach(), "sigmoid")
    theirs = torch.sigmoid(linear(x_theirs))
    assert ours.dtype == low_precision
    ours.sum().backward()
    theirs.sum().backward()
    torch.testing.assert_close(ours, theirs, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(x_ours.grad, x_theirs.grad, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(weight.grad, linear.weight.grad, rtol=2e-2, atol=2e-2)


def test_linear_matches_pytorch(device: str, dtype: torch.dtype) -> None:
    _against_linear(
        F.linear,
        lambda z: z,
        torch.randn(2, 5, 3, dtype=dtype, device=device),
        torch.nn.Linear(3, 4, dtype=dtype, device=device),
    )


@pytest.mark.parametrize(
    "needs", [(True, False, False), (False, True, False), (False, False, True), (False, True, True)]
)
def test_requires_grad_on_any_subset(needs: tuple[bool, bool, bool]) -> None:
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=needs[0])
    weight = torch.randn(2, 3, dtype=torch.float64, requires_grad=needs[1])
    bias = torch.randn(2, dtype=torch.float64, requires_grad=needs[2])
    for function in (F.linear, lambda *args: F.dense(*args, "tanh")):
        function(x, weight, bias).sum().backward()
        for tensor, needed in zip((x, weight, bias), needs):
            assert (tensor.grad is not None) == needed
            tensor.grad = None


def test_saves_only_what_the_derivative_needs() -> None:
    saved: list[torch.Tensor] = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        saved.append(tensor)
        return tensor

    z = torch.randn(4, 3, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        a = F.sigmoid(z)
        r = F.relu(z)
        F.dense(torch.randn(4, 3), torch.randn(2, 3, requires_grad=True), None, "sigmoid")
    assert saved[0] is a  # sigmoid keeps its output
    assert saved[1] is r  # relu too, read as the mask a > 0 (as torch.nn.ReLU keeps its result)
    assert len(saved) == 4  # dense: x for ∂W and a for σ′; W is not needed when x needs no grad


@pytest.mark.parametrize(
    "call, error, words",
    [
        (lambda: F.linear(torch.randn(4, 5), torch.randn(2, 3)), ValueError, ["x", "(*, 3)", "(4, 5)"]),
        (lambda: F.linear(torch.randn(4, 3), torch.randn(3)), ValueError, ["weight", "2-D", "(3)"]),
        (
            lambda: F.linear(torch.randn(4, 3), torch.randn(2, 3), torch.randn(3)),
            ValueError,
            ["bias", "(2,)", "(3)"],
        ),
        (
            lambda: F.linear(torch.randn(4, 3, dtype=torch.float64), torch.randn(2, 3)),
            TypeError,
            ["x", "torch.float32", "torch.float64"],
        ),
        (
            lambda: F.linear(torch.randn(4, 3), torch.randn(2, 3), torch.zeros(2, dtype=torch.float64)),
            TypeError,
            ["bias", "torch.float64"],
        ),
        (lambda: F.linear([[1.0, 2.0, 3.0]], torch.randn(2, 3)), TypeError, ["x", "torch.Tensor", "list"]),
        (
            lambda: F.linear(torch.ones(4, 3, dtype=torch.long), torch.randn(2, 3)),
            TypeError,
            ["x", "floating-point", "torch.int64"],
        ),
        (
            lambda: F.dense(torch.randn(4, 3), torch.randn(2, 3), None, "swish"),
            ValueError,
            ["swish", "sigmoid", "relu", "gelu"],
        ),
        (lambda: F.softmax(torch.randn(4, 3), dim=2), IndexError, ["dim 2", "(4, 3)"]),
        (lambda: F.gelu(torch.randn(3), approximate="fast"), ValueError, ["'none'", "'tanh'", "'fast'"]),
    ],
)
def test_bad_input_is_explained(call, error: type[Exception], words: list[str]) -> None:
    with pytest.raises(error) as raised:
        call()
    for word in words:
        assert word in str(raised.value)


def test_device_mismatch_is_explained() -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    with pytest.raises(ValueError, match=r"x: expected device cuda:0 .* got cpu"):
        F.linear(torch.randn(4, 3), torch.randn(2, 3, device="cuda"))


def test_every_activation_is_covered() -> None:
    assert {name for name, *_ in ACTIVATION_CASES} == set(F.ACTIVATIONS)


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "relu"])
def test_fused_kernel_is_the_written_product(device: str, dtype: torch.dtype, name: str) -> None:
    activation = F.get_activation(name)
    assert activation.fused is not None
    z = torch.randn(6, 5, dtype=dtype, device=device)
    z[0, 0] = 0.0  # relu's kink: σ′(0) = 0, as torch.relu's backward
    grad = torch.randn_like(z)
    kept = [activation.read(z, activation(z))]
    if activation.saves == "mask":
        kept.append(activation(z))  # relu may read the mask off a itself
    for saved in kept:
        torch.testing.assert_close(activation.fused(grad, saved), grad * activation.sigma_prime(saved))


@pytest.mark.parametrize("case", ACTIVATION_CASES, ids=ACTIVATION_IDS)
@pytest.mark.parametrize("low_precision", [torch.bfloat16, torch.float16], ids=["bfloat16", "float16"])
def test_activation_in_low_precision(device: str, case: tuple, low_precision: torch.dtype) -> None:
    _, _, function, oracle = case
    z = (3 * torch.randn(4, 5, device=device)).to(low_precision)
    z_ours, z_theirs = z.clone().requires_grad_(), z.clone().requires_grad_()
    a_ours, a_theirs = function(z_ours), oracle(z_theirs)
    assert a_ours.dtype == low_precision
    grad = torch.randn_like(z)
    a_ours.backward(grad)
    a_theirs.backward(grad)
    assert z_ours.grad.dtype == low_precision
    torch.testing.assert_close(a_ours, a_theirs, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(z_ours.grad, z_theirs.grad, rtol=5e-2, atol=5e-2)


MLP_ACTIVATIONS = [
    ["sigmoid", "sigmoid"],
    ["relu", "identity"],
    ["gelu", "softmax"],
    ["tanh", "elu"],
    ["silu", "softplus"],
]


@pytest.mark.parametrize("activations", MLP_ACTIVATIONS, ids="-".join)
@pytest.mark.parametrize("shape", [(1, 3), (5, 3), (2, 4, 3)], ids=str)
@pytest.mark.parametrize("contiguous", [True, False], ids=["contiguous", "strided"])
def test_mlp_gradcheck(device: str, activations: list[str], shape: tuple[int, ...], contiguous: bool) -> None:
    x = _input(shape, torch.float64, device, contiguous)
    w1, b1 = _layer(4, 3, torch.float64, device)
    w2, _ = _layer(2, 4, torch.float64, device)

    def stack(x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
        return F.mlp(x, [w1, w2], [b1, None], activations)

    assert gradcheck(stack, (x, w1, b1, w2), **FULL)
    assert gradgradcheck(stack, (x, w1, b1, w2))


@pytest.mark.parametrize("activations", MLP_ACTIVATIONS, ids="-".join)
def test_mlp_equals_dense_after_dense(device: str, dtype: torch.dtype, activations: list[str]) -> None:
    x = torch.randn(6, 3, dtype=dtype, device=device)
    w1, b1 = _layer(4, 3, dtype, device)
    w2, b2 = _layer(2, 4, dtype, device)
    ours = F.mlp(x, [w1, w2], [b1, b2], activations)
    ours.sum().backward()
    grads = [p.grad.clone() for p in (w1, b1, w2, b2)]
    for p in (w1, b1, w2, b2):
        p.grad = None
    layered = F.dense(F.dense(x, w1, b1, activations[0]), w2, b2, activations[1])
    layered.sum().backward()
    torch.testing.assert_close(ours, layered, rtol=0, atol=0)
    for grad, p in zip(grads, (w1, b1, w2, b2)):
        torch.testing.assert_close(grad, p.grad, rtol=0, atol=0)


def test_mlp_reports_each_layers_delta() -> None:
    x = torch.randn(5, 3, dtype=torch.float64)
    w1, b1 = _layer(4, 3, torch.float64, "cpu")
    w2, b2 = _layer(2, 4, torch.float64, "cpu")
    seen: dict[int, torch.Tensor] = {}
    F.mlp(x, [w1, w2], [b1, b2], ["tanh", "sigmoid"], on_delta=seen.__setitem__).sum().backward()
    # BP3: ∂C/∂b = Σ δ over the examples
    torch.testing.assert_close(seen[0].sum(0), b1.grad)
    torch.testing.assert_close(seen[1].sum(0), b2.grad)


def test_mlp_keeps_a_relu_mask_only_where_no_activation_is_kept(device: str) -> None:
    # W² frozen: a¹ is not needed for BP4, so σ′ of the hidden relu reads a boolean mask
    x = torch.randn(5, 3, dtype=torch.float64, device=device)
    w1, b1 = _layer(4, 3, torch.float64, device)
    w2 = torch.randn(2, 4, dtype=torch.float64, device=device)
    saved: list[torch.Tensor] = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        saved.append(tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        output = F.mlp(x, [w1, w2], [b1, None], ["relu", "relu"])
    assert [t.dtype for t in saved] == [torch.float64, torch.bool, torch.float64, torch.float64]
    assert saved[0] is x and saved[2] is w2 and saved[3] is output  # x for BP4, W² for BP2, a² for σ′
    output.square().sum().backward()
    grads = [w1.grad, b1.grad]
    for p in (w1, b1):
        p.grad = None
    torch_F.relu(torch_F.linear(torch_F.relu(torch_F.linear(x, w1, b1)), w2)).square().sum().backward()
    torch.testing.assert_close(grads, [w1.grad, b1.grad], rtol=0, atol=0)
    assert gradcheck(lambda x, w1, b1: F.mlp(x, [w1, w2], [b1, None], ["relu", "relu"]), (x, w1, b1))


def test_mlp_layout_saves_each_tensor_once_and_names_its_parts() -> None:
    # x needs no gradient; every parameter does
    needs = (False, False, False, True, True, True, True)
    sigmoid = mlp_layout(needs, ("a", "a"))
    # a¹ is layer 2's input (BP4) and what σ¹′ reads: saved once, both slots point at it
    assert sigmoid.saved == (Source("input", 0), Source("output", 0), Source("weight", 1), Source("output", 1))
    assert sigmoid.layers == (
        LayerSlots((False, True, True), input=0, weight=None, read=1, z_output=None),
        LayerSlots((True, True, True), input=1, weight=2, read=3, z_output=None),
    )
    # W² frozen: a¹ is not kept for BP4, so σ¹′ of relu reads a mask computed afresh
    relu = mlp_layout((False, False, False, True, True, False, False), ("mask", "mask"))
    assert relu.saved == (Source("input", 0), Source("mask", 0), Source("weight", 1), Source("output", 1))
    assert [(s.input, s.weight, s.read) for s in relu.layers] == [(0, None, 1), (None, 2, 3)]
    # silu reads z: each zˡ handed out after a¹, a², so its gradient arrives at that index
    silu = mlp_layout(needs, ("z", "z"))
    assert silu.saved == (
        Source("input", 0),
        Source("z", 0),
        Source("output", 0),
        Source("weight", 1),
        Source("z", 1),
    )
    assert [(s.read, s.z_output) for s in silu.layers] == [(1, 2), (4, 3)]
    # the same, as indices: each saved tensor's place in (x, W¹, b¹, W², b², a¹, a², z…), a mask −1;
    # each layer's input, weight and read among the saved tensors, −1 for none
    assert sigmoid.picks == (0, 5, 3, 6)
    assert (sigmoid.inputs, sigmoid.weights, sigmoid.reads) == ((0, 1), (-1, 2), (1, 3))
    assert relu.picks == (0, -1, 3, 6)
    assert (relu.inputs, relu.weights, relu.reads) == ((0, -1), (-1, 2), (1, 3))
    assert silu.picks == (0, 7, 5, 3, 8)


@pytest.mark.parametrize(
    "params, activations",
    [(4, 1), (4, 3), (3, 2), (0, 0)],
    ids=["a layer without an activation", "an activation without a layer", "a weight without a bias", "none"],
)
def test_mlp_stack_counts_its_layers(params: int, activations: int) -> None:
    tensors = [torch.randn(3, 3) for _ in range(params)]
    with pytest.raises(ValueError, match=f"got {params} tensors for {activations} activations"):
        F.mlp_stack(torch.randn(2, 3), tensors, [F.get_activation("relu")] * activations)


def test_mlp_layouts_are_kept_once_each_and_never_more_than_the_bound() -> None:
    needs = (True, False, False, True, True)
    first = mlp_layout(needs, ("a",))
    assert mlp_layout(needs, ("a",)) is first
    patterns = [(True, False, False, *[True] * (2 * layers)) for layers in range(1, _MAX_LAYOUTS + 50)]
    for pattern in patterns:
        layers = (len(pattern) - 3) // 2
        assert mlp_layout(pattern, ("z",) * layers).plan == ((True, True, True),) * layers
        assert len(_LAYOUTS) <= _MAX_LAYOUTS


@pytest.mark.parametrize(
    "weights, words",
    [
        ([torch.randn(4, 3), torch.randn(2, 5)], ["weights[1]", "(n, 4)", "(2, 5)"]),
        ([torch.randn(4, 2), torch.randn(2, 4)], ["x", "(*, 2)", "(6, 3)"]),
        ([torch.randn(4, 3), torch.randn(2, 4, dtype=torch.float64)], ["weights[1]", "torch.float64"]),
    ],
)
def test_mlp_bad_layers_are_explained(weights: list[torch.Tensor], words: list[str]) -> None:
    with pytest.raises((ValueError, TypeError)) as raised:
        F.mlp(torch.randn(6, 3), weights, [None, None], ["relu", "relu"])
    for word in words:
        assert word in str(raised.value)


@pytest.mark.parametrize("moving", [("x",), ("w1",), ("b1",), ("b1", "w2"), ("x", "b2")], ids=" and ".join)
def test_mlp_gradients_for_any_subset_equal_torch(moving: tuple[str, ...]) -> None:
    tensors = {
        "x": torch.randn(5, 3, dtype=torch.float64),
        "w1": torch.randn(4, 3, dtype=torch.float64),
        "b1": torch.randn(4, dtype=torch.float64),
        "w2": torch.randn(2, 4, dtype=torch.float64),
        "b2": torch.randn(2, dtype=torch.float64),
    }
    x, w1, b1, w2, b2 = (t.requires_grad_(name in moving) for name, t in tensors.items())
    wanted = [tensors[name] for name in moving]
    ours = F.mlp(x, [w1, w2], [b1, b2], ["tanh", "sigmoid"])
    theirs = torch.sigmoid(torch_F.linear(torch.tanh(torch_F.linear(x, w1, b1)), w2, b2))
    delta = torch.randn_like(theirs)
    for a, b in zip(torch.autograd.grad(ours, wanted, delta), torch.autograd.grad(theirs, wanted, delta)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


class _DetachedLinear(LinearDerivatives):
    """Linear's equations with the forward maths run on detached tensors: a tangent can come from
    the layer's own jvp only, never from torch's forward-mode rules for the ops inside."""

    def forward(self, x: torch.Tensor, *params: torch.Tensor | None) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        return super().forward(x.detach(), *(None if p is None else p.detach() for p in params))


@pytest.mark.parametrize("grad_enabled", [True, False], ids=["grad", "no_grad"])
def test_forward_mode_ad_runs_the_layers_own_jvp_with_or_without_grad(grad_enabled: bool) -> None:
    x, x_t = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    weight, bias = torch.randn(2, 3, dtype=torch.float64), torch.randn(2, dtype=torch.float64)
    with torch.set_grad_enabled(grad_enabled), torch.autograd.forward_ad.dual_level():
        z = F.apply_layer(_DetachedLinear(), torch.autograd.forward_ad.make_dual(x, x_t), (weight, bias))
        primal, tangent = torch.autograd.forward_ad.unpack_dual(z)
    torch.testing.assert_close(primal, torch_F.linear(x, weight, bias))
    assert tangent is not None
    torch.testing.assert_close(tangent, x_t @ weight.t())  # ż = ẋ Wᵀ
