"""torchbp.derivatives.dropout and .flatten: the mask torch draws, its statistics, δ ⊙ m / (1 − p)
exactly, the reshaping layers' backward, and errors that name the argument."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as torch_F

import torchbp.nn
from torchbp.derivatives.dropout import draw_mask
from torchbp.functional.dropout import dropout, flatten, unflatten


def _seeded(function, x: torch.Tensor, seed: int = 7) -> torch.Tensor:
    torch.manual_seed(seed)
    return function(x)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_output_is_torch_for_one_rng_state(device: str, dtype: torch.dtype, p: float) -> None:
    x = torch.randn(6, 7, 5, device=device, dtype=dtype).transpose(0, 2)
    ours = _seeded(lambda x: dropout(x, p), x)
    theirs = _seeded(lambda x: torch_F.dropout(x, p), x)
    assert torch.equal(ours, theirs)


def test_mask_mean_is_one_minus_p(device: str) -> None:
    x = torch.ones(400, 500, device=device)
    for p in (0.2, 0.5, 0.9):
        mask = draw_mask(x, p)
        kept = mask != 0
        assert abs(kept.float().mean().item() - (1 - p)) < 0.005  # 5σ for 200 000 draws is < 0.005
        assert torch.equal(mask[kept], torch.full_like(mask[kept], 1 / (1 - p)))


@pytest.mark.parametrize("p", [0.3, 0.5])
def test_gradient_is_the_scaled_mask_times_delta_exactly(device: str, dtype: torch.dtype, p: float) -> None:
    x = torch.randn(50, 40, device=device, dtype=dtype, requires_grad=True)
    torch.manual_seed(3)
    mask = draw_mask(x.detach(), p)
    torch.manual_seed(3)
    z = dropout(x, p)
    assert torch.equal(z, x.detach() * mask)
    delta = torch.randn_like(z)
    z.backward(delta)
    assert torch.equal(x.grad, delta * mask)
    assert z.grad_fn is not None and type(z.grad_fn).__name__ == "DropoutFunctionBackward"


def test_eval_mode_and_p_zero_pass_the_input_through(device: str) -> None:
    x = torch.randn(4, 5, device=device)
    assert dropout(x, 0.5, training=False) is x
    assert dropout(x, 0.0) is x
    assert dropout(torch.empty(0, 3, device=device), 0.5).numel() == 0
    layer = torchbp.nn.convert(torch.nn.Dropout(0.5)).eval()
    assert layer(x) is x


def test_p_one_gives_zeros_and_no_gradient(device: str) -> None:
    x = torch.randn(4, 5, device=device, requires_grad=True)
    z = dropout(x, 1.0)
    assert torch.equal(z, torch.zeros_like(z))
    z.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_inplace_is_accepted_and_computed_out_of_place(device: str) -> None:
    layer = torchbp.nn.convert(torch.nn.Dropout(0.5, inplace=True))
    x = torch.randn(8, 9, device=device)
    before = x.clone()
    torch.manual_seed(1)
    z = layer(x)
    torch.manual_seed(1)
    expected = torch.nn.Dropout(0.5, inplace=True)(before.clone())
    assert torch.equal(z, expected) and torch.equal(x, before)
    assert repr(layer) == "Dropout(p=0.5, inplace=True)"


@pytest.mark.parametrize("p", [-0.1, 1.5, "0.5", True])
def test_bad_p_is_named(device: str, p: object) -> None:
    with pytest.raises(ValueError, match=rf"p: dropout probability has to be a number between 0 and 1, but got {p!r}"):
        dropout(torch.randn(3, device=device), p)  # type: ignore[arg-type]


def test_eval_mode_passes_any_tensor_through_as_torch_does() -> None:
    x = torch.arange(3)
    assert dropout(x, 0.5, training=False) is x


def test_bad_input_is_named() -> None:
    with pytest.raises(TypeError, match=r"input: expected a floating-point tensor, got dtype torch.int64"):
        dropout(torch.ones(3, dtype=torch.long), 0.5)
    with pytest.raises(TypeError, match=r"input: expected a torch.Tensor, got list"):
        dropout([1.0, 2.0], 0.5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("start_dim", "end_dim", "shape"),
    [(1, -1, (2, 3, 4, 5)), (0, 1, (2, 3, 4)), (-2, -1, (3, 4)), (1, 1, (2, 3)), (0, -1, ())],
)
def test_flatten_is_torch_flatten_and_its_backward_a_reshape(
    device: str, dtype: torch.dtype, start_dim: int, end_dim: int, shape: tuple
) -> None:
    x = torch.randn(shape, device=device, dtype=dtype, requires_grad=True)
    z = flatten(x, start_dim, end_dim)
    expected = torch.flatten(x.detach(), start_dim, end_dim)
    assert z.shape == expected.shape and torch.equal(z, expected)
    delta = torch.randn_like(z)
    z.backward(delta)
    assert torch.equal(x.grad, delta.reshape(shape))


def test_flatten_shares_memory_and_saves_no_copy(device: str) -> None:
    x = torch.randn(4, 3, 8, 8, device=device, requires_grad=True)
    a = x * 2
    z = flatten(a, 1)
    assert z.data_ptr() == a.data_ptr()  # a view's memory, as torch.flatten's
    saved = z.grad_fn.saved_tensors[0]
    assert saved.data_ptr() == a.data_ptr() and saved.shape == a.shape  # x itself, for its shape: no copy


def test_flatten_leaves_integer_tensors_to_torch() -> None:
    x = torch.arange(12).reshape(3, 4)
    assert torch.equal(flatten(x), x.flatten())
    assert torch.equal(unflatten(x, 1, (2, 2)), x.reshape(3, 2, 2))


def test_unflatten_is_torch_unflatten(device: str) -> None:
    x = torch.randn(3, 12, 2, device=device, requires_grad=True)
    z = unflatten(x, -2, (2, -1, 3))
    assert torch.equal(z, x.detach().unflatten(-2, (2, -1, 3)))
    z.backward(torch.ones_like(z))
    assert torch.equal(x.grad, torch.ones_like(x))


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda x: flatten(x, 3), IndexError, r"start_dim: dim 3 is out of range for a tensor of shape \(2, 3, 4\)"),
        (lambda x: flatten(x, 0, -4), IndexError, r"end_dim: dim -4 is out of range"),
        (lambda x: flatten(x, 2, 1), ValueError, r"start_dim: expected a dimension not after end_dim \(1\)"),
        (
            lambda x: unflatten(x, 1, (2, 2)),
            ValueError,
            r"input: expected dim 1 of size 4, to be unflattened into \(2, 2\), got shape \(2, 3, 4\)",
        ),
        (lambda x: unflatten(x, 1, (2, -1)), ValueError, r"input: expected dim 1 whose size is a multiple of 2"),
        (lambda x: unflatten(x, 2, (-1, -1)), ValueError, r"sizes: .*at most one -1"),
        (lambda x: unflatten(x, 2, (0, -1)), ValueError, r"sizes: .*the others then positive"),
        (lambda x: unflatten(x, 2, ()), ValueError, r"sizes: "),
        (lambda x: unflatten(x, 5, (2, 2)), IndexError, r"dim: dim 5 is out of range"),
        (lambda x: unflatten(x, "c", (2, 2)), TypeError, r"dim: expected an int"),
    ],
)
def test_bad_reshape_arguments_are_named(device: str, call, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        call(torch.randn(2, 3, 4, device=device))
