"""torchbp.per_example: every quantity against torch.func.vmap(torch.func.grad(…)), on whole models."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor
from torch.func import functional_call, grad, vmap
from torch.utils._python_dispatch import TorchDispatchMode

import torchbp
from torchbp.derivatives.per_example import EmbeddingRows, FactoredRows, ParameterRows, Rows
from torchbp.functional.per_example_tap import RECORDERS
from torchbp.per_example_quantities import QUANTITIES
from torchbp.training.graph_free import GraphFreeStep

ALL = ("grad", "norm", "variance", "second_moment")
Loss = Callable[[Tensor, Tensor], Tensor]


def squared_error(output: Tensor, target: Tensor) -> Tensor:
    """C = (1/N) Σₖ ½‖aₖ − yₖ‖² (summed over an example's positions)."""
    return 0.5 * (output - target).square().flatten(1).sum(1).mean()


def reference(model: torch.nn.Module, x: Tensor, y: Tensor, loss: Loss) -> dict[str, Tensor]:
    """gₖ = ∇Cₖ per parameter, by torch.func.vmap(torch.func.grad(…)) over the same model with torch's
    layers (a reverted copy; ``Dense`` and ``MLP``, which have no torch twin, stay torchbp's)."""
    model = torchbp.nn.revert(copy.deepcopy(model))
    params = {name: p.detach() for name, p in model.named_parameters()}
    buffers = dict(model.named_buffers())

    def cost_k(p: dict[str, Tensor], x_k: Tensor, y_k: Tensor) -> Tensor:
        return loss(functional_call(model, (p, buffers), (x_k.unsqueeze(0),)), y_k.unsqueeze(0))

    return vmap(grad(cost_k), in_dims=(None, 0, 0))(params, x, y)  # type: ignore[no-any-return]


def check_all_quantities(model: torch.nn.Module, x: Tensor, y: Tensor, loss: Loss = squared_error) -> None:
    """All four quantities at once, then the norm alone (the forms that write no gₖ out: the Gram
    form, an embedding's row sums) and the moments alone, each against the oracle."""
    expected = reference(model, x, y, loss)
    for quantities in (ALL, ("norm",), ("variance", "second_moment")):
        model.zero_grad(set_to_none=True)
        output = model(x)  # the forward pass may run before the context opens
        with torchbp.per_example(model, *quantities):
            loss(output, y).backward()
        check_against(model, expected, quantities)


def check_against(model: torch.nn.Module, expected: dict[str, Tensor], quantities: tuple[str, ...] = ALL) -> None:
    tolerance: dict[str, Any] = {"rtol": 0, "atol": 1e-10}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        g = expected[name]
        for quantity, value in (
            ("grad", g),
            ("norm", g.flatten(1).norm(dim=1)),
            ("variance", g.var(0, unbiased=False)),
            ("second_moment", g.square().mean(0)),
        ):
            if quantity in quantities:
                torch.testing.assert_close(
                    getattr(p, QUANTITIES[quantity]),
                    value,
                    **tolerance,
                    msg=lambda m, n=name, q=quantity: f"{n} {q}: {m}",
                )
        if "grad" in quantities:
            torch.testing.assert_close(p.grad, p.grad_sample.mean(0), **tolerance)
    if "norm" in quantities:
        trained = [expected[name] for name, p in model.named_parameters() if p.requires_grad]
        norms = torch.stack([g.flatten(1).norm(dim=1) for g in trained]).norm(dim=0)
        torch.testing.assert_close(torchbp.per_example_norm(model), norms, **tolerance)


def native_mlp(width: int = 6) -> torch.nn.Sequential:
    return torch.nn.Sequential(
        torch.nn.Linear(5, width),
        torch.nn.Tanh(),
        torch.nn.Linear(width, width),
        torch.nn.ReLU(),
        torch.nn.Linear(width, 3),
    ).double()


def test_fused_mlp_node(device: str) -> None:
    check_all_quantities(
        torchbp.nn.MLP([5, 4, 4, 3], "tanh").double().to(device),
        torch.randn(7, 5, device=device).double(),
        torch.randn(7, 3, device=device).double(),
    )


def test_converted_sequential_chain_node_and_single_layers(device: str) -> None:
    x, y = torch.randn(7, 5, device=device).double(), torch.randn(7, 3, device=device).double()
    check_all_quantities(torchbp.nn.convert(native_mlp()).to(device), x, y)
    check_all_quantities(torchbp.nn.convert(torch.nn.Linear(5, 3).double()).to(device), x, y)
    check_all_quantities(torchbp.nn.Dense(5, 3, "softplus").double().to(device), x, y)


def test_cross_entropy_and_one_example() -> None:
    model = torchbp.nn.convert(native_mlp())
    for n in (1, 9):
        x, y = torch.randn(n, 5).double(), torch.randint(0, 3, (n,))
        check_all_quantities(model, x, y, torch.nn.functional.cross_entropy)


@pytest.mark.parametrize("width", [4, 16], ids=["written out", "Gram form"])
def test_sequence_inputs_sum_over_positions(width: int) -> None:
    x, y = torch.randn(6, 3, 5).double(), torch.randn(6, 3, 3).double()
    check_all_quantities(torchbp.nn.convert(native_mlp(width)), x, y)
    check_all_quantities(torchbp.nn.MLP([5, width, 3], "sigmoid").double(), x, y)


def test_cnn_with_grouped_strided_convolutions_and_batch_norm_in_eval(device: str) -> None:
    model = torchbp.nn.convert(
        torch.nn.Sequential(
            torch.nn.Conv2d(2, 4, 3, padding=1, groups=2),
            torch.nn.BatchNorm2d(4),
            torch.nn.ReLU(),
            torch.nn.Conv2d(4, 3, 2, stride=2, dilation=1, padding="valid"),
            torch.nn.MaxPool2d(1),
            torch.nn.Flatten(),
            torch.nn.Linear(27, 2),
        ).double()
    ).eval()
    x, y = torch.randn(5, 2, 7, 7).double(), torch.randn(5, 2).double()
    check_all_quantities(model.to(device), x.to(device), y.to(device))


def test_conv1d_with_reflect_padding_and_dilation() -> None:
    model = torchbp.nn.convert(
        torch.nn.Sequential(
            torch.nn.Conv1d(3, 4, 3, padding=2, dilation=2, padding_mode="reflect"),
            torch.nn.Tanh(),
            torch.nn.Conv1d(4, 2, 2, stride=2),
            torch.nn.Flatten(),
            torch.nn.Linear(8, 2),
        ).double()
    )
    check_all_quantities(model, torch.randn(5, 3, 9).double(), torch.randn(5, 2).double())


def test_graph_free_step_gives_the_same_quantities() -> None:
    model = torchbp.nn.MLP([5, 4, 3], "sigmoid").double()
    x, y = torch.randn(7, 5).double(), torch.randn(7, 3).double()
    expected = reference(model, x, y, lambda a, t: torchbp.get_cost("quadratic")(a, t))
    step = GraphFreeStep(model, torchbp.get_cost("quadratic"))
    with torchbp.per_example(model, *ALL):
        step(x, y)
    check_against(model, expected)


class Allocations(TorchDispatchMode):
    """The shapes of every tensor the ops made while it was on."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, tuple | list) else (out,):
            if isinstance(t, Tensor):
                self.shapes.append(tuple(t.shape))
        return out


@pytest.mark.parametrize("x_shape", [(8, 5), (8, 2, 5)], ids=["one row", "sequence (Gram form)"])
def test_norm_alone_makes_no_per_example_gradient(x_shape: tuple[int, ...]) -> None:
    model = torchbp.nn.convert(native_mlp(width=16))
    x = torch.randn(*x_shape).double()
    loss = model(x).square().mean(0).sum()
    with Allocations() as seen, torchbp.per_example(model, "norm"):
        loss.backward()
    made = set(seen.shapes)
    for name, p in model.named_parameters():
        assert p.dim() == 1 or (8, *p.shape) not in made, name
        assert p.grad_sample_norm.shape == (8,)
    with Allocations() as seen, torchbp.per_example(model, "grad"):
        model(x).square().mean(0).sum().backward()
    assert (8, 16, 16) in set(seen.shapes)  # the probe sees a per-example gradient where one is made


def test_nothing_is_attached_outside_the_context_and_stale_values_go() -> None:
    model = torchbp.nn.convert(native_mlp())
    layer = model[0]
    x = torch.randn(4, 5).double()
    with torchbp.per_example(model, "norm"):
        assert len(RECORDERS) == 1
        model(x).sum().backward()
    assert not RECORDERS
    assert not layer._forward_hooks and not layer._backward_hooks and "_delta_hooks" not in layer.__dict__
    first = layer.weight.grad_sample_norm
    model(2 * x).sum().backward()  # outside: nothing recorded
    assert layer.weight.grad_sample_norm is first
    with torchbp.per_example(model, "norm"):
        pass
    assert not hasattr(layer.weight, "grad_sample_norm")  # no stale value survives a new context


def test_buffers_are_reused_between_steps() -> None:
    model = torchbp.nn.convert(native_mlp())
    context = torchbp.per_example(model, "grad")
    pointers = []
    for step in range(3):
        with context:
            model(torch.randn(4, 5).double()).sum().backward()
        pointers.append(model[2].weight.grad_sample.data_ptr())
        assert torch.allclose(model[2].weight.grad_sample.mean(0), model[2].weight.grad) or step > 0
        model.zero_grad()
    assert len(set(pointers)) == 1


def _one_position_model() -> torch.nn.Module:
    """A grouped convolution with one output position (the factored form per group), linear layers
    with one row per example and a layer norm (γ diagonal, β factored)."""
    return torchbp.nn.convert(
        torch.nn.Sequential(
            torch.nn.Conv2d(4, 4, 3, groups=2),
            torch.nn.Tanh(),
            torch.nn.Flatten(),
            torch.nn.Linear(4, 6),
            torch.nn.LayerNorm(6),
            torch.nn.ReLU(),
            torch.nn.Linear(6, 3),
        ).double()
    )


@pytest.mark.parametrize(
    ("model", "x_shape"),
    [(_one_position_model, (5, 4, 3, 3)), (lambda: torchbp.nn.convert(native_mlp()), (5, 2, 5))],
    ids=["one row per example", "positions"],
)
def test_reused_buffers_hold_each_steps_own_quantities(
    model: Callable[[], torch.nn.Module], x_shape: tuple[int, ...]
) -> None:
    """From the second step on, every ``grad_sample`` is written into last step's tensor: the same
    tensor each step, holding that step's values."""
    net = model()
    context = torchbp.per_example(net, *ALL)
    pointers = []
    for _ in range(3):
        x = torch.randn(*x_shape).double()
        y = torch.randn(*net(x).shape).double()
        net.zero_grad(set_to_none=True)
        with context:
            squared_error(net(x), y).backward()
        check_against(net, reference(net, x, y, squared_error))
        pointers.append([p.grad_sample.data_ptr() for p in net.parameters()])
    assert pointers[0] == pointers[1] == pointers[2]


def test_nested_contexts_the_innermost_takes_each_parameter() -> None:
    model = torchbp.nn.convert(native_mlp())
    head = torchbp.nn.convert(torch.nn.Linear(3, 2).double())
    x = torch.randn(4, 5).double()
    outer = torchbp.per_example(torch.nn.Sequential(model, head), "grad")
    inner = torchbp.per_example(model, "norm")
    with outer:
        with inner:
            head(model(x)).sum().backward()
        assert len(RECORDERS) == 1
    assert not RECORDERS
    assert hasattr(head.weight, "grad_sample") and not hasattr(model[0].weight, "grad_sample")
    assert hasattr(model[0].weight, "grad_sample_norm")
    with inner, inner:  # one context opened twice
        model(x).sum().backward()
    assert not RECORDERS
    torch.testing.assert_close(model[0].weight.grad_sample_norm.shape, torch.Size([4]))


def test_a_nested_context_writes_no_tensor_an_open_context_holds() -> None:
    """A context opened inside another that has recorded already leaves the outer one's gₖ as they
    were (an open context's tensors are not reused) and writes its own."""
    model = torchbp.nn.convert(native_mlp())
    x1, x2, y = torch.randn(4, 5).double(), torch.randn(4, 5).double(), torch.randn(4, 3).double()
    with torchbp.per_example(model, "grad"):
        squared_error(model(x1), y).backward()
        outer = {name: p.grad_sample for name, p in model.named_parameters()}
        with torchbp.per_example(model, "grad"):
            squared_error(model(x2), y).backward()
    for x, rows in ((x1, outer), (x2, {name: p.grad_sample for name, p in model.named_parameters()})):
        expected = reference(model, x, y, squared_error)
        for name, g in rows.items():
            torch.testing.assert_close(g, expected[name], rtol=0, atol=1e-10)


def test_a_buffer_of_another_dtype_is_not_reused() -> None:
    """After the model changes dtype, gₖ come in the new dtype, not written into last step's tensor."""
    model = torchbp.nn.convert(native_mlp())
    context = torchbp.per_example(model, "grad")
    for dtype in (torch.float64, torch.float32):
        model.to(dtype)
        x, y = torch.randn(4, 5, dtype=dtype), torch.randn(4, 3, dtype=dtype)
        model.zero_grad(set_to_none=True)
        with context:
            squared_error(model(x), y).backward()
        for name, p in model.named_parameters():
            assert p.grad_sample.dtype == dtype, name
            torch.testing.assert_close(p.grad_sample.mean(0), p.grad)


class _Attending(torch.nn.Module):
    """Cross-attention (separate projections, thirds of ``in_proj_bias``), then self-attention
    (one packed projection), both batch first."""

    def __init__(self) -> None:
        super().__init__()
        self.cross = torch.nn.MultiheadAttention(8, 2, batch_first=True, kdim=5, vdim=5)
        self.own = torch.nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, x: Tensor) -> Tensor:
        memory = x[..., :5]
        a = self.cross(x, memory, memory, need_weights=False)[0]
        return self.own(a, a, a, need_weights=False)[0].mean(1)  # type: ignore[no-any-return]


AUTOCAST_MODELS: dict[str, tuple[Callable[[], torch.nn.Module], tuple[int, ...]]] = {
    "linear and layer norm": (
        lambda: torch.nn.Sequential(
            torch.nn.Linear(6, 8), torch.nn.LayerNorm(8), torch.nn.ReLU(), torch.nn.Linear(8, 3)
        ),
        (4, 6),
    ),
    "MLP node": (lambda: torchbp.nn.MLP([6, 8, 3], "relu"), (4, 6)),
    "convolution": (
        lambda: torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.Flatten(), torch.nn.Linear(12, 3)),
        (4, 2, 4, 4),
    ),
    "attention": (_Attending, (4, 3, 8)),
}


@pytest.mark.parametrize("name", AUTOCAST_MODELS)
def test_a_forward_pass_under_autocast_gives_every_parameter_its_quantities(device: str, name: str) -> None:
    """Under autocast the layers compute with cast copies of the parameters (CPU bfloat16, CUDA
    float16): the quantities still go to the parameters, in their dtype, and agree with float32's."""
    dtype = torch.bfloat16 if device == "cpu" else torch.float16
    build, shape = AUTOCAST_MODELS[name]
    torch.manual_seed(0)
    model = torchbp.nn.convert(build()).to(device)
    x = torch.randn(shape, device=device)
    results = []
    for autocast in (True, False):
        model.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=dtype, enabled=autocast):
            output = model(x)
        with torchbp.per_example(model, "grad", "norm", "variance"):
            output.float().square().mean().backward()
        results.append({n: (p.grad_sample, p.grad_sample_norm, p.grad_variance) for n, p in model.named_parameters()})
        for n, p in model.named_parameters():
            assert p.grad_sample.dtype == p.grad_sample_norm.dtype == p.grad_variance.dtype == p.dtype, n
            torch.testing.assert_close(p.grad_sample.mean(0), p.grad, rtol=2e-2, atol=1e-3, msg=n)
            torch.testing.assert_close(
                p.grad_sample_norm, p.grad_sample.flatten(1).norm(dim=1), rtol=2e-2, atol=1e-3, msg=n
            )
    low, full = results
    for n, (ours, reference) in ((n, (low[n], full[n])) for n in full):
        for quantity, value, exact in zip(("grad", "norm", "variance"), ours, reference):
            error = float((value - exact).norm() / exact.norm())
            assert error < 5e-2, (n, quantity, error)


def test_a_float32_norm_in_a_bfloat16_model_gets_float32_quantities() -> None:
    """Norms kept in float32 in a bfloat16 model: their β's rows (δ alone, bfloat16) come as float32."""
    model = torchbp.nn.convert(torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.LayerNorm(8))).bfloat16()
    model[1].float()
    with torchbp.per_example(model, "grad", "norm"):
        model(torch.randn(4, 6, dtype=torch.bfloat16)).float().square().mean().backward()
    for n, p in model.named_parameters():
        assert p.grad_sample.dtype == p.grad_sample_norm.dtype == p.grad.dtype == p.dtype, n


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True")
def test_a_backward_that_builds_a_graph_leaves_constant_quantities() -> None:
    """loss.backward(create_graph=True): the quantities are the same numbers, and no graph hangs on them."""
    model = torchbp.nn.convert(native_mlp())
    x, y = torch.randn(6, 5).double(), torch.randn(6, 3).double()
    with torchbp.per_example(model, *ALL):
        squared_error(model(x), y).backward(create_graph=True)
    check_against(model, reference(model, x, y, squared_error))
    for name, p in model.named_parameters():
        for attribute in ("grad_sample", "grad_sample_norm", "grad_variance", "grad_second_moment"):
            assert not getattr(p, attribute).requires_grad, (name, attribute)
    model.zero_grad(set_to_none=True)  # the graph on .grad refers back to the parameters


def test_errors_name_what_was_expected() -> None:
    model = torchbp.nn.convert(native_mlp())
    with pytest.raises(ValueError, match="reduction: expected 'mean', got 'sum': .*mean convention"):
        torchbp.per_example(model, "norm", reduction="sum")
    with pytest.raises(ValueError, match="unknown quantities \\['norms'\\]"):
        torchbp.per_example(model, "norms")
    with pytest.raises(ValueError, match="at least one quantity"):
        torchbp.per_example(model)
    with pytest.raises(torchbp.PerExampleError, match="has none of torchbp's layers"):
        torchbp.per_example(torch.nn.Sequential(torch.nn.ReLU()), "norm")
    mixed = torch.nn.Sequential(torchbp.nn.Linear(5, 3), torch.nn.Linear(3, 2))
    with pytest.raises(
        torchbp.PerExampleError, match="layer '1' \\(torch.nn.modules.linear.Linear\\) is not a torchbp"
    ):
        torchbp.per_example(mixed, "grad")
    mixed[1].requires_grad_(False)  # a frozen native layer is fine
    torchbp.per_example(mixed, "grad")
    norm = torchbp.nn.convert(torch.nn.Sequential(torch.nn.Linear(5, 3), torch.nn.BatchNorm1d(3)))
    with pytest.raises(torchbp.PerExampleError, match="layer '1' \\(BatchNorm1d\\).*training mode"):
        torchbp.per_example(norm, "norm")
    norm.eval()
    torchbp.per_example(norm, "norm")
    with pytest.raises(torchbp.PerExampleError, match="need a batch dimension"), torchbp.per_example(model, "norm"):
        model(torch.randn(5).double()).sum().backward()
    assert not RECORDERS
    twice = torchbp.nn.convert(torch.nn.Linear(5, 5).double())
    with pytest.raises(torchbp.PerExampleError, match="weight received a second gradient"):
        with torchbp.per_example(twice, "norm"):
            twice(twice(torch.randn(3, 5).double())).sum().backward()
    with pytest.raises(
        torchbp.PerExampleError,
        match="second gradient .* 2 rows in dimension 0 after one with 3: either a second backward",
    ):
        with torchbp.per_example(twice, "grad"):
            twice(torch.randn(3, 5).double()).sum().backward()
            twice(torch.randn(2, 5).double()).sum().backward()
    with pytest.raises(ValueError, match="no per-example norms"):
        torchbp.per_example_norm(torchbp.nn.convert(native_mlp()))


def test_a_layer_used_twice_sums_its_per_example_gradients() -> None:
    layer = torchbp.nn.convert(torch.nn.Linear(4, 4).double())
    model = torch.nn.Sequential(layer, torchbp.nn.Tanh(), layer)
    x, y = torch.randn(5, 4).double(), torch.randn(5, 4).double()
    expected = reference(model, x, y, squared_error)
    with torchbp.per_example(model, "grad"):
        squared_error(model(x), y).backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad_sample, expected[name], rtol=0, atol=1e-10)


def test_copies_of_a_model_stay_apart() -> None:
    model = torchbp.nn.convert(native_mlp())
    other = copy.deepcopy(model)
    with torchbp.per_example(model, "norm"):
        other(torch.randn(3, 5).double()).sum().backward()
    assert not hasattr(other[0].weight, "grad_sample_norm") and not hasattr(model[0].weight, "grad_sample_norm")


# transformer layers, on sequences (N, T, E)

N, T, E = 4, 5, 8


def sequences() -> tuple[Tensor, Tensor]:
    return torch.randn(N, T, E).double(), torch.randn(N, T, E).double()


@pytest.mark.parametrize(
    "norm",
    [
        torch.nn.LayerNorm(E),
        torch.nn.LayerNorm(E, bias=False),
        torch.nn.LayerNorm((T, E)),
        torch.nn.RMSNorm(E),
        torch.nn.RMSNorm((T, E)),
    ],
    ids=["layer norm", "layer norm without bias", "layer norm over (T, E)", "RMS norm", "RMS norm over (T, E)"],
)
def test_layer_and_rms_norm(norm: torch.nn.Module) -> None:
    model = torchbp.nn.convert(torch.nn.Sequential(torch.nn.Linear(E, E), copy.deepcopy(norm)).double())
    check_all_quantities(model, *sequences())


def test_embedding_rows_go_where_the_tokens_point() -> None:
    model = torchbp.nn.convert(
        torch.nn.Sequential(torch.nn.Embedding(7, E, padding_idx=2), torch.nn.Linear(E, E)).double()
    )
    tokens = torch.randint(7, (N, T))
    tokens[0, :2] = 2  # the padding row: no gradient
    tokens[1] = 3  # one row used at every position: its δ rows add up
    y = torch.randn(N, T, E).double()
    check_all_quantities(model, tokens, y)
    with torchbp.per_example(model, "grad"):
        squared_error(model(tokens), y).backward()
    table = model[0].weight.grad_sample
    assert table[:, 2].abs().max() == 0
    assert (table[1].abs().sum(1) > 0).tolist() == [r == 3 for r in range(7)]


def test_embedding_norm_alone_makes_no_per_example_table() -> None:
    model = torchbp.nn.convert(torch.nn.Sequential(torch.nn.Embedding(50, E), torch.nn.Linear(E, 2)).double())
    loss = model(torch.randint(50, (N, T))).square().mean(0).sum()
    with Allocations() as seen, torchbp.per_example(model, "norm"):
        loss.backward()
    assert (N, 50, E) not in set(seen.shapes) and (N * 50, E) not in set(seen.shapes)
    assert model[0].weight.grad_sample_norm.shape == (N,)


class Attend(torch.nn.Module):
    """Multi-head attention over (N, T, E): self-attention, or cross-attention to a shorter memory
    (the packed in-projection's thirds and the bias' thirds, views of one parameter each)."""

    def __init__(self, cross: bool = False, masked: bool = False, **options: Any) -> None:
        super().__init__()
        self.attention = torch.nn.MultiheadAttention(E, 2, **options)
        self.cross, self.masked, self.batch_first = cross, masked, options.get("batch_first", False)

    def forward(self, x: Tensor) -> Tensor:
        kdim, vdim = self.attention.kdim, self.attention.vdim
        key, value = (x[:, :3, :kdim] * 2, x[:, :3, :vdim] * 3) if self.cross else (x, x)
        # the last key is padding in the examples where it starts positive (each example its own mask)
        keep = key.new_zeros(key.shape[0], key.shape[1] - 1, dtype=torch.bool)
        padding = torch.cat([keep, key[:, -1:, 0] > 0], 1)
        mask = None if self.cross else torch.nn.Transformer.generate_square_subsequent_mask(T, dtype=x.dtype)
        if not self.batch_first:
            x, key, value = x.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
            if not self.cross:
                key = value = x
        options: dict[str, Any] = {"key_padding_mask": padding, "attn_mask": mask} if self.masked else {}
        output = self.attention(x, key, value, **options)[0]
        return output if self.batch_first else output.transpose(0, 1)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"batch_first": True, "masked": True},
        {"batch_first": True, "cross": True},
        {"batch_first": True, "cross": True, "masked": True, "kdim": 5, "vdim": 6, "bias": False},
    ],
    ids=["self, (T, N, E)", "self, causal and padding masks", "cross: views of the packed weight", "kdim, vdim"],
)
def test_multihead_attention(device: str, options: dict[str, Any]) -> None:
    x, y = sequences()
    check_all_quantities(torchbp.nn.convert(Attend(**options).double()).to(device), x.to(device), y.to(device))


@pytest.mark.parametrize("norm_first", [False, True], ids=["post-norm", "pre-norm"])
def test_converted_transformer_encoder_layer(norm_first: bool) -> None:
    layer = torch.nn.TransformerEncoderLayer(
        E, 2, 12, 0.0, "gelu" if norm_first else "relu", batch_first=True, norm_first=norm_first
    )
    check_all_quantities(torchbp.nn.convert(layer.double()), *sequences())


class Decode(torch.nn.Module):
    """A decoder layer attending to a memory made from the input itself."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.TransformerDecoderLayer(E, 2, 12, 0.0, batch_first=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x, x[:, :3].flip(1))  # type: ignore[no-any-return]


def test_converted_transformer_decoder_layer() -> None:
    check_all_quantities(torchbp.nn.convert(Decode().double()), *sequences())


def test_causal_lm() -> None:
    model = torchbp.nn.models.CausalLM(vocab=11, context=T, width=E, heads=2, blocks=2).double()
    tokens, targets = torch.randint(11, (N, T)), torch.randint(11, (N, T))

    def cost(logits: Tensor, target: Tensor) -> Tensor:
        """Each example's cross-entropy summed over its positions, averaged over the batch."""
        per_token = torch.nn.functional.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="none")
        return per_token.view(target.shape).sum(1).mean()

    check_all_quantities(model, tokens, targets, cost)


def test_transformer_errors_name_the_layer_and_why() -> None:
    sequence_first = torchbp.nn.convert(torch.nn.TransformerEncoderLayer(E, 2, 12, 0.0))
    with pytest.raises(torchbp.PerExampleError, match="TransformerEncoderLayer\\) takes \\(T, N, E\\).*batch_first"):
        torchbp.per_example(sequence_first, "norm")
    with_bias_kv = torchbp.nn.convert(torch.nn.MultiheadAttention(E, 2, add_bias_kv=True))
    with pytest.raises(torchbp.PerExampleError, match="MultiheadAttention\\): bias_k and bias_v"):
        torchbp.per_example(with_bias_kv, "norm")
    with_bias_kv.bias_k.requires_grad_(False)
    with_bias_kv.bias_v.requires_grad_(False)
    torchbp.per_example(with_bias_kv, "norm")
    frequency = torchbp.nn.convert(torch.nn.Embedding(5, E, scale_grad_by_freq=True))
    with pytest.raises(torchbp.PerExampleError, match="Embedding\\).*scale_grad_by_freq"):
        torchbp.per_example(frequency, "grad")
    table = torchbp.nn.convert(torch.nn.Embedding(T, E))
    head = torchbp.nn.convert(torch.nn.Linear(E, 2))
    model = torch.nn.ModuleDict({"table": table, "head": head})
    with pytest.raises(torchbp.PerExampleError, match="5 rows in dimension 0 where the other layers have 4"):
        with torchbp.per_example(model, "norm"):
            # positions looked up once and broadcast over the batch: the table's δ is summed over it
            head(torch.randn(N, T, E) + table(torch.arange(T))).sum().backward()


# the rows' arithmetic, form by form

ROWS, GROUPS, POSITIONS, OUT, IN, TABLE = 5, 2, 3, 4, 6, 3


def _forms() -> dict[str, tuple[ParameterRows, Tensor]]:
    """Every form of per-example rows, each with its gₖ written out by hand: N Σₜ δₖₜ uₖₜᵀ (per group),
    N Σₜ δₖₜ ⊙ uₖₜ, N Σₜ δₖₜ, or an embedding's δ rows added into the table rows its indices pick."""
    n, g = ROWS, GROUPS

    def draw(*shape: int) -> Tensor:
        return torch.randn(n, *shape, dtype=torch.float64)

    delta, u, grouped_delta, grouped_u = draw(OUT), draw(IN), draw(g * OUT), draw(g * IN)
    outer_delta, outer_u = draw(g, POSITIONS, OUT), draw(g, POSITIONS, IN)
    positions_delta, positions_u = draw(POSITIONS, OUT), draw(POSITIONS, OUT)
    indices = torch.randint(TABLE, (n, POSITIONS))
    picks = torch.nn.functional.one_hot(indices, TABLE).double()  # (N, T, V)
    return {
        "factored weight": (FactoredRows(delta, u, 1, torch.Size((OUT, IN))), n * torch.einsum("no,ni->noi", delta, u)),
        "factored grouped weight": (
            FactoredRows(grouped_delta, grouped_u, g, torch.Size((g * OUT, IN))),
            n * torch.einsum("ngo,ngi->ngoi", grouped_delta.view(n, g, OUT), grouped_u.view(n, g, IN)).flatten(1, 2),
        ),
        "factored bias": (FactoredRows(delta, None, 1, torch.Size((OUT,))), n * delta),
        "positions, outer": (
            Rows(outer_delta, outer_u, True, torch.Size((g * OUT, IN))),
            n * torch.einsum("ngto,ngti->ngoi", outer_delta, outer_u).flatten(1, 2),
        ),
        "positions, diagonal": (
            Rows(positions_delta, positions_u, False, torch.Size((OUT,))),
            n * (positions_delta * positions_u).sum(1),
        ),
        "positions, bias": (Rows(positions_delta, None, False, torch.Size((OUT,))), n * positions_delta.sum(1)),
        "embedding": (
            EmbeddingRows(positions_delta, indices, torch.Size((TABLE, OUT))),
            n * torch.einsum("ntv,nto->nvo", picks, positions_delta),
        ),
    }


FORMS = [
    "factored weight",
    "factored grouped weight",
    "factored bias",
    "positions, outer",
    "positions, diagonal",
    "positions, bias",
    "embedding",
]


@pytest.mark.parametrize("form", FORMS)
def test_every_rows_form_gives_the_quantities_of_its_per_example_gradients(form: str) -> None:
    """gₖ, ‖gₖ‖, (1/N) Σₖ gₖ² and (1/N) Σₖ gₖ (the layer's ∂C/∂θ, read where the backward pass gave none) of
    each form, from its factors and from gₖ written out, against gₖ by hand."""
    rows, g = _forms()[form]
    torch.testing.assert_close(rows.grad_sample(), g, rtol=1e-12, atol=1e-12)
    for written in (None, g):
        torch.testing.assert_close(rows.norm(written), g.flatten(1).norm(dim=1), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(rows.second_moment(written), g.square().mean(0), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(rows.mean(written), g.mean(0), rtol=1e-12, atol=1e-12)
