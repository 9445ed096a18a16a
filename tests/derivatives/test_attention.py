"""Scaled dot-product attention: torchbp's against torch's (every mask kind, causal, grouped
shapes, GQA), dropout against its own mask, saved memory against torch's math path, bad input."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as TF
from torch.nn.attention import SDPBackend, sdpa_kernel

import torchbp.functional as F
from torchbp.derivatives.attention import Attention
from torchbp.functional.factory import apply_layer_with_buffers

F64 = {"rtol": 1e-10, "atol": 1e-10}


def _qkv(*batch: int, length: int = 5, source: int = 6, dtype: torch.dtype = torch.float64) -> list[torch.Tensor]:
    shapes = [(*batch, length, 4), (*batch, source, 4), (*batch, source, 3)]
    return [torch.randn(shape, dtype=dtype, requires_grad=True) for shape in shapes]


CASES: list[tuple[str, Callable[[], dict[str, Any]]]] = [
    ("plain", dict),
    ("causal", lambda: {"is_causal": True}),
    ("boolean mask (L, S)", lambda: {"attn_mask": torch.rand(5, 6) > 0.3}),
    ("additive mask per head", lambda: {"attn_mask": torch.randn(2, 3, 5, 6, dtype=torch.float64)}),
    (
        "a row masked everywhere",
        lambda: {"attn_mask": torch.ones(5, 6, dtype=torch.bool).index_fill(0, torch.tensor([1]), False)},
    ),
    ("scale", lambda: {"scale": 0.3}),
]


@pytest.mark.parametrize(("label", "options"), CASES, ids=[c[0] for c in CASES])
def test_attention_equals_torch(label: str, options: Callable[[], dict[str, Any]]) -> None:
    q, k, v = _qkv(2, 3)
    kwargs = options()
    ours, theirs = F.scaled_dot_product_attention(q, k, v, **kwargs), TF.scaled_dot_product_attention(q, k, v, **kwargs)
    torch.testing.assert_close(ours, theirs, **F64)
    delta = torch.randn_like(theirs)
    for a, b in zip(torch.autograd.grad(ours, (q, k, v), delta), torch.autograd.grad(theirs, (q, k, v), delta)):
        torch.testing.assert_close(a, b, **F64)
    assert ours.grad_fn is not None and type(ours.grad_fn).__name__ == "AttentionFunctionBackward"


def test_grouped_query_attention_equals_torch() -> None:
    q = torch.randn(2, 4, 5, 4, dtype=torch.float64, requires_grad=True)
    k, v = (torch.randn(2, 2, 6, 4, dtype=torch.float64, requires_grad=True) for _ in range(2))
    ours = F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    theirs = TF.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    torch.testing.assert_close(ours, theirs, **F64)
    grads = torch.autograd.grad(ours.sum(), (q, k, v)), torch.autograd.grad(theirs.sum(), (q, k, v))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, **F64)


def test_dropout_output_and_gradients_follow_the_mask_it_drew() -> None:
    q, k, v = _qkv(2)
    torch.manual_seed(3)
    ours = F.scaled_dot_product_attention(q, k, v, dropout_p=0.4)
    torch.manual_seed(3)
    mask = torch.empty(2, 5, 6, dtype=torch.float64).bernoulli_(0.6).div_(0.6)
    assert 0 < int((mask == 0).sum()) < mask.numel()
    p = torch.softmax(q @ k.transpose(-2, -1) / 2.0, -1)
    expected = (p * mask) @ v
    torch.testing.assert_close(ours, expected, **F64)
    for a, b in zip(torch.autograd.grad(ours.sum(), (q, k, v)), torch.autograd.grad(expected.sum(), (q, k, v))):
        torch.testing.assert_close(a, b, **F64)


def test_the_buffer_is_the_attention_weights() -> None:
    q, k, v = _qkv(3)
    _, p = apply_layer_with_buffers(Attention(0.5), q, (k, v, None, None))
    torch.testing.assert_close(p, torch.softmax(q @ k.transpose(-2, -1) * 0.5, -1), **F64)


def _saved_bytes(function: Callable[..., torch.Tensor], *args: Any, **options: Any) -> int:
    sizes: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        sizes.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        function(*args, **options)
    return sum(sizes)


@pytest.mark.parametrize("options", [{}, {"is_causal": True}, {"dropout_p": 0.1}], ids=["plain", "causal", "dropout"])
def test_attention_saves_no_more_than_torchs_math_path(options: dict[str, Any]) -> None:
    q, k, v = _qkv(4, 2, length=16, source=16, dtype=torch.float32)
    ours = _saved_bytes(F.scaled_dot_product_attention, q, k, v, **options)
    with sdpa_kernel(SDPBackend.MATH):
        theirs = _saved_bytes(TF.scaled_dot_product_attention, q, k, v, **options)
    # Q, K, V and P (and the dropout mask): torch's math path keeps scaled copies of Q and K besides
    p_bytes = 4 * 2 * 16 * 16 * 4
    assert ours <= theirs
    assert ours == sum(t.numel() * 4 for t in (q, k, v)) + p_bytes * (2 if "dropout_p" in options else 1)


def test_bad_input_is_named() -> None:
    q, k, v = _qkv(2)
    with pytest.raises(ValueError, match=r"key: expected shape \(\*, S, 4\).*got shape \(2, 6, 3\)"):
        F.scaled_dot_product_attention(q, v, v)
    with pytest.raises(ValueError, match=r"value: expected shape \(\*, 6, Ev\).*got shape \(2, 5, 4\)"):
        F.scaled_dot_product_attention(q, k, q)
    with pytest.raises(
        ValueError, match=r"attn_mask: expected a shape that broadcasts to .*\(2, 5, 6\).*got shape \(5, 5\)"
    ):
        F.scaled_dot_product_attention(q, k, v, attn_mask=torch.ones(5, 5, dtype=torch.bool))
    with pytest.raises(
        TypeError,
        match=r"attn_mask: expected a boolean or a floating-point mask, got dtype torch.int64",
    ):
        F.scaled_dot_product_attention(q, k, v, attn_mask=torch.ones(5, 6, dtype=torch.int64))
    with pytest.raises(ValueError, match="attn_mask, is_causal: give one or the other"):
        F.scaled_dot_product_attention(q, k, v, attn_mask=torch.ones(5, 6, dtype=torch.bool), is_causal=True)
    with pytest.raises(ValueError, match=r"dropout_p: expected a probability in \[0, 1\], got 1.5"):
        F.scaled_dot_product_attention(q, k, v, dropout_p=1.5)
    with pytest.raises(TypeError, match="query: expected a floating-point tensor"):
        F.scaled_dot_product_attention(torch.ones(2, 5, 4, dtype=torch.long), k, v)


@pytest.mark.parametrize("wanted", [("attn_mask",), ("value", "attn_mask"), ("key",)], ids=" and ".join)
def test_any_subset_of_gradients_equals_torch(wanted: tuple[str, ...]) -> None:
    q, k, v = (t.detach() for t in _qkv(2))
    tensors = {"query": q, "key": k, "value": v, "attn_mask": torch.randn(5, 6, dtype=torch.float64)}
    moving = [t.requires_grad_() for name, t in tensors.items() if name in wanted]
    ours = F.scaled_dot_product_attention(*tensors.values())
    theirs = TF.scaled_dot_product_attention(*tensors.values())
    delta = torch.randn_like(theirs)
    for a, b in zip(torch.autograd.grad(ours, moving, delta), torch.autograd.grad(theirs, moving, delta)):
        torch.testing.assert_close(a, b, **F64)
