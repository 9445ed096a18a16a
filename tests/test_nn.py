"""torchbp.nn: drop-in twins of torch.nn layers, Dense, MLP, convert and revert."""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable

import pytest
import torch

import torchbp.nn as tnn
from torchbp.derivatives.activations import Elementwise, get_activation

ACTIVATION_MODULES = [
    (torch.nn.Sigmoid(), tnn.Sigmoid()),
    (torch.nn.Tanh(), tnn.Tanh()),
    (torch.nn.ReLU(), tnn.ReLU()),
    (torch.nn.LeakyReLU(0.3), tnn.LeakyReLU(0.3)),
    (torch.nn.ELU(alpha=0.5), tnn.ELU(alpha=0.5)),
    (torch.nn.Softplus(beta=2.0, threshold=5.0), tnn.Softplus(beta=2.0, threshold=5.0)),
    (torch.nn.GELU(), tnn.GELU()),
    (torch.nn.GELU(approximate="tanh"), tnn.GELU(approximate="tanh")),
    (torch.nn.SiLU(), tnn.SiLU()),
    (torch.nn.Identity(), tnn.Identity()),
    (torch.nn.Softmax(dim=1), tnn.Softmax(dim=1)),
]


def test_linear_is_initialised_and_saved_like_torch(device: str, dtype: torch.dtype) -> None:
    torch.manual_seed(3)
    theirs = torch.nn.Linear(5, 4, device=device, dtype=dtype)
    torch.manual_seed(3)
    ours = tnn.Linear(5, 4, device=device, dtype=dtype)
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    for key, value in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value)
    assert repr(ours) == repr(theirs)
    no_bias = tnn.Linear(5, 4, bias=False)
    assert no_bias.bias is None and list(no_bias.state_dict()) == ["weight"]


def test_linear_state_dict_loads_into_torch_and_back() -> None:
    ours, theirs = tnn.Linear(3, 2), torch.nn.Linear(3, 2)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(6, 3)
    torch.testing.assert_close(ours(x), theirs(x))
    ours.load_state_dict(torch.nn.Linear(3, 2).state_dict())


@pytest.mark.parametrize("pair", ACTIVATION_MODULES, ids=lambda p: repr(p[1]))
def test_activation_modules_match_torch(device: str, pair: tuple[torch.nn.Module, torch.nn.Module]) -> None:
    theirs, ours = pair
    assert repr(ours) == repr(theirs)
    z = torch.randn(4, 6, dtype=torch.float64, device=device)
    z_ours, z_theirs = z.clone().requires_grad_(), z.clone().requires_grad_()
    a_ours, a_theirs = ours(z_ours), theirs(z_theirs)
    grad = torch.randn_like(z)
    a_ours.backward(grad)
    a_theirs.backward(grad)
    torch.testing.assert_close(a_ours, a_theirs)
    torch.testing.assert_close(z_ours.grad, z_theirs.grad)


def test_softmax_without_dim_warns_and_picks_like_torch() -> None:
    z = torch.randn(4, 6)
    with pytest.warns(UserWarning, match="Implicit dimension"):
        ours = tnn.Softmax()(z)
    with pytest.warns(UserWarning):
        theirs = torch.nn.Softmax()(z)
    torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize("activation", ["sigmoid", "relu", "tanh", "identity"])
def test_dense_equals_linear_then_activation(device: str, activation: str) -> None:
    dense = tnn.Dense(3, 2, activation, device=device, dtype=torch.float64)
    linear = torch.nn.Linear(3, 2, device=device, dtype=torch.float64)
    linear.load_state_dict(dense.state_dict())
    oracle = {"sigmoid": torch.sigmoid, "relu": torch.relu, "tanh": torch.tanh, "identity": lambda z: z}
    x = torch.randn(7, 3, dtype=torch.float64, device=device)
    dense(x).sum().backward()
    oracle[activation](linear(x)).sum().backward()
    torch.testing.assert_close(dense.weight.grad, linear.weight.grad)
    torch.testing.assert_close(dense.bias.grad, linear.bias.grad)


def test_dense_is_initialised_like_linear() -> None:
    torch.manual_seed(1)
    dense = tnn.Dense(4, 3)
    torch.manual_seed(1)
    linear = torch.nn.Linear(4, 3)
    assert torch.equal(dense.weight, linear.weight) and torch.equal(dense.bias, linear.bias)


def test_mlp_equals_sequential() -> None:
    mlp = tnn.MLP([4, 5, 3], activation="tanh", output_activation="identity")
    sequential = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
    sequential.load_state_dict(
        {k.replace("layers.1", "2").replace("layers.0", "0"): v for k, v in mlp.state_dict().items()}
    )
    x = torch.randn(6, 4)
    torch.testing.assert_close(mlp(x), sequential(x))
    assert [layer.activation.name for layer in mlp.layers] == ["tanh", "identity"]
    assert [layer.activation.name for layer in tnn.MLP([2, 3, 4, 1]).layers] == ["sigmoid"] * 3


def test_an_activation_set_by_name_on_an_mlp_layer_is_looked_up() -> None:
    torch.manual_seed(0)
    mlp = tnn.MLP([4, 5, 3], activation="sigmoid", output_activation="identity")
    mlp.layers[0].activation = "tanh"  # as a Dense layer alone takes it
    x = torch.randn(6, 4, requires_grad=True)
    first, second = mlp.layers
    hidden = torch.tanh(torch.nn.functional.linear(x, first.weight, first.bias))
    expected = torch.nn.functional.linear(hidden, second.weight, second.bias)
    torch.testing.assert_close(second(first(x)), expected)  # the layers one by one
    out = mlp(x)
    torch.testing.assert_close(out, expected)
    (grad,) = torch.autograd.grad(out.sum(), x)
    (expected_grad,) = torch.autograd.grad(expected.sum(), x)
    torch.testing.assert_close(grad, expected_grad)


@pytest.mark.parametrize("sizes", [[3], [3, 0], [3, 2.5]])
def test_mlp_rejects_bad_sizes(sizes: list) -> None:
    with pytest.raises(ValueError, match="sizes: expected at least two positive integers"):
        tnn.MLP(sizes)


def test_modules_pickle_and_deepcopy() -> None:
    model = tnn.MLP([3, 4, 2], activation=tnn.Dense(1, 1, "leaky_relu").activation)
    for clone in (pickle.loads(pickle.dumps(model)), copy.deepcopy(model)):
        x = torch.randn(2, 3)
        torch.testing.assert_close(clone(x), model(x))


def cube(z: torch.Tensor) -> torch.Tensor:
    return z**3


def cube_prime(z: torch.Tensor) -> torch.Tensor:
    return 3 * z * z


def test_a_custom_activation_pickles_and_deepcopies_field_by_field() -> None:
    layer = tnn.Dense(3, 2, Elementwise("cube", cube, "z", sigma_prime=cube_prime)).double()
    x = torch.randn(4, 3, dtype=torch.float64)
    output = layer(x)
    output.square().sum().backward()
    for clone in (pickle.loads(pickle.dumps(layer)), copy.deepcopy(layer)):
        assert clone.activation.sigma is cube and clone.activation.sigma_prime is cube_prime
        clone.zero_grad(set_to_none=True)
        clone_output = clone(x)
        clone_output.square().sum().backward()
        torch.testing.assert_close(clone_output, output, rtol=0, atol=0)
        torch.testing.assert_close(clone.weight.grad, layer.weight.grad, rtol=0, atol=0)
        torch.testing.assert_close(clone.bias.grad, layer.bias.grad, rtol=0, atol=0)


def test_a_custom_activation_from_lambdas_deepcopies() -> None:
    square = Elementwise("square", lambda z: z * z, "z", sigma_prime=lambda z: 2 * z)
    layer = tnn.Dense(3, 2, square)
    clone = copy.deepcopy(layer)
    assert clone.activation == square and clone.activation is not square
    x = torch.randn(4, 3)
    torch.testing.assert_close(clone(x), layer(x), rtol=0, atol=0)


def test_a_custom_activation_with_a_built_in_name_stays_itself() -> None:
    impostor = Elementwise("relu", cube, "mask", sigma_prime=cube_prime)
    clone = pickle.loads(pickle.dumps(impostor))
    assert clone.sigma is cube and clone.sigma_prime is cube_prime


def test_a_built_in_activation_pickles_by_name() -> None:
    activation = get_activation("leaky_relu", negative_slope=0.2)
    payload = pickle.dumps(activation)
    assert b"_rebuild" in payload  # σ, σ′ are closures, which only the table can rebuild
    clone = pickle.loads(payload)
    assert repr(clone) == "leaky_relu(negative_slope=0.2)"
    z = torch.randn(5)
    torch.testing.assert_close(clone(z), activation(z), rtol=0, atol=0)
    torch.testing.assert_close(clone.delta(torch.ones(5), z), activation.delta(torch.ones(5), z), rtol=0, atol=0)


class Block(torch.nn.Module):
    """A user module with a shared layer, containers and layers torchbp does not support."""

    def __init__(self) -> None:
        super().__init__()
        self.shared = torch.nn.Linear(4, 4)
        self.stack = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.GELU(), self.shared, torch.nn.Tanh())
        branch = torch.nn.Sequential(self.shared, torch.nn.SiLU())
        self.branches = torch.nn.ModuleList([branch, torch.nn.GroupNorm(1, 4)])
        self.heads = torch.nn.ModuleDict({"out": torch.nn.Linear(4, 2), "act": torch.nn.Softmax(dim=-1)})
        self.conv = torch.nn.Conv1d(1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stack(x)
        h = self.branches[1](self.branches[0](h)) + self.conv(h.unsqueeze(1)).squeeze(1)
        return self.heads["act"](self.heads["out"](h))


def test_convert_and_revert_keep_outputs_gradients_and_state() -> None:
    model = Block().double()
    before = copy.deepcopy(model.state_dict())
    x = torch.randn(5, 3, dtype=torch.float64)
    model(x).pow(2).sum().backward()
    expected_grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    expected = model(x)
    parameters = list(model.parameters())

    assert tnn.convert(model) is model
    assert isinstance(model.stack[0], tnn.Linear) and isinstance(model.stack[1], tnn.GELU)
    assert model.stack[2] is model.shared is model.branches[0][0]  # still shared
    assert isinstance(model.shared, tnn.Linear)
    assert isinstance(model.heads["out"], tnn.Linear) and isinstance(model.heads["act"], tnn.Softmax)
    assert type(model.branches[1]) is torch.nn.GroupNorm  # no twin: stays native
    assert type(model.conv).__module__ == "torchbp.nn.conv"
    assert list(model.parameters()) == parameters  # the very same Parameter objects
    model.zero_grad()
    torch.testing.assert_close(model(x), expected)
    model(x).pow(2).sum().backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, expected_grads[name])

    tnn.revert(model)
    assert type(model.stack[0]) is torch.nn.Linear and type(model.heads["act"]) is torch.nn.Softmax
    assert model.stack[2] is model.shared
    assert model.state_dict().keys() == before.keys()
    for key, value in before.items():
        assert torch.equal(model.state_dict()[key], value)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize(
    ("module", "shape"), [(torch.nn.BatchNorm1d, (6, 3)), (torch.nn.BatchNorm2d, (4, 3, 2, 2))], ids=["1d", "2d"]
)
def test_batch_norm_with_tracking_switched_off_after_construction_follows_torch(
    module: type[torch.nn.Module], shape: tuple[int, ...], training: bool
) -> None:
    # the running statistics stay as buffers: torch normalises with them in eval, and leaves them alone in training
    native = module(3, dtype=torch.float64)
    with torch.no_grad():
        native.running_mean.normal_()
        native.running_var.uniform_(0.5, 1.5)
    native.track_running_stats = False
    native.train(training)
    ours = tnn.convert(copy.deepcopy(native))
    x = torch.randn(shape, dtype=torch.float64)
    x_native, x_ours = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_native, out_ours = native(x_native), ours(x_ours)
    torch.testing.assert_close(out_ours, out_native)
    grad = torch.randn_like(out_native)
    out_native.backward(grad)
    out_ours.backward(grad)
    torch.testing.assert_close(x_ours.grad, x_native.grad)
    torch.testing.assert_close(ours.weight.grad, native.weight.grad)
    for (name, a), b in zip(ours.named_buffers(), native.buffers()):
        torch.testing.assert_close(a, b, msg=name)


def test_convert_a_bare_layer_and_keep_hooks() -> None:
    calls = []
    linear = torch.nn.Linear(2, 2)
    linear.register_forward_hook(lambda module, args, output: calls.append(type(module)))
    converted = tnn.convert(linear)
    assert converted is linear and isinstance(converted, tnn.Linear)
    converted(torch.randn(1, 2))
    assert calls == [tnn.Linear]


def test_convert_leaves_user_subclasses_alone() -> None:
    class MyLinear(torch.nn.Linear):
        pass

    model = torch.nn.Sequential(MyLinear(2, 2))
    tnn.convert(model)
    assert type(model[0]) is MyLinear


def test_convert_rejects_non_modules() -> None:
    with pytest.raises(TypeError, match="model: expected a torch.nn.Module, got list"):
        tnn.convert([torch.nn.Linear(2, 2)])


def test_mlp_hessian_vector_product_matches_native() -> None:
    mlp = tnn.MLP([3, 4, 2], activation="tanh").double()
    native = torch.nn.Sequential(
        torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2), torch.nn.Tanh()
    ).double()
    native.load_state_dict(
        {k.replace("layers.1", "2").replace("layers.0", "0"): v for k, v in mlp.state_dict().items()}
    )
    x = torch.randn(6, 3, dtype=torch.float64)

    def hvp(model: torch.nn.Module) -> list[torch.Tensor]:
        params = list(model.parameters())
        grads = torch.autograd.grad((model(x) ** 2).sum(), params, create_graph=True)
        vector = [torch.ones_like(p) for p in params]
        return list(torch.autograd.grad(sum((g * v).sum() for g, v in zip(grads, vector)), params))

    for ours, theirs in zip(hvp(mlp), hvp(native)):
        torch.testing.assert_close(ours, theirs)


def test_mlp_delta_hooks_and_forward_hooks() -> None:
    mlp = tnn.MLP([3, 4, 2]).double()
    x = torch.randn(5, 3, dtype=torch.float64)
    deltas: dict[str, list[torch.Tensor]] = {"fused": [], "layered": []}
    path = "fused"
    for layer in mlp.layers:
        layer.register_delta_hook(lambda module, delta: deltas[path].append(delta))
    fused = mlp(x)
    fused.square().sum().backward()
    fused_grads = [p.grad.clone() for p in mlp.parameters()]
    mlp.zero_grad()
    calls = []
    mlp.layers[0].register_forward_hook(lambda *args: calls.append("hook"))
    path = "layered"
    layered = mlp(x)  # layer by layer now, the same numbers
    layered.square().sum().backward()
    assert calls == ["hook"]
    torch.testing.assert_close(layered, fused)
    for grad, p in zip(fused_grads, mlp.parameters()):
        torch.testing.assert_close(grad, p.grad)
    # each layer's δ once per pass, from the top down, and the same δ on both paths
    assert [tuple(d.shape) for d in deltas["fused"]] == [tuple(d.shape) for d in deltas["layered"]] == [(5, 2), (5, 4)]
    for ours, theirs in zip(deltas["fused"], deltas["layered"]):
        torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(deltas["fused"][0].sum(0), mlp.layers[1].bias.grad)  # BP3


def _mlp_and_native_twin() -> tuple[tnn.MLP, torch.nn.Sequential]:
    """A torchbp MLP and the same net as torch.nn (Linear + Tanh per layer), same weights, float64."""
    mlp = tnn.MLP([3, 4, 2], "tanh").double()
    native = torch.nn.Sequential(
        torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh()),
        torch.nn.Sequential(torch.nn.Linear(4, 2), torch.nn.Tanh()),
    ).double()
    with torch.no_grad():
        for ours, (theirs, _) in zip(mlp.layers, native):
            theirs.weight.copy_(ours.weight)
            theirs.bias.copy_(ours.bias)
    return mlp, native


def test_mlp_full_backward_hook_on_a_layer_fires_with_torchs_gradients() -> None:
    mlp, native = _mlp_and_native_twin()
    seen: dict[str, tuple] = {}
    for name, layer in (("ours", mlp.layers[0]), ("theirs", native[0])):

        def keep(module: torch.nn.Module, grad_input: tuple, grad_output: tuple, name: str = name) -> None:
            seen[name] = grad_input, grad_output

        layer.register_full_backward_hook(keep)
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    for model in (mlp, native):
        model(x).square().sum().backward()
    assert seen.keys() == {"ours", "theirs"}
    (ours_in,), (ours_out,) = seen["ours"]
    (theirs_in,), (theirs_out,) = seen["theirs"]
    torch.testing.assert_close(ours_out, theirs_out)  # ∂C/∂a¹
    torch.testing.assert_close(ours_in, theirs_in)  # ∂C/∂x


HOOKS = {
    "forward_pre": lambda layer, calls: layer.register_forward_pre_hook(lambda *args: calls.append(1)),
    "forward": lambda layer, calls: layer.register_forward_hook(lambda *args: calls.append(1)),
    "full_backward_pre": lambda layer, calls: layer.register_full_backward_pre_hook(lambda *args: calls.append(1)),
    "full_backward": lambda layer, calls: layer.register_full_backward_hook(lambda *args: calls.append(1)),
    "global forward": lambda layer, calls: torch.nn.modules.module.register_module_forward_hook(
        lambda module, *args: calls.append(1) if module is layer else None
    ),
}


@pytest.mark.parametrize("register", HOOKS.values(), ids=HOOKS.keys())
def test_mlp_runs_layer_by_layer_for_any_module_hook(register: Callable) -> None:
    mlp, native = _mlp_and_native_twin()
    x = torch.randn(5, 3, dtype=torch.float64)
    fused = mlp(x)
    calls: list[int] = []
    handle = register(mlp.layers[1], calls)
    try:
        layered = mlp(x)
        layered.sum().backward()
    finally:
        handle.remove()
    assert calls == [1]
    torch.testing.assert_close(layered, fused, rtol=0, atol=0)
    torch.testing.assert_close(layered, native(x))
    assert mlp(x).grad_fn.name() == fused.grad_fn.name()  # fused again once the hook is gone
