"""Layer normalisation and RMS normalisation as functional ops, like ``torch.nn.functional.layer_norm``
and ``rms_norm``, with the explicit backward of ``torchbp.derivatives.norm``."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ..derivatives.norm import LayerNorm, RMSNorm, opmath_dtype
from .checks import LOW_PRECISION, autocast_dtype, cast_floating, check_tensor, dtype_goes_with, shape_text
from .factory import apply_layer, function_for

__all__ = ["layer_norm", "rms_norm"]

function_for(LayerNorm)  # made here, in eager code: torch.compile breaks its graph where a class is made
function_for(RMSNorm)


def check_norm(input: object, normalized_shape: Sequence[int], any_dtype: bool = False, **vectors: object) -> Tensor:
    """Check ``input (*, *normalized_shape)`` and each of ``vectors`` (γ, β) of shape ``normalized_shape``,
    of input's dtype (or both float32, with γ, for a float16/bfloat16 input: torch's mixed path), or
    any floating dtype where ``any_dtype`` (RMS norm, which rounds z to the input's dtype whatever γ's)."""
    x = check_tensor("input", input)
    shape = tuple(normalized_shape)
    if not shape or tuple(x.shape[x.dim() - len(shape) :]) != shape or x.dim() < len(shape):
        raise ValueError(
            f"input: expected shape (*, {', '.join(str(s) for s in shape)}) to end in normalized_shape "
            f"{list(shape)}, got shape {shape_text(x)}"
        )
    for name, value in vectors.items():
        if value is None:
            continue
        v = check_tensor(name, value)
        if tuple(v.shape) != shape:
            raise ValueError(f"{name}: expected shape normalized_shape {list(shape)}, got shape {shape_text(v)}")
        if not any_dtype and not dtype_goes_with(x.dtype, v.dtype):
            also = " or torch.float32" if x.dtype in LOW_PRECISION else ""
            raise TypeError(f"{name}: expected dtype {x.dtype} (the dtype of input){also}, got {v.dtype}")
        if v.device != x.device:
            raise ValueError(f"{name}: expected device {x.device} (the device of input), got {v.device}")
    weight, bias = vectors.get("weight"), vectors.get("bias")
    if isinstance(bias, Tensor) and bias.dtype != x.dtype:
        if not isinstance(weight, Tensor):
            raise TypeError(f"bias: expected dtype {x.dtype} (the dtype of input) without a weight, got {bias.dtype}")
        if weight.dtype != bias.dtype:
            raise TypeError(f"bias: expected dtype {weight.dtype} (the dtype of weight), got {bias.dtype}")
    return x


def _autocast(x: Tensor, params: tuple[Tensor | None, ...]) -> tuple[Tensor, tuple[Tensor | None, ...]]:
    """x and γ, β as torch's autocast hands them to a normalisation: float32 outside the CPU (its
    policy for the norms there), as they are on the CPU or without autocast."""
    if x.device.type == "cpu" or autocast_dtype(x) is None:
        return x, params
    return cast_floating(x, torch.float32), tuple(cast_floating(p, torch.float32) for p in params)


def _shape(normalized_shape: int | Sequence[int]) -> tuple[int, ...]:
    return (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)


def layer_norm(
    input: Tensor,
    normalized_shape: int | Sequence[int],
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
    on_delta: Callable[[Tensor], None] | None = None,
) -> Tensor:
    """z = γ ⊙ (x − μ)·r + β per example, r = 1/√(σ² + ε), over the trailing ``normalized_shape``.

    The backward is ∂C/∂β = Σ δ, ∂C/∂γ = Σ δ ⊙ x̂ and ∂C/∂x = r·(g − ⟨g⟩ − x̂ ⊙ ⟨g ⊙ x̂⟩) with
    g = δ ⊙ γ, ⟨·⟩ the mean over an example's normalised values.

    Args:
        input: x, shape ``(*, *normalized_shape)``.
        normalized_shape: the trailing dimensions one example spans.
        weight: γ, shape ``normalized_shape``, or ``None``.
        bias: β, shape ``normalized_shape``, or ``None``.
        eps: ε.
        on_delta: called with δ = ∂C/∂z, shape of ``input``, during the backward pass.

    Returns:
        z, shape of ``input``.

    Examples:
        >>> import torch
        >>> layer_norm(torch.tensor([[1.0, 3.0]]), 2)
        tensor([[-1.0000,  1.0000]])
    """
    shape = _shape(normalized_shape)
    x, params = _autocast(check_norm(input, shape, weight=weight, bias=bias), (weight, bias))
    return apply_layer(LayerNorm(len(shape), eps), x, params, on_delta)


def rms_norm(
    input: Tensor,
    normalized_shape: int | Sequence[int],
    weight: Tensor | None = None,
    eps: float | None = None,
    on_delta: Callable[[Tensor], None] | None = None,
) -> Tensor:
    """z = γ ⊙ x·r per example, r = 1/√(⟨x²⟩ + ε), over the trailing ``normalized_shape``.

    The backward is ∂C/∂γ = Σ δ ⊙ x̂ and ∂C/∂x = r·(g − x̂ ⊙ ⟨g ⊙ x̂⟩) with g = δ ⊙ γ.

    Args:
        input: x, shape ``(*, *normalized_shape)``.
        normalized_shape: the trailing dimensions one example spans.
        weight: γ, shape ``normalized_shape``, or ``None``.
        eps: ε; ``None`` is ``torch.finfo(input.dtype).eps`` (float32's for a float16 or bfloat16
            input, whose arithmetic runs in float32), as torch's.
        on_delta: called with δ = ∂C/∂z, shape of ``input``, during the backward pass.

    Returns:
        z, shape of ``input``.

    Examples:
        >>> import torch
        >>> rms_norm(torch.tensor([[3.0, 4.0]]), 2, eps=0.0) * (12.5**0.5)
        tensor([[3., 4.]])
    """
    shape = _shape(normalized_shape)
    x, params = _autocast(check_norm(input, shape, any_dtype=True, weight=weight), (weight,))
    return apply_layer(RMSNorm(len(shape), default_rms_eps(x) if eps is None else eps), x, params, on_delta)


def default_rms_eps(x: Tensor) -> float:
    """torch's ε for an RMS norm given none: that of the dtype its arithmetic runs in, float32's for
    a float16 or bfloat16 x (``torch.finfo(x.dtype).eps`` otherwise)."""
    return torch.finfo(opmath_dtype(x.dtype)).eps
