"""Feedback rules against their formulas written out by hand in float64.

For each rule, one training step of a small network through every path torchbp has (a converted
Sequential as one chain node, the layers called one by one, the fused MLP node, the MLP layer by
layer, the graph-free step, a CNN) gives the gradients of the rule's own equations: the top
layer's exact, the hidden layers' from B (δ B, or e B for dfa), and B as the rule says.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
from torch import Tensor

import torchbp
from torchbp import nn as tnn
from torchbp.feedback.rules import FeedbackAlignment
from torchbp.nn.feedback import feedback_of
from torchbp.training.graph_free import GraphFreeStep

RULES = ["backprop", "fa", "dfa", "usf", "brsf", "frsf", "kolen_pollack"]


def _hand_gradients(rule: str, x: Tensor, y: Tensor, weights: list[Tensor], biases: list[Tensor], bs: list[Tensor]):
    """One step of Linear-tanh-Linear-tanh-Linear with the quadratic cost C = (1/2n)‖a − y‖², written out."""
    z1 = x @ weights[0].T + biases[0]
    a1 = torch.tanh(z1)
    z2 = a1 @ weights[1].T + biases[1]
    a2 = torch.tanh(z2)
    out = a2 @ weights[2].T + biases[2]
    e = (out - y) / x.shape[0]  # ∂C/∂(output)
    delta3 = e  # the top layer is exact
    if rule == "backprop":
        carry3, carry2 = delta3 @ weights[2], None
    elif rule == "dfa":
        carry3 = e @ bs[2]  # ∂C/∂a² = e B³
    else:
        carry3 = delta3 @ bs[2]  # ∂C/∂a² = δ³ B³
    delta2 = carry3 * (1 - a2**2)
    if rule == "backprop":
        carry2 = delta2 @ weights[1]
    elif rule == "dfa":
        carry2 = e @ bs[1]
    else:
        carry2 = delta2 @ bs[1]
    delta1 = carry2 * (1 - a1**2)
    grads_w = [delta1.T @ x, delta2.T @ a1, delta3.T @ a2]
    grads_b = [delta1.sum(0), delta2.sum(0), delta3.sum(0)]
    return grads_w, grads_b


def _sequential() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3)
    ).double()


def _linears(model: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in model.modules() if hasattr(m, "weight")]


def _step(model: torch.nn.Module, x: Tensor, y: Tensor, graph_free: bool = False) -> None:
    cost = torchbp.get_cost("quadratic")
    for p in model.parameters():
        p.grad = None
    if graph_free:
        GraphFreeStep(model, cost)(x, y)  # type: ignore[arg-type]
    else:
        cost(model(x), y).backward()


def _check(rule: str, model: torch.nn.Module, x: Tensor, y: Tensor, graph_free: bool = False) -> None:
    layers = _linears(model)
    weights = [layer.weight.detach().clone() for layer in layers]
    biases = [layer.bias.detach().clone() for layer in layers]
    before = [layer.feedback_weight.clone() for layer in layers] if rule != "backprop" else []
    _step(model, x, y, graph_free)
    used = [layer.feedback_weight.clone() for layer in layers] if rule != "backprop" else []
    if rule == "kolen_pollack":
        used = before  # B is read, then learns
    grads_w, grads_b = _hand_gradients(rule, x, y, weights, biases, used)
    for layer, gw, gb in zip(layers, grads_w, grads_b):
        torch.testing.assert_close(layer.weight.grad, gw, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(layer.bias.grad, gb, rtol=1e-12, atol=1e-12)
    scale = [w[0].numel() ** -0.5 for w in weights]
    if rule in ("fa", "dfa"):
        for b0, b1 in zip(before, used):
            assert torch.equal(b0, b1)  # fixed
    if rule == "usf":
        for w, b, s in zip(weights, used, scale):
            torch.testing.assert_close(b, torch.sign(w) * s)
    if rule in ("brsf", "frsf"):
        for w, b, s in zip(weights, used, scale):
            assert torch.equal(torch.sign(b), torch.sign(w)) and b.abs().max() <= s
    if rule == "frsf":
        for b0, b1 in zip(before, used):
            assert torch.equal(b0.abs(), b1.abs())  # the magnitudes stay
    if rule == "brsf":  # redrawn by every layer whose BP2 runs (the first hands no error down to the data)
        assert not any(torch.equal(b0.abs(), b1.abs()) for b0, b1 in zip(before[1:], used[1:]))
        assert torch.equal(before[0], used[0]) != x.requires_grad
    if rule == "kolen_pollack":
        for layer, b0, gw in zip(layers, before, grads_w):
            torch.testing.assert_close(layer.feedback_weight, b0 - 0.1 * gw, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("rule", RULES)
def test_chain_node_follows_the_rules_formula(device: str, rule: str) -> None:
    model = tnn.convert(_sequential(), feedback=rule, seed=3).to(device)
    x, y = torch.randn(7, 4, dtype=torch.float64, device=device), torch.randn(7, 3, dtype=torch.float64, device=device)
    _check(rule, model, x, y)
    assert "ChainFunction" in type(model(x).grad_fn).__name__


@pytest.mark.parametrize("rule", RULES)
def test_layers_one_by_one_follow_the_rules_formula(rule: str) -> None:
    model = tnn.convert(_sequential(), feedback=rule, seed=3)
    model.register_forward_pre_hook(lambda module, args: None)
    for layer in model:
        layer.register_forward_hook(lambda module, args, output: None)  # no chain: each layer its own node
    x, y = torch.randn(7, 4, dtype=torch.float64), torch.randn(7, 3, dtype=torch.float64)
    _check(rule, model, x, y)


@pytest.mark.parametrize("one_by_one", [False, True], ids=["chain", "one by one"])
@pytest.mark.parametrize("rule", ["fa", "dfa", "brsf", "kolen_pollack"])
def test_remembered_checks_still_take_each_batchs_b(rule: str, one_by_one: bool) -> None:
    model = tnn.convert(_sequential(), feedback=rule, seed=3)
    if one_by_one:
        for layer in model:
            layer.register_forward_hook(lambda module, args, output: None)
    for _ in range(3):  # each step's B follows the rule, with the layers' checks remembered after the first
        x, y = torch.randn(7, 4, dtype=torch.float64), torch.randn(7, 3, dtype=torch.float64)
        _check(rule, model, x, y)
    assert "_link_memo" in model[2].__dict__
    with pytest.raises(ValueError, match="input"):  # a new input signature is checked on its first call
        model(torch.randn(7, 5, dtype=torch.float64))


def _model(path: str, rule: str) -> torch.nn.Module:
    if path.startswith("MLP"):
        model: torch.nn.Module = _mlp(rule)
        layers = model.layers
    else:
        model = tnn.convert(_sequential(), feedback=rule, seed=3)
        layers = model
    if path.endswith("one by one"):
        for layer in layers:
            layer.register_forward_hook(lambda module, args, output: None)
    return model


@pytest.mark.parametrize("rule", ["usf", "brsf", "frsf"])
@pytest.mark.parametrize("path", ["chain", "one by one", "MLP", "MLP one by one", "MLP graph-free"])
@pytest.mark.parametrize("input_grad", [False, True])
def test_only_layers_whose_bp2_runs_derive_b(rule: str, path: str, input_grad: bool) -> None:
    """A layer whose input takes no gradient hands no error down, so it reads no B and derives none."""
    if input_grad and path.endswith("graph-free"):
        pytest.skip("the graph-free step gives the data no gradient")
    model = _model(path, rule)
    x = torch.randn(7, 4, dtype=torch.float64, requires_grad=input_grad)
    y = torch.randn(7, 3, dtype=torch.float64)
    layers = _linears(model)
    versions = [layer.feedback_weight._version for layer in layers]
    _step(model, x, y, graph_free=path.endswith("graph-free"))
    drawn = [layer.feedback_weight._version != version for layer, version in zip(layers, versions)]
    assert drawn == [input_grad, True, True]
    _check(rule, _model(path, rule), x, y, graph_free=path.endswith("graph-free"))


def _mlp(rule: str) -> tnn.MLP:
    return tnn.MLP([4, 6, 5, 3], "tanh", "identity", dtype=torch.float64, feedback=torchbp.get_feedback(rule, seed=3))


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("path", ["fused", "layer by layer", "graph-free"])
def test_mlp_follows_the_rules_formula(device: str, rule: str, path: str) -> None:
    model = _mlp(rule).to(device)
    if path == "layer by layer":
        for layer in model.layers:
            layer.register_forward_hook(lambda module, args, output: None)
    x, y = torch.randn(7, 4, dtype=torch.float64, device=device), torch.randn(7, 3, dtype=torch.float64, device=device)
    _check(rule, model, x, y, graph_free=path == "graph-free")


@pytest.mark.parametrize("rule", RULES)
def test_mlp_paths_agree_bit_for_bit_over_steps(rule: str) -> None:
    x, y = torch.randn(7, 4, dtype=torch.float64), torch.randn(7, 3, dtype=torch.float64)
    fused, free = _mlp(rule), _mlp(rule)
    free.load_state_dict(fused.state_dict())
    for _ in range(3):
        _step(fused, x, y)
        _step(free, x, y, graph_free=True)
        for p, q in zip(fused.parameters(), free.parameters()):
            assert torch.equal(p.grad, q.grad)
            with torch.no_grad():
                p -= 0.1 * p.grad
                q -= 0.1 * q.grad
    for (name, b), (_, c) in zip(fused.named_buffers(), free.named_buffers()):
        assert torch.equal(b, c), name


@pytest.mark.parametrize("rule", RULES)
def test_a_rule_keeps_the_name_it_was_looked_up_by(rule: str) -> None:
    # fit reads it off a converted model to record (and resume) the run's feedback
    assert torchbp.get_feedback(rule).name == rule
    model = tnn.convert(
        torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)), feedback=rule
    )
    attached = feedback_of(model)
    assert (attached.name if attached is not None else "backprop") == rule


def test_backprop_equals_autograd_exactly() -> None:
    native = _sequential()
    ours = tnn.convert(copy.deepcopy(native), feedback="backprop")
    x, y = torch.randn(7, 4, dtype=torch.float64), torch.randn(7, 3, dtype=torch.float64)
    torch.nn.functional.mse_loss(native(x), y).backward()
    torch.nn.functional.mse_loss(ours(x), y).backward()
    for p, q in zip(native.parameters(), ours.parameters()):
        assert torch.equal(p.grad, q.grad)
    assert [name for name, _ in ours.named_buffers()] == []


def _cnn() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Conv2d(2, 3, 3, padding=1),
        torch.nn.Tanh(),
        torch.nn.Flatten(),
        torch.nn.Linear(3 * 5 * 5, 4),
    ).double()


@pytest.mark.parametrize("rule", ["fa", "dfa", "usf"])
def test_convolution_hands_down_its_rules_error(rule: str) -> None:
    model = tnn.convert(_cnn(), feedback=rule, seed=1)
    conv, linear = model[0], model[3]
    x = torch.randn(3, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    y = torch.randn(3, 4, dtype=torch.float64)
    torchbp.get_cost("quadratic")(model(x), y).backward()
    b_conv, b_lin = conv.feedback_weight, linear.feedback_weight
    z = torch.nn.functional.conv2d(x.detach(), conv.weight.detach(), conv.bias.detach(), padding=1)
    a = torch.tanh(z).flatten(1)
    out = a @ linear.weight.detach().T + linear.bias.detach()
    e = (out - y) / 3
    if rule == "dfa":
        assert b_conv.shape == (4, 2 * 5 * 5) and b_lin.shape == (4, 3 * 5 * 5)
        delta_conv = (e @ b_lin).reshape(z.shape) * (1 - torch.tanh(z) ** 2)
        grad_x = (e @ b_conv).reshape(x.shape)
    else:
        assert b_conv.shape == conv.weight.shape
        delta_conv = (e @ b_lin).reshape(z.shape) * (1 - torch.tanh(z) ** 2)
        # ∂C/∂x = Bᵀ ⋆ δ: the transposed convolution with B
        grad_x = torch.nn.functional.conv_transpose2d(delta_conv, b_conv, padding=1)
    torch.testing.assert_close(x.grad, grad_x, rtol=1e-12, atol=1e-12)
    xs = torch.nn.functional.unfold(x.detach(), 3, padding=1)  # (n, C·k·k, positions)
    grad_w = torch.einsum("nop,nkp->ok", delta_conv.flatten(2), xs).reshape(conv.weight.shape)
    torch.testing.assert_close(conv.weight.grad, grad_w, rtol=1e-12, atol=1e-12)


def test_bad_input_is_a_clear_error_at_convert_time() -> None:
    with pytest.raises(ValueError, match="unknown feedback rule 'nope'; registered feedback rules: backprop, brsf"):
        tnn.convert(_sequential(), feedback="nope")
    with pytest.raises(TypeError, match="unknown option.*accepted: seed=0, scale=1.0"):
        tnn.convert(_sequential(), feedback="fa", sclae=2.0)
    lstm = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LSTM(4, 2))
    with pytest.raises(ValueError, match=r"cannot act in: 1 \(LSTM: its backward is not torchbp's\)"):
        tnn.convert(lstm, feedback="fa")
    reflect = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1, padding_mode="reflect"), torch.nn.Flatten())
    with pytest.raises(ValueError, match=r"0 \(Conv2d: its padding is a layer of its own\)"):
        tnn.convert(reflect, feedback="usf")
    conv_last = torch.nn.Sequential(torch.nn.Linear(4, 9), torch.nn.Unflatten(1, (1, 3, 3)), torch.nn.Conv2d(1, 2, 3))
    with pytest.raises(ValueError, match="cannot identify the network's outputs.*pass outputs=N"):
        tnn.convert(conv_last, feedback="dfa")
    tnn.convert(conv_last, feedback="dfa", outputs=2)  # told, it draws B of (2, inputs)
    assert conv_last[0].feedback_weight.shape == (2, 4)


@pytest.mark.parametrize("scale", [1.0, 0.25])
@pytest.mark.parametrize("rule", ["fa", "dfa", "usf", "brsf", "frsf"])
def test_b_spreads_as_far_as_the_rule_says(rule: str, scale: float) -> None:
    """|B| ≤ s with the largest of its hundreds of entries within 10 % of s, as drawn and as each batch
    uses it: s = scale/√fan_in, or scale/√outputs for dfa (usf: |B| = s exactly)."""
    native = torch.nn.Sequential(torch.nn.Linear(100, 30), torch.nn.Tanh(), torch.nn.Linear(30, 10)).double()
    model = tnn.convert(native, feedback=rule, seed=3, scale=scale)
    x = torch.randn(7, 100, dtype=torch.float64, requires_grad=True)  # every layer's BP2 runs
    for _ in range(2):
        for layer in (model[0], model[2]):
            s = scale * (10 if rule == "dfa" else layer.weight.shape[1]) ** -0.5
            magnitude = layer.feedback_weight.abs()
            assert 0.9 * s <= magnitude.max() <= s
            if rule == "usf":
                torch.testing.assert_close(magnitude, torch.full_like(magnitude, s), rtol=1e-15, atol=0)
        model(x).square().mean().backward()


@pytest.mark.parametrize("rule", ["usf", "brsf", "frsf"])
def test_sign_rules_take_ws_current_signs(rule: str) -> None:
    """B follows W's signs batch by batch (W flipped, B flips; |B| as the rule says), and a weight of
    exactly +0 counts as positive."""
    model = tnn.convert(_sequential(), feedback=rule, seed=3)
    x = torch.randn(7, 4, dtype=torch.float64, requires_grad=True)  # every layer's BP2 runs
    y = torch.randn(7, 3, dtype=torch.float64)
    _check(rule, model, x, y)
    with torch.no_grad():
        for layer in _linears(model):
            layer.weight.neg_()
    _check(rule, model, x, y)
    with torch.no_grad():
        for layer in _linears(model):
            layer.weight[0, 0] = 0.0
    _step(model, x, y)
    assert all(layer.feedback_weight[0, 0] > 0 for layer in _linears(model))


@pytest.mark.parametrize("weight_decay", [0.0, 0.3])
def test_kolen_pollack_b_takes_ws_step_and_the_gap_shrinks(weight_decay: float) -> None:
    """B ← B − η(∂C/∂W + λB); with SGD of the same η and λ stepping W, W − B shrinks by (1 − ηλ) per step."""
    lr = 0.1
    model = tnn.convert(_sequential(), feedback="kolen_pollack", seed=3, lr=lr, weight_decay=weight_decay)
    x, y = torch.randn(7, 4, dtype=torch.float64), torch.randn(7, 3, dtype=torch.float64)
    layers = _linears(model)
    for _ in range(3):
        before = [layer.feedback_weight.clone() for layer in layers]
        gaps = [layer.weight.detach() - b for layer, b in zip(layers, before)]
        _step(model, x, y)
        for layer, b in zip(layers, before):
            expected = b - lr * (layer.weight.grad + weight_decay * b)
            torch.testing.assert_close(layer.feedback_weight, expected, rtol=1e-12, atol=1e-12)
        with torch.no_grad():  # SGD with weight decay: W ← W − η(∂C/∂W + λW)
            for layer in layers:
                layer.weight -= lr * (layer.weight.grad + weight_decay * layer.weight)
        for layer, gap in zip(layers, gaps):
            shrunk = (1 - lr * weight_decay) * gap
            torch.testing.assert_close(layer.weight.detach() - layer.feedback_weight, shrunk, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("rule", ["fa", "dfa", "brsf", "frsf", "kolen_pollack"])
def test_each_layer_draws_its_own_b(rule: str) -> None:
    """One random stream per layer, seeded from (seed, layer): layers of one shape get different B."""
    model = tnn.MLP([5, 5, 5, 5], dtype=torch.float64, feedback=torchbp.get_feedback(rule, seed=3))
    for name in ("feedback_weight", "feedback_state"):
        drawn = [getattr(layer, name) for layer in model.layers if hasattr(layer, name)]
        assert all(not torch.equal(a, b) for i, a in enumerate(drawn) for b in drawn[i + 1 :]), name


class _Redrawn(FeedbackAlignment):
    """A rule that redraws B from the layer's generator at each batch (``redraws``)."""

    redraws = True

    def matrix(self, weight, feedback_weight, generator, state=None):  # type: ignore[no-untyped-def]
        return self.initial(weight, tuple(weight.shape), generator)


def test_a_redrawing_rules_generator_is_new_each_batch_and_resumes() -> None:
    """The generator handed to ``matrix`` is seeded from (seed, layer, batch count): each batch's B is
    new (none the B drawn at the start), and a model loaded from a state dict draws the B an unbroken
    run would."""

    def batches(model: torch.nn.Module, steps: int) -> list[torch.Tensor]:
        drawn = []
        for _ in range(steps):
            model(x).square().mean().backward()
            drawn.append(model[2].feedback_weight.clone())
        return drawn

    x = torch.randn(7, 4, dtype=torch.float64)
    unbroken = tnn.convert(_sequential(), feedback=_Redrawn(seed=3))
    start = unbroken[2].feedback_weight.clone()
    drawn = [start, *batches(unbroken, 4)]
    assert all(not torch.equal(a, b) for i, a in enumerate(drawn) for b in drawn[i + 1 :])
    first = tnn.convert(_sequential(), feedback=_Redrawn(seed=3))  # other weights: the rule does not read them
    resumed = tnn.convert(_sequential(), feedback=_Redrawn(seed=3))
    batches(first, 2)
    resumed.load_state_dict(first.state_dict())
    assert int(resumed[2].feedback_draws) == 2
    for a, b in zip(batches(resumed, 2), drawn[3:]):
        assert torch.equal(a, b)


def test_dfa_in_an_mlp_inside_a_larger_model_reads_the_models_output_error() -> None:
    """An MLP whose output is not the network's: its layers carry the network's e down, not ∂C/∂(MLP output)."""
    torch.manual_seed(0)
    mlp = tnn.MLP([4, 6, 5], "tanh", "tanh", dtype=torch.float64)
    model = tnn.convert(torch.nn.Sequential(mlp, torch.nn.Linear(5, 3).double()), feedback="dfa", seed=3)
    x, y = torch.randn(7, 4, dtype=torch.float64), torch.randn(7, 3, dtype=torch.float64)
    _check("dfa", model, x, y)


def _flat_cnn() -> torch.nn.Module:
    """A convolution, then a linear layer, for inputs with and without a batch dimension."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(2, 3, 3, padding=1), torch.nn.Tanh(), torch.nn.Flatten(-3), torch.nn.Linear(3 * 5 * 5, 4)
    ).double()


@pytest.mark.parametrize("make", [_sequential, _flat_cnn], ids=["linear", "convolution"])
@pytest.mark.parametrize("rule", RULES)
def test_an_unbatched_input_is_a_batch_of_one(rule: str, make: Callable[[], torch.nn.Module]) -> None:
    """Without a batch dimension, an input gets what a batch of one gets (for dfa: e of one example, and a
    convolution's B drawn for the values of that one input)."""
    native = make()
    x = torch.randn(2, 5, 5, dtype=torch.float64) if make is _flat_cnn else torch.randn(4, dtype=torch.float64)
    grads = []
    for example in (x, x.unsqueeze(0)):
        model = tnn.convert(copy.deepcopy(native), feedback=rule, seed=3)
        example = example.clone().requires_grad_()
        model(example).square().sum().backward()
        grads.append([example.grad.reshape(x.shape)] + [p.grad for p in model.parameters()])
    for unbatched, batched in zip(*grads):
        torch.testing.assert_close(unbatched, batched, rtol=1e-12, atol=1e-12)
