"""Flatten and Unflatten: z is x with some dimensions merged or split; ∂C/∂x is δ in x's shape.

Neither layer moves a number, so the backward pass is a reshape: ∂C/∂x_k = δ_k for every element
k in row-major order. What the backward reads is x's shape only; it keeps x itself for it, which
costs no memory, since z shares x's memory wherever x's strides allow (as ``torch.flatten``'s
does) and whatever reads z keeps that memory anyway.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch
from torch import Tensor

from .base import Derivatives, Sample


class ReshapeSaved(NamedTuple):
    """x, for its shape."""

    x: Tensor | None


@dataclass(frozen=True)
class Reshape(Derivatives):
    """A layer that only reshapes, z = x read in ``z_shape``; ∂C/∂x = δ read in x's shape."""

    Saved: ClassVar[type[ReshapeSaved]] = ReshapeSaved
    saves_own: ClassVar[bool] = True

    def z_shape(self, x_shape: torch.Size) -> tuple[int, ...]:
        """The output's shape for an input of shape ``x_shape``."""
        raise NotImplementedError

    def forward(self, x: Tensor, *params: Tensor | None) -> tuple[Tensor, tuple[Tensor, ...]]:
        # z shares x's memory where it can, as torch.flatten's does, but as a view of an alias of
        # x (one version counter) rather than of x itself: autograd then takes z for a new tensor,
        # whose tangent need not be a view of x's (the batched jvp of gradcheck makes copies)
        return x.detach().reshape(self.z_shape(x.shape)), ()

    def save(
        self,
        x: Tensor,
        params: tuple[Tensor | None, ...],
        z: Tensor,
        buffers: tuple[Tensor, ...],
        needs: tuple[bool, ...],
    ) -> ReshapeSaved:
        return ReshapeSaved(x if needs[0] else None)

    def input_vjp(self, delta: Tensor, saved: ReshapeSaved) -> Tensor:
        assert saved.x is not None
        # ∂C/∂x = δ in x's shape: each element keeps its place in row-major order
        return delta.reshape(saved.x.shape)

    def jvp(self, saved: ReshapeSaved, x_t: Tensor | None, *params_t: Tensor | None) -> Tensor:
        assert x_t is not None  # x is the only input, so its tangent came
        return x_t.reshape(self.z_shape(x_t.shape))  # ż = ẋ read in z's shape, as x is


@dataclass(frozen=True)
class Flatten(Reshape):
    """z = x with dimensions ``start_dim`` to ``end_dim`` merged into one; ∂C/∂x = δ in x's shape."""

    kind: ClassVar[str] = "flatten"

    start_dim: int = 1
    end_dim: int = -1

    def z_shape(self, x_shape: torch.Size) -> tuple[int, ...]:
        n = max(len(x_shape), 1)
        start, end = self.start_dim % n, self.end_dim % n
        return (*x_shape[:start], math.prod(x_shape[start : end + 1]), *x_shape[end + 1 :])

    @classmethod
    def samples(cls, dtype: torch.dtype, device: torch.device | str) -> list[Sample]:
        def make(*shape: int) -> Tensor:
            return torch.randn(shape, dtype=dtype, device=device)

        return [
            Sample("(2, 3, 2, 2) from dim 1", cls(), make(2, 3, 2, 2)),
            Sample("dims 0 to 1 of 3", cls(0, 1), make(2, 3, 2)),
            Sample("transposed input: a copy", cls(0, -1), make(3, 4).t()),
            Sample("one dim: nothing merged", cls(1, 1), make(2, 3)),
            Sample("a single number", cls(0, -1), make()),
        ]


@dataclass(frozen=True)
class Unflatten(Reshape):
    """z = x with dimension ``dim`` split into ``sizes``; ∂C/∂x = δ in x's shape."""

    kind: ClassVar[str] = "unflatten"

    dim: int = 1
    sizes: tuple[int, ...] = ()

    def z_shape(self, x_shape: torch.Size) -> tuple[int, ...]:
        dim = self.dim % len(x_shape)
        return (*x_shape[:dim], *self.sizes, *x_shape[dim + 1 :])

    @classmethod
    def samples(cls, dtype: torch.dtype, device: torch.device | str) -> list[Sample]:
        def make(*shape: int) -> Tensor:
            return torch.randn(shape, dtype=dtype, device=device)

        return [
            Sample("dim 1 of 12 into (3, 4)", cls(1, (3, 4)), make(2, 12)),
            Sample("last dim into (-1, 2)", cls(-1, (-1, 2)), make(3, 4)),
            Sample("transposed input", cls(0, (2, 3)), make(4, 6).t()),
        ]
