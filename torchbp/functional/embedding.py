"""The embedding lookup as a functional op, like ``torch.nn.functional.embedding``, with the
explicit backward of ``torchbp.derivatives.embedding.Embedding`` (δ scattered into the rows used)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..derivatives.embedding import Embedding
from .checks import check_tensor, shape_text
from .factory import apply_layer, function_for

__all__ = ["embedding"]

function_for(Embedding)  # made here, in eager code: torch.compile breaks its graph where a class is made


def check_embedding(input: object, weight: object, padding_idx: int | None) -> tuple[Tensor, Tensor]:
    """Check integer ``input`` indices against ``weight (num_embeddings, embedding_dim)``."""
    if not isinstance(input, Tensor) or input.is_floating_point() or input.is_complex() or input.dtype == torch.bool:
        got = f"dtype {input.dtype}" if isinstance(input, Tensor) else type(input).__name__
        raise TypeError(f"input: expected a tensor of integer indices (torch.long or torch.int), got {got}")
    table = check_tensor("weight", weight)
    if table.dim() != 2:
        raise ValueError(
            f"weight: expected a 2-D tensor of shape (num_embeddings, embedding_dim), got shape {shape_text(table)}"
        )
    rows = table.shape[0]
    if padding_idx is not None and not -rows <= padding_idx < rows:
        raise ValueError(f"padding_idx: expected an index in [{-rows}, {rows - 1}] of weight's rows, got {padding_idx}")
    if input.numel() and not torch.compiler.is_compiling():
        low, high = int(input.min()), int(input.max())
        if low < 0 or high >= rows:
            raise IndexError(
                f"input: indices must lie in [0, {rows - 1}] for weight of shape {shape_text(table)}, "
                f"got indices from {low} to {high}"
            )
    return input, table


def embedding(
    input: Tensor,
    weight: Tensor,
    padding_idx: int | None = None,
    max_norm: float | None = None,
    norm_type: float = 2.0,
    scale_grad_by_freq: bool = False,
    sparse: bool = False,
    on_delta: Callable[[Tensor], None] | None = None,
) -> Tensor:
    """z = W[i]: one row of the table per index, like ``torch.nn.functional.embedding``.

    The backward scatters δ into the rows used, ∂C/∂W[r] = Σ of δ over the positions holding r
    (0 for ``padding_idx``; each δ divided by its index's count with ``scale_grad_by_freq``).
    With ``max_norm``, the rows looked up are first renormalised in place to norm ``max_norm``
    at most, as torch does (outside the graph).

    Args:
        input: indices, integer tensor of any shape ``(*)``.
        weight: W, shape ``(num_embeddings, embedding_dim)``.
        padding_idx: a row that gets no gradient, or ``None``.
        max_norm, norm_type: renormalise looked-up rows whose ``norm_type``-norm exceeds ``max_norm``.
        scale_grad_by_freq: divide each δ by the count of its index in the batch.
        sparse: must be ``False``: ∂C/∂W is a dense tensor.
        on_delta: called with δ = ∂C/∂z, shape ``(*, embedding_dim)``, during the backward pass.

    Returns:
        z, shape ``(*, embedding_dim)``.

    Examples:
        >>> import torch
        >>> embedding(torch.tensor([2, 0]), torch.arange(6.0).reshape(3, 2))
        tensor([[4., 5.],
                [0., 1.]])
    """
    if sparse:
        raise ValueError("sparse: torchbp's embedding gives a dense ∂C/∂W; expected sparse=False, got True")
    indices, table = check_embedding(input, weight, padding_idx)
    rows = table.shape[0]
    if padding_idx is not None and padding_idx < 0:
        padding_idx += rows
    if max_norm is not None:
        with torch.no_grad():
            torch.embedding_renorm_(table, indices.contiguous(), max_norm, norm_type)
    return apply_layer(Embedding(rows, padding_idx, scale_grad_by_freq), indices, (table,), on_delta)
