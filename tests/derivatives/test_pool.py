"""torchbp.derivatives.pool and torchbp.functional.pool: ATen's kernels against the written-out
equations, torch's own pooling as the oracle, and errors that name the argument."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as torch_F

import torchbp.nn
from torchbp.derivatives import Sample, pool
from torchbp.functional.pool import adaptive_avg_pool2d, avg_pool2d, max_pool2d

MAX_POOL_CASES = pool.MaxPool2d.samples(torch.float64, "cpu")
AVG_POOL_CASES = pool.AvgPool2d.samples(torch.float64, "cpu")
ADAPTIVE_CASES = pool.AdaptiveAvgPool2d.samples(torch.float64, "cpu")


def _on(sample: Sample, device: str, dtype: torch.dtype) -> torch.Tensor:
    return sample.x.to(device=device, dtype=dtype)


@pytest.mark.parametrize("index", range(len(MAX_POOL_CASES)), ids=[s.label for s in MAX_POOL_CASES])
def test_max_pool_kernel_equals_the_written_scatter(device: str, dtype: torch.dtype, index: int) -> None:
    sample = MAX_POOL_CASES[index]
    derivatives = sample.derivatives
    assert isinstance(derivatives, pool.MaxPool2d)
    x = _on(sample, device, dtype)
    z, (indices,) = derivatives.forward(x)
    delta = torch.randn_like(z)
    kernel = derivatives.input_vjp(delta, pool.PoolSaved(x, indices))
    reference = pool.max_pool2d_input_vjp(delta, x.shape, indices)
    torch.testing.assert_close(kernel, reference)
    # and the written-out version is torch's own gradient
    x_leaf = x.clone().requires_grad_()
    torch_F.max_pool2d(
        x_leaf,
        derivatives.kernel_size,
        derivatives.stride,
        derivatives.padding,
        derivatives.dilation,
        derivatives.ceil_mode,
    ).backward(delta)
    torch.testing.assert_close(reference, x_leaf.grad)


@pytest.mark.parametrize("index", range(len(AVG_POOL_CASES)), ids=[s.label for s in AVG_POOL_CASES])
def test_avg_pool_kernel_equals_the_written_window_matrices(device: str, dtype: torch.dtype, index: int) -> None:
    sample = AVG_POOL_CASES[index]
    derivatives = sample.derivatives
    assert isinstance(derivatives, pool.AvgPool2d)
    x = _on(sample, device, dtype)
    z, _ = derivatives.forward(x)
    a_h, a_w = derivatives.windows(x, z.shape)
    # the forward pass is z = A_h x A_wᵀ, so the matrices are the right ones
    torch.testing.assert_close(a_h @ x @ a_w.t(), z)
    delta = torch.randn_like(z)
    kernel = derivatives.input_vjp(delta, pool.PoolSaved(x, None))
    torch.testing.assert_close(kernel, pool.pool_input_vjp(delta, a_h, a_w))


@pytest.mark.parametrize("index", range(len(ADAPTIVE_CASES)), ids=[s.label for s in ADAPTIVE_CASES])
def test_adaptive_pool_kernel_equals_the_written_window_matrices(device: str, dtype: torch.dtype, index: int) -> None:
    sample = ADAPTIVE_CASES[index]
    derivatives = sample.derivatives
    assert isinstance(derivatives, pool.AdaptiveAvgPool2d)
    x = _on(sample, device, dtype)
    z, _ = derivatives.forward(x)
    a_h, a_w = derivatives.windows(x)
    torch.testing.assert_close(a_h @ x @ a_w.t(), z)
    delta = torch.randn_like(z)
    kernel = derivatives.input_vjp(delta, pool.PoolSaved(x, None))
    torch.testing.assert_close(kernel, pool.pool_input_vjp(delta, a_h, a_w))


def test_max_pool_routes_delta_to_the_winner_and_sums_shared_winners(device: str) -> None:
    x = torch.tensor([[[[0.0, 1.0, 0.0], [0.0, 9.0, 0.0], [0.0, 0.0, 0.0]]]], device=device, requires_grad=True)
    z = max_pool2d(x, 2, stride=1)  # all four windows are won by the 9
    assert torch.equal(z, torch.full((1, 1, 2, 2), 9.0, device=device))
    z.backward(torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]], device=device))
    expected = torch.zeros(1, 1, 3, 3, device=device)
    expected[0, 0, 1, 1] = 10.0
    assert torch.equal(x.grad, expected)


def test_max_pool_returns_torch_indices(device: str) -> None:
    x = torch.randn(2, 3, 6, 5, device=device)
    z, indices = max_pool2d(x, 3, stride=2, padding=1, return_indices=True)
    z_torch, indices_torch = torch_F.max_pool2d(x, 3, stride=2, padding=1, return_indices=True)
    assert torch.equal(z, z_torch) and torch.equal(indices, indices_torch)
    module = torchbp.nn.convert(torch.nn.MaxPool2d(2, return_indices=True))
    z, indices = module(x.requires_grad_())
    assert indices.dtype == torch.int64 and not indices.requires_grad
    z.sum().backward()
    assert x.grad is not None and x.grad.sum() == z.numel()


@pytest.mark.parametrize(
    ("function", "kwargs", "expected_shape"),
    [
        (max_pool2d, {"kernel_size": 4, "stride": 4, "ceil_mode": True}, (1, 2, 1, 1)),  # one partial window
        (avg_pool2d, {"kernel_size": 2, "stride": [], "padding": [1]}, (1, 2, 2, 2)),  # list settings, stride []
        (adaptive_avg_pool2d, {"output_size": (0, 2)}, (1, 2, 0, 2)),
    ],
)
def test_edge_settings_match_torch(device: str, function, kwargs: dict, expected_shape: tuple) -> None:
    x = torch.randn(1, 2, 3, 3, device=device, requires_grad=True)
    z = function(x, **kwargs)
    z_torch = getattr(torch_F, function.__name__)(x, **kwargs)
    assert z.shape == expected_shape
    torch.testing.assert_close(z, z_torch)
    z.sum().backward()  # an empty output depends on no input: a gradient of zeros, not ATen's refusal
    assert x.grad is not None and x.grad.shape == x.shape
    if z.numel() == 0:
        assert not x.grad.any()


def test_conversion_keeps_the_module_state(device: str) -> None:
    model = torch.nn.Sequential(torch.nn.MaxPool2d(2), torch.nn.AvgPool2d(2), torch.nn.AdaptiveAvgPool2d((None, 1)))
    converted = torchbp.nn.convert(model)
    assert [type(m) for m in converted] == [
        torchbp.nn.pool.MaxPool2d,
        torchbp.nn.pool.AvgPool2d,
        torchbp.nn.pool.AdaptiveAvgPool2d,
    ]
    assert repr(converted[2]) == "AdaptiveAvgPool2d(output_size=(None, 1))"


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda x: max_pool2d(x, 5), ValueError, r"input: height and width \(4, 4\) give no complete window"),
        (lambda x: max_pool2d(x, 3, padding=2), ValueError, r"padding: expected at most half the kernel size"),
        (lambda x: avg_pool2d(x, 2, padding=(0, 2)), ValueError, r"padding: expected at most half"),
        (lambda x: avg_pool2d(x, 3, padding=1, stride=0), ValueError, r"stride: expected positive integers"),
        (lambda x: max_pool2d(x, (2, 2, 2)), ValueError, r"kernel_size: expected positive integers"),
        (lambda x: max_pool2d(x, 2, dilation=0), ValueError, r"dilation: expected positive integers"),
        (lambda x: avg_pool2d(x, 2, divisor_override=0), ValueError, r"divisor_override: expected None or a non-zero"),
        (lambda x: max_pool2d(x[0, 0], 2), ValueError, r"input: expected a non-empty 3-D .* got shape \(4, 4\)"),
        (lambda x: avg_pool2d(x[None], 2), ValueError, r"got shape \(1, 2, 3, 4, 4\)"),
        (lambda x: adaptive_avg_pool2d(x[0, 0], 2), ValueError, r"input: expected a non-empty 3-D"),
        (lambda x: adaptive_avg_pool2d(x, (2, -1)), ValueError, r"output_size: expected a non-negative integer"),
        (lambda x: adaptive_avg_pool2d(x, (1, 2, 3)), ValueError, r"output_size: expected"),
        (
            lambda x: max_pool2d(x.long(), 2),
            TypeError,
            r"input: expected a floating-point tensor, got dtype torch.int64",
        ),
        (lambda x: avg_pool2d(x[:, :, :0], 2), ValueError, r"got shape \(2, 3, 0, 4\)"),
    ],
)
def test_bad_arguments_are_named(device: str, call, error: type[Exception], match: str) -> None:
    x = torch.randn(2, 3, 4, 4, device=device)
    with pytest.raises(error, match=match):
        call(x)


def test_a_twin_refuses_what_torch_refuses(device: str) -> None:
    model = torchbp.nn.convert(torch.nn.MaxPool2d(3, padding=2))
    with pytest.raises(ValueError, match=r"padding: expected at most half the kernel size \(1, 1 for kernel_size"):
        model(torch.randn(1, 1, 8, 8, device=device))
    with pytest.raises(RuntimeError, match="pad should"):
        torch.nn.MaxPool2d(3, padding=2)(torch.randn(1, 1, 8, 8, device=device))


@pytest.mark.parametrize("bad", [2.0, True, (2, 2.0)], ids=str)
def test_a_setting_of_the_wrong_type_is_refused_even_after_a_good_call(bad: object) -> None:
    x = torch.randn(1, 1, 4, 4)
    max_pool2d(x, 2)  # the good settings are cached now
    with pytest.raises(ValueError, match="kernel_size"):
        max_pool2d(x, bad)  # type: ignore[arg-type]


IN_TURN = [
    (max_pool2d, [{"kernel_size": 2, "ceil_mode": False}, {"kernel_size": 2, "ceil_mode": True}]),
    (max_pool2d, [{"kernel_size": 3, "stride": 1}, {"kernel_size": 3, "stride": 1, "dilation": 2}]),
    (max_pool2d, [{"kernel_size": 3, "stride": 2}, {"kernel_size": 3, "stride": 2, "padding": 1}]),
    (avg_pool2d, [{"kernel_size": 2, "ceil_mode": False}, {"kernel_size": 2, "ceil_mode": True}]),
    (avg_pool2d, [{"kernel_size": 3, "padding": 1}, {"kernel_size": 3, "padding": 1, "count_include_pad": False}]),
    (avg_pool2d, [{"kernel_size": 2}, {"kernel_size": 2, "divisor_override": 3}]),
    (adaptive_avg_pool2d, [{"output_size": (None, 2)}, {"output_size": (2, None)}, {"output_size": (3, 2)}]),
]


@pytest.mark.parametrize(
    ("function", "settings"), IN_TURN, ids=[f"{f.__name__}, {', '.join(s[-1])}" for f, s in IN_TURN]
)
def test_calls_in_turn_that_differ_in_one_setting_each_equal_torch(
    device: str, function, settings: list[dict[str, object]]
) -> None:
    x = torch.randn(2, 3, 7, 5, dtype=torch.float64, device=device, requires_grad=True)
    for kwargs in settings * 2:  # each settings object is remembered: the second round reads them back
        ours = function(x, **kwargs)
        theirs = getattr(torch_F, function.__name__)(x, **kwargs)
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12, msg=lambda m, k=kwargs: f"{k}: {m}")
        delta = torch.randn_like(theirs)
        torch.testing.assert_close(
            torch.autograd.grad(ours, x, delta)[0], torch.autograd.grad(theirs, x, delta)[0], rtol=1e-12, atol=1e-12
        )
