"""Dropout and the reshaping layers (``flatten``, ``unflatten``), with explicit backward passes."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..derivatives.dropout import Dropout, draw_mask
from ..derivatives.flatten import Flatten, Unflatten
from .checks import check_dim, check_tensor, shape_text
from .factory import apply_layer
from .settings_cache import SettingsCache, settings_key

__all__ = ["dropout", "flatten", "unflatten"]

_DROPOUT = Dropout()


def dropout(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:
    """z = x ⊙ m / (1 − p) with a fresh mask m ~ Bernoulli(1 − p); backward ∂C/∂x = δ ⊙ m / (1 − p).

    The mask is drawn as ``torch.nn.functional.dropout`` draws it, so for one RNG state the output
    is torch's. As torch's, it returns ``input`` itself when not ``training`` or when p = 0, and
    zeros when p = 1.

    Args:
        input: x, any shape.
        p: the probability of dropping each element, in ``[0, 1]``.
        training: drop (``True``) or pass x through (``False``).
        inplace: torch's signature; the mask is drawn as torch's in-place dropout draws it, and
            the result is computed out of place.

    Returns:
        z, the shape of x.

    Examples:
        >>> import torch
        >>> dropout(torch.ones(2, 3), p=0.5, training=False)
        tensor([[1., 1., 1.],
                [1., 1., 1.]])
    """
    if isinstance(p, bool) or not isinstance(p, int | float) or not 0 <= p <= 1:
        raise ValueError(f"p: dropout probability has to be a number between 0 and 1, but got {p!r}")
    if not training and isinstance(input, Tensor):
        return input  # as torch's: any tensor passes through unchanged
    input = check_tensor("input", input)
    if p == 0 or input.numel() == 0:
        return input
    return apply_layer(_DROPOUT, input, (draw_mask(input, p, inplace),))


_FLATTENS: SettingsCache[Flatten] = SettingsCache()


def flatten(input: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    """z = x with dimensions ``start_dim`` to ``end_dim`` merged into one, as ``torch.flatten``;
    backward ∂C/∂x = δ read in x's shape.

    Args:
        input: x, any shape (a tensor that is not floating-point is flattened by torch: it has no gradient).
        start_dim: the first dimension to merge.
        end_dim: the last dimension to merge.

    Returns:
        z, shape ``(*x.shape[:start_dim], prod(x.shape[start_dim:end_dim + 1]), *x.shape[end_dim + 1:])``.

    Examples:
        >>> import torch
        >>> flatten(torch.zeros(2, 3, 4), 1).shape
        torch.Size([2, 12])
    """
    if isinstance(input, Tensor) and not input.is_floating_point():
        return torch.flatten(input, start_dim, end_dim)
    return apply_layer(flatten_layer(input, start_dim, end_dim), input)


def flatten_layer(input: Tensor, start_dim: int, end_dim: int) -> Flatten:
    """The derivatives object of a ``flatten`` call, ``input`` (floating-point) checked against it."""
    input = check_tensor("input", input)
    n = max(input.dim(), 1)
    if not (-n <= start_dim < n and -n <= end_dim < n and start_dim % n <= end_dim % n):
        check_dim("start_dim", input, start_dim)
        check_dim("end_dim", input, end_dim)
        raise ValueError(
            f"start_dim: expected a dimension not after end_dim ({end_dim}) of a tensor of shape "
            f"{shape_text(input)}, got {start_dim}"
        )
    key = settings_key(start_dim, end_dim)
    derivatives = _FLATTENS.get(key)
    if derivatives is None:
        derivatives = _FLATTENS.remember(key, Flatten(start_dim, end_dim))
    return derivatives


_UNFLATTENS: SettingsCache[Unflatten] = SettingsCache()


def unflatten(input: Tensor, dim: int, sizes: Sequence[int]) -> Tensor:
    """z = x with dimension ``dim`` split into ``sizes`` (one entry may be −1), as ``torch.unflatten``;
    backward ∂C/∂x = δ read in x's shape.

    Args:
        input: x, any shape with at least one dimension.
        dim: the dimension to split.
        sizes: the sizes it is split into; their product is ``x.shape[dim]``.

    Returns:
        z, shape ``(*x.shape[:dim], *sizes, *x.shape[dim + 1:])``.

    Examples:
        >>> import torch
        >>> unflatten(torch.zeros(2, 12), 1, (3, -1)).shape
        torch.Size([2, 3, 4])
    """
    if isinstance(input, Tensor) and not input.is_floating_point():
        return torch.unflatten(input, dim, sizes)
    return apply_layer(unflatten_layer(input, dim, sizes), input)


def unflatten_layer(input: Tensor, dim: int, sizes: Sequence[int]) -> Unflatten:
    """The derivatives object of an ``unflatten`` call, ``input`` (floating-point) checked against it."""
    input = check_tensor("input", input)
    if not isinstance(dim, int) or isinstance(dim, bool):
        raise TypeError(f"dim: expected an int (named dimensions are not supported), got {dim!r}")
    if input.dim() == 0:
        raise ValueError("input: expected a tensor with at least one dimension to unflatten, got a 0-d tensor")
    check_dim("dim", input, dim)
    if not isinstance(sizes, Sequence) or isinstance(sizes, str):
        raise TypeError(f"sizes: expected a sequence of ints (e.g. (3, -1)), got {sizes!r}")
    sizes = tuple(sizes)
    size, known, free, valid = input.shape[dim], 1, 0, bool(sizes)
    for s in sizes:
        valid = valid and isinstance(s, int) and s >= -1
        free, known = (free + 1, known) if s == -1 else (free, known * s)
    valid = valid and free <= 1 and (free == 0 or known > 0)
    if not valid:
        raise ValueError(
            f"sizes: expected non-negative sizes with at most one -1 (the others then positive), got {sizes}"
        )
    if (known != size) if free == 0 else (size % known != 0):
        expected = f"of size {known}" if free == 0 else f"whose size is a multiple of {known}"
        raise ValueError(
            f"input: expected dim {dim} {expected}, to be unflattened into {sizes}, got shape {shape_text(input)}"
        )
    key = settings_key(dim, sizes)
    derivatives = _UNFLATTENS.get(key)
    if derivatives is None:
        derivatives = _UNFLATTENS.remember(key, Unflatten(dim, sizes))
    return derivatives
