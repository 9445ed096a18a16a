"""Pooling: max pooling routes δ to each window's maximum, average pooling spreads it evenly.

Conventions (PyTorch's): ``x`` is ``(N, C, H, W)`` or, unbatched, ``(C, H, W)``; ``z`` is
``(N, C, H_out, W_out)`` (or ``(C, H_out, W_out)``). Pairs of settings are ``(height, width)``.
Pooling has no parameters: its backward is BP2's analogue only, ∂C/∂x from δ = ∂C/∂z.

The backward passes call ATen's own kernels (``max_pool2d_with_indices_backward``,
``avg_pool2d_backward``, ``_adaptive_avg_pool2d_backward``), one pass over memory each; the
equations they compute are written out below as the reference (``max_pool2d_input_vjp``,
``window_matrix``, ``pool_input_vjp``), and the tests check that both agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch
from torch import Tensor

from .base import Derivatives, Sample

Pair = tuple[int, int]


def max_pool2d_input_vjp(delta: Tensor, x_shape: torch.Size, indices: Tensor) -> Tensor:
    """∂C/∂x of max pooling, written out: each δ added onto the input position that won its window.

    Args:
        delta: δ, shape ``(*, H_out, W_out)``.
        x_shape: the input's shape ``(*, H, W)``.
        indices: the winner of each window as a flat index ``h·W + w`` into its ``H × W`` plane,
            shape ``(*, H_out, W_out)``.

    Returns:
        ∂C/∂x, shape ``x_shape``.
    """
    planes = delta.new_zeros(x_shape).flatten(-2)
    # ∂C/∂x_{h,w} = Σ δ_{i,j} over the windows (i, j) whose maximum sits at (h, w)
    return planes.scatter_add(-1, indices.flatten(-2), delta.flatten(-2)).reshape(x_shape)


def window_matrix(starts: Tensor, ends: Tensor, size: int, divisors: Tensor, dtype: torch.dtype) -> Tensor:
    """A ``(n_out, size)`` matrix whose row i is ``1 / divisors[i]`` on ``[starts[i], ends[i])``, else 0.

    Average pooling along one axis is this matrix applied to that axis; in 2-D, with a divisor
    that is a product of a height and a width factor (every case of ``avg_pool2d`` and
    ``adaptive_avg_pool2d``), it is ``z = A_h x A_wᵀ``.
    """
    positions = torch.arange(size, device=starts.device)
    inside = (positions >= starts[:, None]) & (positions < ends[:, None])
    return inside.to(dtype) / divisors[:, None]


def avg_pool_windows(
    size: int,
    n_out: int,
    kernel: int,
    stride: int,
    padding: int,
    count_include_pad: bool,
    divide: bool,
    like: Tensor,
) -> Tensor:
    """The window matrix of ``avg_pool2d`` along one axis of ``size`` input positions.

    Window i covers ``[i·stride − padding, i·stride − padding + kernel)``, cut at ``size + padding``;
    its divisor is that length (``count_include_pad``) or the length of its part inside the input.
    ``divide=False`` gives divisors of 1 (the whole divisor then comes from the other axis).
    The matrix has the dtype and device of ``like``.
    """
    starts = torch.arange(n_out, device=like.device) * stride - padding
    ends = torch.clamp(starts + kernel, max=size + padding)
    inside_starts, inside_ends = starts.clamp(min=0), ends.clamp(max=size)
    lengths = ends - starts if count_include_pad else inside_ends - inside_starts
    divisors = lengths if divide else torch.ones_like(lengths)
    return window_matrix(inside_starts, inside_ends, size, divisors, like.dtype)


def adaptive_windows(size: int, n_out: int, like: Tensor) -> Tensor:
    """The window matrix of ``adaptive_avg_pool2d`` along one axis (in the dtype and on the device
    of ``like``): window i is ``[⌊i·size/n_out⌋, ⌈(i+1)·size/n_out⌉)``, averaged."""
    i = torch.arange(n_out, device=like.device)
    starts = torch.div(i * size, n_out, rounding_mode="floor")
    ends = -torch.div(-(i + 1) * size, n_out, rounding_mode="floor")
    return window_matrix(starts, ends, size, ends - starts, like.dtype)


def pool_input_vjp(delta: Tensor, a_h: Tensor, a_w: Tensor) -> Tensor:
    """∂C/∂x of z = A_h x A_wᵀ, written out: ``A_hᵀ δ A_w``, each δ spread evenly over its window.

    Args:
        delta: δ, shape ``(*, H_out, W_out)``.
        a_h: the height window matrix, ``(H_out, H)``.
        a_w: the width window matrix, ``(W_out, W)``.

    Returns:
        ∂C/∂x, shape ``(*, H, W)``.
    """
    # ∂C/∂x_{h,w} = Σ_{i,j} A_h[i,h] δ_{i,j} A_w[j,w]
    return a_h.t() @ delta @ a_w


class PoolSaved(NamedTuple):
    """The input x (its shape and layout, for the backward kernel) and, for max pooling, the winners."""

    x: Tensor | None
    indices: Tensor | None


def _distinct(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device | str) -> Tensor:
    """Values without ties (a shuffled ramp), so that max pooling's finite differences are valid."""
    n = math.prod(shape)
    return (torch.randperm(n, device=device).to(dtype) / n - 0.5).reshape(shape)


@dataclass(frozen=True)
class MaxPool2d(Derivatives):
    """z = the maximum of each window of x; ∂C/∂x = δ at each window's winner, 0 elsewhere."""

    kind: ClassVar[str] = "max_pool2d"
    Saved: ClassVar[type[PoolSaved]] = PoolSaved
    saves_own: ClassVar[bool] = True

    kernel_size: Pair
    stride: Pair
    padding: Pair = (0, 0)
    dilation: Pair = (1, 1)
    ceil_mode: bool = False

    def forward(self, x: Tensor, *params: Tensor | None) -> tuple[Tensor, tuple[Tensor, ...]]:
        z, indices = torch.ops.aten.max_pool2d_with_indices.default(
            x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode
        )
        return z, (indices,)

    def save(
        self,
        x: Tensor,
        params: tuple[Tensor | None, ...],
        z: Tensor,
        buffers: tuple[Tensor, ...],
        needs: tuple[bool, ...],
    ) -> PoolSaved:
        return PoolSaved(x, buffers[0]) if needs[0] else PoolSaved(None, None)

    def input_vjp(self, delta: Tensor, saved: PoolSaved) -> Tensor:
        assert saved.x is not None and saved.indices is not None
        # ∂C/∂x = δ routed to each window's winner, summed where windows share one
        # (ATen's kernel for max_pool2d_input_vjp)
        return torch.ops.aten.max_pool2d_with_indices_backward.default(
            delta, saved.x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode, saved.indices
        )

    def jvp(self, saved: PoolSaved, x_t: Tensor | None, *params_t: Tensor | None) -> Tensor:
        assert saved.indices is not None and x_t is not None  # x is the only input, so its tangent came
        # ż = ẋ at each window's winner
        planes = x_t.reshape(*x_t.shape[:-2], -1)
        return planes.gather(-1, saved.indices.reshape(*saved.indices.shape[:-2], -1)).reshape(saved.indices.shape)

    @classmethod
    def samples(cls, dtype: torch.dtype, device: torch.device | str) -> list[Sample]:
        def make(*shape: int) -> Tensor:
            return _distinct(shape, dtype, device)

        return [
            Sample("2×2, batch of 2", cls((2, 2), (2, 2)), make(2, 2, 4, 4)),
            Sample("3×3 stride 1: windows share winners", cls((3, 3), (1, 1)), make(1, 1, 4, 5)),
            Sample("3×3 stride 2 padding 1", cls((3, 3), (2, 2), (1, 1)), make(1, 2, 5, 5)),
            Sample("kernel 2×3, stride (1, 2), dilation (2, 1)", cls((2, 3), (1, 2), (0, 1), (2, 1)), make(1, 1, 5, 6)),
            Sample("ceil_mode, stride 2 on odd sizes", cls((2, 2), (2, 2), ceil_mode=True), make(1, 2, 5, 3)),
            Sample("unbatched", cls((2, 2), (1, 2)), make(2, 3, 4)),
            Sample("transposed input", cls((2, 2), (2, 2)), make(1, 2, 4, 6).transpose(-1, -2)),
        ]


@dataclass(frozen=True)
class AveragePooling(Derivatives):
    """What the average poolings share: z = A_h x A_wᵀ is linear in x, so the backward reads x's
    shape only (kept as x) and the forward-mode derivative is the pooling of the tangent."""

    Saved: ClassVar[type[PoolSaved]] = PoolSaved
    saves_own: ClassVar[bool] = True

    def save(
        self,
        x: Tensor,
        params: tuple[Tensor | None, ...],
        z: Tensor,
        buffers: tuple[Tensor, ...],
        needs: tuple[bool, ...],
    ) -> PoolSaved:
        return PoolSaved(x if needs[0] else None, None)

    def jvp(self, saved: PoolSaved, x_t: Tensor | None, *params_t: Tensor | None) -> Tensor:
        assert x_t is not None  # x is the only input, so its tangent came
        # ż = A_h ẋ A_wᵀ: pooling is linear
        return self.forward(x_t)[0]


@dataclass(frozen=True)
class AvgPool2d(AveragePooling):
    """z = the mean of each window of x; ∂C/∂x = δ / divisor spread over each window."""

    kind: ClassVar[str] = "avg_pool2d"

    kernel_size: Pair
    stride: Pair
    padding: Pair = (0, 0)
    ceil_mode: bool = False
    count_include_pad: bool = True
    divisor_override: int | None = None

    def forward(self, x: Tensor, *params: Tensor | None) -> tuple[Tensor, tuple[Tensor, ...]]:
        z = torch.nn.functional.avg_pool2d(
            x,
            self.kernel_size,
            self.stride,
            self.padding,
            self.ceil_mode,
            self.count_include_pad,
            self.divisor_override,
        )
        return z, ()

    def input_vjp(self, delta: Tensor, saved: PoolSaved) -> Tensor:
        assert saved.x is not None
        # ∂C/∂x = A_hᵀ δ A_w: δ / divisor spread evenly over each window (ATen's kernel for pool_input_vjp)
        return torch.ops.aten.avg_pool2d_backward.default(
            delta,
            saved.x,
            self.kernel_size,
            self.stride,
            self.padding,
            self.ceil_mode,
            self.count_include_pad,
            self.divisor_override,
        )

    def windows(self, x: Tensor, z_shape: torch.Size) -> tuple[Tensor, Tensor]:
        """The reference window matrices ``(A_h, A_w)`` with z = A_h x A_wᵀ, for ``pool_input_vjp``."""
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        override = self.divisor_override
        a_h = avg_pool_windows(x.shape[-2], z_shape[-2], kh, sh, ph, self.count_include_pad, override is None, x)
        a_w = avg_pool_windows(x.shape[-1], z_shape[-1], kw, sw, pw, self.count_include_pad, override is None, x)
        return a_h, a_w if override is None else a_w / override

    @classmethod
    def samples(cls, dtype: torch.dtype, device: torch.device | str) -> list[Sample]:
        def make(*shape: int) -> Tensor:
            return torch.randn(shape, dtype=dtype, device=device)

        return [
            Sample("2×2, batch of 2", cls((2, 2), (2, 2)), make(2, 2, 4, 4)),
            Sample("3×2 stride (1, 2) padding 1", cls((3, 2), (1, 2), (1, 1)), make(1, 1, 4, 5)),
            Sample(
                "3×3 stride 2 padding 1, pad not counted, ceil_mode",
                cls((3, 3), (2, 2), (1, 1), ceil_mode=True, count_include_pad=False),
                make(1, 2, 6, 5),
            ),
            Sample("divisor_override 5", cls((2, 2), (1, 1), (1, 0), divisor_override=5), make(1, 1, 3, 3)),
            Sample("unbatched", cls((2, 2), (2, 1)), make(2, 4, 3)),
            Sample("transposed input", cls((2, 2), (2, 2)), make(1, 2, 4, 6).transpose(-1, -2)),
        ]


@dataclass(frozen=True)
class AdaptiveAvgPool2d(AveragePooling):
    """z = the mean of each of ``output_size`` windows of x; ∂C/∂x = δ spread evenly over each."""

    kind: ClassVar[str] = "adaptive_avg_pool2d"

    output_size: Pair

    def forward(self, x: Tensor, *params: Tensor | None) -> tuple[Tensor, tuple[Tensor, ...]]:
        return torch.nn.functional.adaptive_avg_pool2d(x, self.output_size), ()

    def input_vjp(self, delta: Tensor, saved: PoolSaved) -> Tensor:
        x = saved.x
        assert x is not None
        if delta.numel() == 0:
            # an empty output (output_size 0) depends on no input: ∂C/∂x = 0
            return torch.zeros_like(x)
        if self.output_size == (1, 1):
            # the global mean: ∂C/∂x = δ / (H·W) at every position (as torch's mean; ATen's pooling
            # kernel below loops over the windows, several times slower for this one window)
            return delta.expand_as(x) / (x.shape[-2] * x.shape[-1])
        # ∂C/∂x = A_hᵀ δ A_w: δ spread evenly over each window (ATen's kernel for pool_input_vjp)
        return torch.ops.aten._adaptive_avg_pool2d_backward.default(delta, x)

    def windows(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The reference window matrices ``(A_h, A_w)`` with z = A_h x A_wᵀ, for ``pool_input_vjp``."""
        return (
            adaptive_windows(x.shape[-2], self.output_size[0], x),
            adaptive_windows(x.shape[-1], self.output_size[1], x),
        )

    @classmethod
    def samples(cls, dtype: torch.dtype, device: torch.device | str) -> list[Sample]:
        def make(*shape: int) -> Tensor:
            return torch.randn(shape, dtype=dtype, device=device)

        return [
            Sample("2×2 from 4×4, batch of 2", cls((2, 2)), make(2, 2, 4, 4)),
            Sample("3×2 from 5×5: overlapping windows", cls((3, 2)), make(1, 2, 5, 5)),
            Sample("1×1: the global mean", cls((1, 1)), make(2, 3, 3, 2)),
            Sample("larger than the input", cls((4, 3)), make(1, 1, 3, 2)),
            Sample("unbatched", cls((2, 3)), make(2, 3, 4)),
            Sample("transposed input", cls((2, 2)), make(1, 2, 5, 3).transpose(-1, -2)),
        ]
