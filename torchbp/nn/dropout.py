"""Twins of torch.nn's Dropout, Flatten and Unflatten: layers without parameters whose backward
multiplies δ by the drawn mask, or reads it back in the input's shape."""

from __future__ import annotations

import torch
from torch import Tensor

from ..derivatives import dropout as dropout_derivatives
from ..derivatives import flatten as flatten_derivatives
from ..functional.dropout import dropout, flatten, flatten_layer, unflatten, unflatten_layer
from ..hookspecs import hookimpl
from ..specs import LayerSpec
from .link import Linked


class Dropout(torch.nn.Dropout):
    """Like ``torch.nn.Dropout(p, inplace)``: the same mask for the same RNG state (with ``inplace``,
    the mask torch's in-place dropout draws), the result computed out of place. Any shape."""

    def forward(self, input: Tensor) -> Tensor:
        return dropout(input, self.p, self.training, self.inplace)


class Flatten(Linked, torch.nn.Flatten):
    """Like ``torch.nn.Flatten(start_dim, end_dim)``: merges those dimensions into one."""

    def forward(self, input: Tensor) -> Tensor:
        return flatten(input, self.start_dim, self.end_dim)

    def link_is_pure(self) -> bool:
        return True

    def link(self, x: Tensor) -> flatten_derivatives.Flatten:
        return flatten_layer(x, self.start_dim, self.end_dim)


class Unflatten(Linked, torch.nn.Unflatten):
    """Like ``torch.nn.Unflatten(dim, unflattened_size)``, for integer dims (not named ones)."""

    def forward(self, input: Tensor) -> Tensor:
        return unflatten(input, self.dim, self.unflattened_size)  # type: ignore[arg-type]

    def link_is_pure(self) -> bool:
        return True

    def link(self, x: Tensor) -> flatten_derivatives.Unflatten:
        return unflatten_layer(x, self.dim, self.unflattened_size)  # type: ignore[arg-type]


def _dropout_examples(dtype: torch.dtype) -> list[tuple[torch.nn.Module, Tensor]]:
    return [
        (torch.nn.Dropout(0.5), torch.randn(8, 10, dtype=dtype)),
        (torch.nn.Dropout(0.2), torch.randn(2, 3, 4, 5, dtype=dtype).transpose(1, 3)),
        (torch.nn.Dropout(0.0), torch.randn(4, 5, dtype=dtype)),
        (torch.nn.Dropout(1.0), torch.randn(3, 4, dtype=dtype)),
    ]


def _flatten_examples(dtype: torch.dtype) -> list[tuple[torch.nn.Module, Tensor]]:
    return [
        (torch.nn.Flatten(), torch.randn(2, 3, 4, 5, dtype=dtype)),
        (torch.nn.Flatten(0, 2), torch.randn(2, 3, 4, 5, dtype=dtype)),
        (torch.nn.Flatten(-3, -2), torch.randn(2, 3, 4, dtype=dtype).transpose(0, 2)),
    ]


def _unflatten_examples(dtype: torch.dtype) -> list[tuple[torch.nn.Module, Tensor]]:
    return [
        (torch.nn.Unflatten(1, (3, 4)), torch.randn(2, 12, dtype=dtype)),
        (torch.nn.Unflatten(-1, (2, -1)), torch.randn(3, 2, 6, dtype=dtype)),
    ]


@hookimpl
def torchbp_layers() -> list[LayerSpec]:
    return [
        LayerSpec(
            "Dropout",
            "z = x ⊙ m / (1 − p), m ~ Bernoulli(1 − p) drawn as torch draws it; ∂C/∂x = δ ⊙ m / (1 − p)",
            torch.nn.Dropout,
            Dropout,
            dropout_derivatives.Dropout,
            _dropout_examples,
        ),
        LayerSpec(
            "Flatten",
            "z = x with dims start_dim to end_dim merged; ∂C/∂x = δ read in x's shape",
            torch.nn.Flatten,
            Flatten,
            flatten_derivatives.Flatten,
            _flatten_examples,
        ),
        LayerSpec(
            "Unflatten",
            "z = x with dim split into unflattened_size; ∂C/∂x = δ read in x's shape",
            torch.nn.Unflatten,
            Unflatten,
            flatten_derivatives.Unflatten,
            _unflatten_examples,
        ),
    ]
