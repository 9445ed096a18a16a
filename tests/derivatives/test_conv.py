"""Conv1d, Conv2d and the padding before them: the kernels against the written-out equations, the
padding layer (which the harness does not reach), the functional ops against torch's, bad input,
and δ hooks. The harness (tests/test_layer_harness.py) covers gradcheck over ``Conv.samples()``
and the converted modules against torch.nn's."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

import torchbp
from torchbp.derivatives.conv import (
    Conv,
    ConvSaved,
    Pad,
    PadSaved,
    conv_input_vjp_reference,
    conv_weight_vjp_reference,
    fold_padding,
    padding_source,
)
from torchbp.functional.conv import conv1d, conv2d, pad
from torchbp.functional.factory import apply_layer
from torchbp.nn.conv import Conv1d, Conv2d

TORCH_CONV = {1: torch.nn.functional.conv1d, 2: torch.nn.functional.conv2d}
OURS = {1: conv1d, 2: conv2d}


@pytest.mark.parametrize("index", range(len(Conv.samples(torch.float64, "cpu"))))
def test_convolution_backward_kernel_equals_the_written_equations(device: str, index: int) -> None:
    sample = Conv.samples(torch.float64, device)[index]
    conv = sample.derivatives
    assert isinstance(conv, Conv)
    weight, bias = sample.params
    assert weight is not None
    x = conv.batched(sample.x)
    z, _ = conv.forward(x, weight, bias)
    delta = torch.randn_like(z)
    saved = conv.save(x, (weight, bias), z, (), (True, True, True))
    grad_weight, grad_bias = conv.param_vjps(delta, saved, (True, True))
    args = (conv.stride, conv.padding, conv.dilation, conv.groups)
    # BP2: the transposed convolution of δ with W
    expected_x = conv_input_vjp_reference(delta, tuple(x.shape), weight, *args)
    torch.testing.assert_close(conv.input_vjp(delta, saved), expected_x, rtol=1e-12, atol=1e-12)
    # BP4: the correlation of x with δ
    expected_weight = conv_weight_vjp_reference(delta, x, tuple(weight.shape), *args)
    torch.testing.assert_close(grad_weight, expected_weight, rtol=1e-12, atol=1e-12)
    # BP3: δ summed over the batch and the positions
    torch.testing.assert_close(grad_bias, delta.transpose(0, 1).reshape(delta.shape[1], -1).sum(1))


def test_the_written_equations_are_autograd_s_gradients(device: str) -> None:
    x = torch.randn(2, 4, 7, 6, dtype=torch.float64, device=device, requires_grad=True)
    weight = torch.randn(6, 2, 3, 2, dtype=torch.float64, device=device, requires_grad=True)
    args = ((2, 1), (1, 2), (1, 3), 2)
    z = torch.nn.functional.conv2d(x, weight, None, *args)
    delta = torch.randn_like(z)
    grad_x, grad_weight = torch.autograd.grad(z, (x, weight), delta)
    torch.testing.assert_close(conv_input_vjp_reference(delta, tuple(x.shape), weight, *args), grad_x)
    torch.testing.assert_close(conv_weight_vjp_reference(delta, x, tuple(weight.shape), *args), grad_weight)


def test_the_input_vjp_needs_only_what_is_saved_for_it(device: str) -> None:
    conv = Conv((2,), (1,), (1,), 1)
    x = torch.randn(2, 3, 7, dtype=torch.float64, device=device)
    weight = torch.randn(4, 3, 3, dtype=torch.float64, device=device)
    z, _ = conv.forward(x, weight, None)
    assert conv.save(x, (weight, None), z, (), (False, False, True)) == ConvSaved(None, None)
    saved = conv.save(x, (weight, None), z, (), (True, False, False))
    assert conv.input_vjp(torch.ones_like(z), saved).shape == x.shape


@pytest.mark.parametrize("index", range(len(Pad.samples(torch.float64, "cpu"))))
def test_pad_gradcheck_gradgradcheck_and_forward_ad(device: str, index: int) -> None:
    sample = Pad.samples(torch.float64, device)[index]
    x = sample.x.detach().requires_grad_()

    def layer(x: torch.Tensor) -> torch.Tensor:
        return apply_layer(sample.derivatives, x)

    assert gradcheck(layer, (x,), check_forward_ad=True, check_batched_grad=True, check_batched_forward_grad=True)
    assert gradgradcheck(layer, (x,))


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
@pytest.mark.parametrize("pads", [(2, 1), (1, 2, 3, 0)], ids=["1-d", "2-d"])
def test_pad_kernels_equal_the_fold_of_the_copied_positions(device: str, mode: str, pads: tuple[int, ...]) -> None:
    layer = Pad(pads, mode)
    x = torch.randn((2, 3, 5, 4)[: len(pads) // 2 + 2], dtype=torch.float64, device=device)
    z, _ = layer.forward(x)
    # forward: each padded position j holds x at padding_source(j)
    copied = x
    for i in range(len(pads) // 2):
        dim = x.dim() - 1 - i
        source = padding_source(x.shape[dim], pads[2 * i], pads[2 * i + 1], mode, device)
        copied = copied.index_select(dim, source)
    torch.testing.assert_close(z, copied, rtol=0, atol=0)
    delta = torch.randn_like(z)
    grad_x = layer.input_vjp(delta, layer.save(x, (), z, (), (True,)))
    torch.testing.assert_close(grad_x, fold_padding(delta, pads, mode), rtol=1e-12, atol=1e-12)
    x.requires_grad_()
    (expected,) = torch.autograd.grad(torch.nn.functional.pad(x, pads, mode), x, delta)
    torch.testing.assert_close(grad_x, expected, rtol=1e-12, atol=1e-12)


def test_pad_saves_the_input_only_for_the_aten_kernels(device: str) -> None:
    x = torch.randn(1, 2, 4, device=device)
    assert Pad((1, 1), "reflect").save(x, (), x, (), (True,)).x is x
    assert Pad((1, 1), "circular").save(x, (), x, (), (True,)) == PadSaved(None)
    assert Pad((1, 1), "constant").save(x, (), x, (), (True,)) == PadSaved(None)


@pytest.mark.parametrize("mode", ["constant", "reflect", "replicate", "circular"])
def test_functional_pad_equals_torch(device: str, mode: str) -> None:
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64, device=device, requires_grad=True)
    pads = (1, 3, 2, 0)
    value = 0.5 if mode == "constant" else None
    ours = pad(x, pads, mode, value)
    theirs = torch.nn.functional.pad(x, pads, mode, value)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    delta = torch.randn_like(theirs)
    torch.testing.assert_close(
        torch.autograd.grad(ours, x, delta)[0], torch.autograd.grad(theirs, x, delta)[0], rtol=1e-12, atol=1e-12
    )
    assert type(ours.grad_fn).__name__ == "PadFunctionBackward"


CASES = [
    (1, (2, 3, 9), (4, 3, 3), {"stride": 2, "padding": 1}),
    (1, (3, 8), (6, 1, 4), {"padding": "same", "dilation": 1, "groups": 3}),
    (1, (2, 2, 7), (2, 2, 2), {"padding": "valid", "dilation": 2}),
    (2, (2, 2, 6, 5), (3, 2, 2, 4), {"padding": "same"}),
    (2, (2, 2, 6, 6), (4, 1, 3, 2), {"padding": "same", "dilation": (2, 3), "groups": 2}),
    (2, (2, 5, 6), (3, 2, 3, 3), {"padding": (1, 2), "stride": (1, 2)}),
]


@pytest.mark.parametrize(("d", "x_shape", "weight_shape", "options"), CASES)
def test_functional_conv_equals_torch(
    device: str, d: int, x_shape: tuple[int, ...], weight_shape: tuple[int, ...], options: dict[str, object]
) -> None:
    x = torch.randn(x_shape, dtype=torch.float64, device=device, requires_grad=True)
    weight = torch.randn(weight_shape, dtype=torch.float64, device=device, requires_grad=True)
    bias = torch.randn(weight_shape[0], dtype=torch.float64, device=device, requires_grad=True)
    ours = OURS[d](x, weight, bias, **options)  # type: ignore[operator]
    theirs = TORCH_CONV[d](x, weight, bias, **options)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    delta = torch.randn_like(theirs)
    for g_ours, g_theirs in zip(
        torch.autograd.grad(ours, (x, weight, bias), delta), torch.autograd.grad(theirs, (x, weight, bias), delta)
    ):
        torch.testing.assert_close(g_ours, g_theirs, rtol=1e-12, atol=1e-12)


def test_same_padding_with_an_even_kernel_is_torch_s_to_the_bit(device: str) -> None:
    x = torch.randn(2, 3, 9, 8, device=device)
    weight = torch.randn(4, 3, 4, 2, device=device)
    torch.testing.assert_close(
        conv2d(x, weight, padding="same"), torch.nn.functional.conv2d(x, weight, padding="same"), rtol=0, atol=0
    )


def _bad(**changes: object) -> dict[str, object]:
    """Valid arguments of conv2d (4 channels in 2 groups, 6 out, 3×3 kernel), with ``changes``."""
    arguments: dict[str, object] = {
        "input": torch.randn(2, 4, 6, 6),
        "weight": torch.randn(6, 2, 3, 3),
        "bias": torch.randn(6),
        "groups": 2,
    }
    arguments.update(changes)
    return arguments


BAD = [
    ({"input": torch.randn(2, 3, 6, 6)}, ValueError, r"input: expected 4 channels in dim 1 .*groups=2.*\(2, 3, 6, 6\)"),
    ({"input": torch.randn(3, 6, 6)}, ValueError, r"input: expected 4 channels in dim 0"),
    ({"weight": torch.randn(5, 2, 3, 3)}, ValueError, r"weight: expected out_channels \(dim 0\) divisible by groups=2"),
    ({"weight": torch.randn(6, 2, 3)}, ValueError, r"weight: expected a 4-D tensor .* got shape \(6, 2, 3\)"),
    ({"input": torch.randn(4, 6)}, ValueError, r"input: expected a 3-D \(unbatched\) or 4-D \(batched\) tensor"),
    ({"input": torch.randn(2, 4, 2, 6)}, ValueError, r"input: spatial size \(2, 6\) padded to \(2, 6\) is smaller"),
    ({"input": torch.randn(2, 4, 6, 6), "dilation": 3}, ValueError, r"spans \(7, 7\)"),
    ({"input": torch.randn(2, 4, 6, 6, dtype=torch.float64)}, TypeError, r"input: expected dtype torch.float32"),
    ({"input": torch.ones(2, 4, 6, 6, dtype=torch.long)}, TypeError, r"input: expected a floating-point tensor"),
    ({"input": [[1.0]]}, TypeError, r"input: expected a torch.Tensor, got list"),
    ({"weight": None}, TypeError, r"weight: expected a torch.Tensor, got NoneType"),
    ({"bias": torch.randn(4)}, ValueError, r"bias: expected shape \(6,\) .* got shape \(4\)"),
    ({"bias": torch.randn(6, dtype=torch.float64)}, TypeError, r"bias: expected dtype torch.float32"),
    ({"stride": 0}, ValueError, r"stride: expected an int or a tuple of 2 ints, each ≥ 1, got 0"),
    ({"stride": (1, 2, 3)}, ValueError, r"stride: expected an int or a tuple of 2 ints"),
    ({"padding": -1}, ValueError, r"padding: expected an int or a tuple of 2 ints, each ≥ 0, got -1"),
    ({"padding": "full"}, ValueError, r"padding: expected 'same', 'valid', an int or a tuple of 2 ints, got 'full'"),
    ({"padding": "same", "stride": 2}, ValueError, r"padding: 'same' is not supported for strided convolutions"),
    ({"dilation": (1, 0)}, ValueError, r"dilation: expected an int or a tuple of 2 ints, each ≥ 1"),
    ({"groups": 0}, ValueError, r"groups: expected a positive int, got 0"),
]


@pytest.mark.parametrize(("changes", "error", "match"), BAD)
def test_bad_input_is_refused_with_a_clear_error(
    changes: dict[str, object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        conv2d(**_bad(**changes))  # type: ignore[arg-type]


def test_bad_conv1d_input_names_conv1d() -> None:
    with pytest.raises(ValueError, match=r"input: expected a 2-D \(unbatched\) or 3-D \(batched\) tensor .*conv1d"):
        conv1d(torch.randn(2, 3, 4, 5), torch.randn(2, 3, 3))
    with pytest.raises(
        ValueError, match=r"weight: expected a 3-D tensor of shape \(out_channels, in_channels / groups"
    ):
        conv1d(torch.randn(2, 3, 5), torch.randn(2, 3, 3, 3))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_a_weight_on_another_device_is_refused() -> None:
    with pytest.raises(ValueError, match=r"input: expected device cuda:0 \(the device of weight\), got cpu"):
        conv2d(torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3, device="cuda"))


@pytest.mark.parametrize(
    ("arguments", "match"),
    [
        (((1, 1), "mirror"), r"mode: expected one of 'constant', 'reflect', 'replicate', 'circular', got 'mirror'"),
        (((1, 1, 1),), r"pad: expected an even number of ints"),
        (((4, 0), "reflect"), r"pad: 'reflect' padding of dim 2 \(size 4\) expected each side ≤ 3, got \(4, 0\)"),
        (((0, 5), "circular"), r"pad: 'circular' padding of dim 2 \(size 4\) expected each side ≤ 4"),
        (((-1, 0), "replicate"), r"pad: 'replicate' padding expected non-negative ints"),
        (((1, 1), "reflect", 2.0), r"value: 'reflect' padding takes no value"),
        (((1,) * 8, "replicate"), r"input: 'replicate' padding of 4 dimension\(s\) expected a tensor of 5 or 6"),
    ],
)
def test_bad_padding_is_refused_with_a_clear_error(arguments: tuple[object, ...], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        pad(torch.randn(1, 2, 4), *arguments)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("module", "x_shape"),
    [
        (lambda: torch.nn.Conv2d(3, 4, 3, stride=2, padding=1), (5, 3, 7, 7)),
        (lambda: torch.nn.Conv2d(2, 4, 2, padding="same", padding_mode="reflect", groups=2), (3, 2, 5, 5)),
        (lambda: torch.nn.Conv1d(3, 2, 3, padding=1, padding_mode="circular"), (3, 6)),
    ],
    ids=["conv2d", "conv2d reflect", "conv1d unbatched"],
)
def test_the_delta_hook_gets_delta_which_sums_to_the_bias_gradient(
    device: str, module: object, x_shape: tuple[int, ...]
) -> None:
    layer = torchbp.nn.convert(module().to(device))  # type: ignore[operator]
    seen: list[torch.Tensor] = []
    handle = layer.register_delta_hook(lambda _, delta: seen.append(delta))
    x = torch.randn(x_shape, device=device)
    z = layer(x)
    (z * torch.randn_like(z)).sum().backward()
    (delta,) = seen
    assert delta.shape == z.shape
    spatial = tuple(range(-(layer.weight.dim() - 2), 0))
    batch = (0,) if x.dim() == layer.weight.dim() else ()
    torch.testing.assert_close(delta.sum((*batch, *spatial)), layer.bias.grad)
    handle.remove()
    layer(x).sum().backward()
    assert len(seen) == 1


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate", "circular"])
def test_a_converted_conv_is_one_explicit_node_after_its_padding(device: str, padding_mode: str) -> None:
    theirs = torch.nn.Conv2d(2, 3, 3, padding=1, padding_mode=padding_mode, device=device)
    ours = torchbp.nn.convert(copy.deepcopy(theirs))
    assert type(ours) is Conv2d and repr(ours) == repr(theirs)
    z = ours(torch.randn(1, 2, 5, 5, device=device, requires_grad=True))
    assert type(z.grad_fn).__name__ == "ConvFunctionBackward"
    padding = z.grad_fn.next_functions[0][0]
    expected = "AccumulateGrad" if padding_mode == "zeros" else "PadFunctionBackward"
    assert type(padding).__name__ == expected


def test_frozen_weights_and_a_frozen_input_each_get_only_their_gradients(device: str) -> None:
    layer = Conv1d(2, 3, 3, device=device)
    x = torch.randn(2, 2, 6, device=device, requires_grad=True)
    layer.requires_grad_(False)
    layer(x).sum().backward()
    assert x.grad is not None and layer.weight.grad is None
    layer.bias.requires_grad_(True)
    layer(x.detach()).sum().backward()
    assert layer.weight.grad is None
    torch.testing.assert_close(layer.bias.grad, torch.full((3,), 8.0, device=device))


def test_autocast_runs_the_convolution_in_the_autocast_dtype() -> None:
    theirs = torch.nn.Conv2d(3, 4, 3)
    ours = torchbp.nn.convert(copy.deepcopy(theirs))
    x = torch.randn(2, 3, 6, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z_ours, z_theirs = ours(x), theirs(x)
    assert z_ours.dtype == z_theirs.dtype == torch.bfloat16
    torch.testing.assert_close(z_ours, z_theirs)


@pytest.mark.parametrize(
    ("module", "x_shape"),
    [
        (lambda: torch.nn.Conv2d(2, 3, 4, padding="same", padding_mode="reflect"), (2, 2, 6, 6)),
        (lambda: torch.nn.Conv1d(2, 3, 4, padding="same"), (2, 7)),
        (lambda: torch.nn.Conv2d(2, 3, 3, stride=2, padding=1, padding_mode="circular"), (1, 2, 5, 5)),
    ],
    ids=["reflect, same, even kernel", "conv1d same, even kernel", "circular"],
)
def test_torch_compile_traces_padding_and_convolution_without_graph_breaks(
    monkeypatch: pytest.MonkeyPatch, module: object, x_shape: tuple[int, ...]
) -> None:
    import torch._dynamo as dynamo

    import torchbp.functional.conv as functional_conv
    from torchbp.functional.settings_cache import SettingsCache

    monkeypatch.setattr(functional_conv, "_SETTINGS", SettingsCache())  # a first call, settings not yet looked up
    monkeypatch.setattr(functional_conv, "_PADS", SettingsCache())
    model = torchbp.nn.convert(module())  # type: ignore[operator]
    x = torch.randn(x_shape, requires_grad=True)
    dynamo.reset()
    explanation = dynamo.explain(lambda x: model(x).sum())(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    dynamo.reset()
    torch.testing.assert_close(torch.compile(model)(x), model(x))


SUBSETS = [(True, False, False), (False, True, False), (False, False, True), (False, True, True)]
SUBSET_IDS = ["input", "weight", "bias", "weight and bias"]


@pytest.mark.parametrize("shape", [(2, 4, 7), (4, 7)], ids=["batched", "unbatched"])
@pytest.mark.parametrize("wanted", SUBSETS, ids=SUBSET_IDS)
def test_any_subset_of_gradients_equals_torch(device: str, shape: tuple[int, ...], wanted: tuple[bool, ...]) -> None:
    x = torch.randn(shape, dtype=torch.float64, device=device)
    weight = torch.randn(6, 2, 3, dtype=torch.float64, device=device)
    bias = torch.randn(6, dtype=torch.float64, device=device)
    leaves = [t.requires_grad_(w) for t, w in zip((x, weight, bias), wanted)]
    moving = [t for t in leaves if t.requires_grad]
    ours = conv1d(*leaves, stride=2, padding=1, groups=2)
    theirs = torch.nn.functional.conv1d(*leaves, stride=2, padding=1, groups=2)
    delta = torch.randn_like(theirs)
    for g_ours, g_theirs in zip(torch.autograd.grad(ours, moving, delta), torch.autograd.grad(theirs, moving, delta)):
        torch.testing.assert_close(g_ours, g_theirs, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", [(2, 4, 7), (4, 7)], ids=["batched", "unbatched"])
@pytest.mark.parametrize("moving", SUBSETS, ids=SUBSET_IDS)
def test_forward_ad_with_tangents_for_some_arguments_equals_torch(
    device: str, shape: tuple[int, ...], moving: tuple[bool, ...]
) -> None:
    primals = (
        torch.randn(shape, dtype=torch.float64, device=device),
        torch.randn(6, 2, 3, dtype=torch.float64, device=device),
        torch.randn(6, dtype=torch.float64, device=device),
    )
    tangents = tuple(torch.randn_like(p) for p, m in zip(primals, moving) if m)

    def jvp(convolution: Callable[..., torch.Tensor]) -> torch.Tensor:
        def f(*given: torch.Tensor) -> torch.Tensor:
            it = iter(given)
            return convolution(*(next(it) if m else p for p, m in zip(primals, moving)), stride=2, padding=1, groups=2)

        return torch.func.jvp(f, tuple(p for p, m in zip(primals, moving) if m), tangents)[1]

    torch.testing.assert_close(jvp(conv1d), jvp(torch.nn.functional.conv1d), rtol=1e-12, atol=1e-12)
