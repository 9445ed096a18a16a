"""Convolution z = W ⋆ x + b, its BP2, BP3 and BP4; and the padding step that may come before it.

Conventions (``torch.nn.Conv1d``/``Conv2d``'s): ``x`` is ``(N, C_in, *spatial)`` or unbatched
``(C_in, *spatial)``, ``weight`` is ``(C_out, C_in / groups, *kernel)``, ``bias`` is ``(C_out,)``,
``z`` is ``(N, C_out, *out)`` (or ``(C_out, *out)``). With stride s, padding p and dilation d,
each output position p' reads the input positions p'·s + k·d − p, k over the kernel::

    z[n, o, p'] = b[o] + Σ_c Σ_k W[o, c, k] x[n, c, p'·s + k·d − p]     (c over o's group)

so δ = ∂C/∂z goes back as::

    ∂C/∂x[n, c, i] = Σ_o Σ_k W[o, c, k] δ[n, o, p']  where p'·s + k·d − p = i
                     the transposed convolution of δ with W                   (BP2's analogue)
    ∂C/∂W[o, c, k] = Σ_n Σ_p' δ[n, o, p'] x[n, c, p'·s + k·d − p]
                     the correlation of x with δ                              (BP4's analogue)
    ∂C/∂b[o]       = Σ_n Σ_p' δ[n, o, p']                                     (BP3's analogue)

ATen's ``convolution_backward`` computes BP2 and BP4 (it is itself differentiable);
``conv_input_vjp_reference`` and ``conv_weight_vjp_reference`` write them out with a
transposed convolution and an unfold, and the tests check the kernel against them.

Padding modes other than zeros (and the odd extra zero of ``padding="same"`` with an even
kernel) are a layer of their own, ``Pad``: the padded tensor copies input positions, so
its δ is folded back onto the positions it copies.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch
from torch import Tensor

from .base import Derivatives, Sample

_CONVOLUTIONS: dict[int, Callable[..., Tensor]] = {
    3: torch.nn.functional.conv1d,
    4: torch.nn.functional.conv2d,
    5: torch.nn.functional.conv3d,
}


def conv_input_vjp_reference(
    delta: Tensor,
    x_shape: tuple[int, ...],
    weight: Tensor,
    stride: tuple[int, ...],
    padding: tuple[int, ...],
    dilation: tuple[int, ...],
    groups: int,
) -> Tensor:
    """BP2 written out: ∂C/∂x = the transposed convolution of δ with W, for batched ``δ``.

    The transposed convolution maps ``(N, C_out, *out)`` back to ``(N, C_in, *spatial)`` up to
    the trailing positions a stride skips; ``output_padding`` adds those (their gradient is 0).
    """
    kernel = weight.shape[2:]
    reached = [
        (o - 1) * s - 2 * p + d * (k - 1) + 1
        for o, s, p, d, k in zip(delta.shape[2:], stride, padding, dilation, kernel)
    ]
    output_padding = [size - r for size, r in zip(x_shape[2:], reached)]
    transpose = {3: torch.nn.functional.conv_transpose1d, 4: torch.nn.functional.conv_transpose2d}[weight.dim()]
    return transpose(delta, weight, None, stride, padding, output_padding, groups, dilation)


def conv_weight_vjp_reference(
    delta: Tensor,
    x: Tensor,
    weight_shape: tuple[int, ...],
    stride: tuple[int, ...],
    padding: tuple[int, ...],
    dilation: tuple[int, ...],
    groups: int,
) -> Tensor:
    """BP4 written out: ∂C/∂W[o, c, k] = Σ_n Σ_p' δ[n, o, p'] x[n, c, p'·s + k·d − p], for batched tensors.

    ``unfold`` lays out, for each output position p', the input patch it reads (a 1-d
    convolution is a 2-d one of height 1); the sum over n and p' is then one product per group.
    """
    kernel = tuple(weight_shape[2:])
    if x.dim() == 3:
        x, delta, kernel = x.unsqueeze(2), delta.unsqueeze(2), (1, *kernel)
        stride, padding, dilation = (1, *stride), (0, *padding), (1, *dilation)
    n, out_channels = delta.shape[0], weight_shape[0]
    # patches[n, g, (c, k), p'] = x[n, c, p'·s + k·d − p] for the channels c of group g
    patches = torch.nn.functional.unfold(x, kernel, dilation, padding, stride)
    patches = patches.reshape(n, groups, -1, patches.shape[-1])
    delta_rows = delta.reshape(n, groups, out_channels // groups, -1)
    # ∂C/∂W = Σ_n Σ_p' δ[n, o, p'] patches[n, g, (c, k), p'], group by group
    grad_weight = torch.einsum("ngop,ngkp->gok", delta_rows, patches)
    return grad_weight.reshape(weight_shape)


class ConvSaved(NamedTuple):
    """x (for BP4, and for its shape in BP2) and W (for BP2, and for its shape in BP4)."""

    x: Tensor | None
    weight: Tensor | None


@dataclass(frozen=True)
class Conv(Derivatives):
    """z = W ⋆ x + b: ∂C/∂x = Wᵀ ⋆ δ (BP2), ∂C/∂W = x ⋆ δ (BP4), ∂C/∂b = Σ δ (BP3).

    Attributes:
        stride: s per spatial dimension (its length is the number of spatial dimensions).
        padding: zeros added on both sides, p per spatial dimension.
        dilation: d, the spacing of the kernel's taps, per spatial dimension.
        groups: the number of blocks the channels are split into.
    """

    kind: ClassVar[str] = "conv"
    params: ClassVar[tuple[str, ...]] = ("weight", "bias")
    Saved: ClassVar[type[ConvSaved]] = ConvSaved
    saves_own: ClassVar[bool] = True

    stride: tuple[int, ...] = (1, 1)
    padding: tuple[int, ...] = (0, 0)
    dilation: tuple[int, ...] = (1, 1)
    groups: int = 1

    def convolve(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        """W ⋆ x + b by ATen's convolution, for batched or unbatched ``x``."""
        return _CONVOLUTIONS[weight.dim()](x, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    def convolution_backward(self, delta: Tensor, x: Tensor, weight: Tensor, mask: tuple[bool, bool]) -> list[Tensor]:
        """ATen's ``convolution_backward``: [BP2's ∂C/∂x, BP4's ∂C/∂W] where ``mask`` says, for batched tensors."""
        return torch.ops.aten.convolution_backward.default(  # type: ignore[no-any-return]
            delta,
            x,
            weight,
            None,
            self.stride,
            self.padding,
            self.dilation,
            False,
            (0,) * len(self.stride),
            self.groups,
            (*mask, False),
        )

    def batched(self, t: Tensor) -> Tensor:
        """``t`` with a batch dimension of 1 in front if it is unbatched ``(C, *spatial)``."""
        return t.unsqueeze(0) if t.dim() == len(self.stride) + 1 else t

    def forward(self, x: Tensor, *params: Tensor | None) -> tuple[Tensor, tuple[Tensor, ...]]:
        weight, bias = params
        assert weight is not None
        return self.convolve(x, weight, bias), ()

    def save(
        self,
        x: Tensor,
        params: tuple[Tensor | None, ...],
        z: Tensor,
        buffers: tuple[Tensor, ...],
        needs: tuple[bool, ...],
    ) -> ConvSaved:
        either = needs[0] or needs[1]
        return ConvSaved(x if either else None, params[0] if either else None)

    def input_vjp(self, delta: Tensor, saved: ConvSaved) -> Tensor:
        x, weight = saved
        assert x is not None and weight is not None
        # BP2: ∂C/∂x = Wᵀ ⋆ δ, the transposed convolution of δ with W
        grad_x = self.convolution_backward(self.batched(delta), self.batched(x), weight, (True, False))[0]
        return grad_x if grad_x.dim() == x.dim() else grad_x.squeeze(0)

    def param_vjps(self, delta: Tensor, saved: ConvSaved, needs: tuple[bool, ...]) -> tuple[Tensor | None, ...]:
        grad_weight = grad_bias = None
        if needs[0]:
            x, weight = saved
            assert x is not None and weight is not None
            # BP4: ∂C/∂W = x ⋆ δ, the correlation of the input with δ, summed over the batch
            grad_weight = self.convolution_backward(self.batched(delta), self.batched(x), weight, (False, True))[1]
        if needs[1]:
            positions = tuple(range(-len(self.stride), 0))
            # BP3: ∂C/∂b = Σ δ over the batch and the positions
            grad_bias = self.batched(delta).sum((0, *positions))
        return grad_weight, grad_bias

    def vjps(self, delta: Tensor, saved: ConvSaved, needs: tuple[bool, ...]) -> tuple[Tensor | None, ...]:
        x, weight = saved
        if x is None or weight is None:
            return super().vjps(delta, saved, needs)
        # BP2, BP4 and BP3 (∂C/∂b = Σ δ) in one pass of ATen's kernel, as torch's own backward does
        grad_x, grad_weight, grad_bias = torch.ops.aten.convolution_backward.default(
            self.batched(delta),
            self.batched(x),
            weight,
            weight.shape[:1] if needs[2] else None,
            self.stride,
            self.padding,
            self.dilation,
            False,
            (0,) * len(self.stride),
            self.groups,
            needs,
        )
        if grad_x is not None and grad_x.dim() != x.dim():
            grad_x = grad_x.squeeze(0)
        return grad_x, grad_weight, grad_bias

    def jvp(self, saved: ConvSaved, x_t: Tensor | None, *params_t: Tensor | None) -> Tensor:
        x, weight = saved
        weight_t, bias_t = params_t
        assert x is not None and weight is not None
        # ż = W ⋆ ẋ + Ẇ ⋆ x + ḃ
        if x_t is not None:
            z_t = self.convolve(x_t, weight, bias_t)
            return z_t if weight_t is None else z_t + self.convolve(x, weight_t, None)
        if weight_t is not None:
            return self.convolve(x, weight_t, bias_t)
        return self.convolve(torch.zeros_like(x), weight, bias_t)

    @classmethod
    def samples(cls, dtype: torch.dtype, device: torch.device | str) -> list[Sample]:
        def make(*shape: int) -> Tensor:
            return torch.randn(shape, dtype=dtype, device=device)

        return [
            Sample("1-d, batch of 1, padding 1", cls((1,), (1,), (1,), 1), make(1, 2, 6), (make(3, 2, 3), make(3))),
            Sample(
                "1-d, stride 2, dilation 2, groups 2, no bias",
                cls((2,), (0,), (2,), 2),
                make(2, 4, 6),
                (make(2, 2, 2), None),
            ),
            Sample("1-d, no batch dimension", cls((1,), (0,), (1,), 1), make(2, 5), (make(3, 2, 2), make(3))),
            Sample(
                "2-d, batch of 1, padding 1",
                cls((1, 1), (1, 1), (1, 1), 1),
                make(1, 2, 4, 4),
                (make(3, 2, 3, 3), make(3)),
            ),
            Sample(
                "2-d, stride (2, 1), padding (1, 0), dilation (1, 2), groups 2",
                cls((2, 1), (1, 0), (1, 2), 2),
                make(2, 4, 3, 4),
                (make(2, 2, 2, 2), make(2)),
            ),
            Sample(
                "2-d, non-contiguous (channels-last) input, stride 2, no bias",
                cls((2, 2), (0, 0), (1, 1), 1),
                make(2, 5, 6, 3).permute(0, 3, 1, 2),
                (make(2, 3, 3, 2), None),
            ),
            Sample(
                "2-d, depthwise (groups 2), padding 2, dilation 2",
                cls((1, 1), (2, 2), (2, 2), 2),
                make(1, 2, 4, 4),
                (make(2, 1, 3, 3), make(2)),
            ),
            Sample(
                "2-d, no batch dimension", cls((1, 1), (0, 0), (1, 1), 1), make(2, 4, 4), (make(2, 2, 2, 2), make(2))
            ),
            Sample("1-d, one output position", cls((1,), (0,), (1,), 1), make(2, 3, 4), (make(2, 3, 4), make(2))),
            Sample(
                "2-d, one output position, groups 2",
                cls((1, 1), (0, 0), (1, 1), 2),
                make(3, 4, 3, 3),
                (make(4, 2, 3, 3), make(4)),
            ),
        ]


PAD_MODES = ("constant", "reflect", "replicate", "circular")


def padding_source(length: int, left: int, right: int, mode: str, device: torch.device | str = "cpu") -> Tensor:
    """For each position j of a dimension padded by ``left`` and ``right``, the input position it copies.

    reflect: the mirror image without the edge; replicate: the edge; circular: the other end.
    """
    j = torch.arange(-left, length + right, device=device)
    if mode == "reflect":
        return (length - 1) - ((length - 1) - j.abs()).abs()
    if mode == "replicate":
        return j.clamp(0, length - 1)
    return j.remainder(length)


def fold_padding(delta: Tensor, pad: tuple[int, ...], mode: str) -> Tensor:
    """∂C/∂x[i] = Σ_{j copies i} δ[j]: the δ of the padded tensor folded back onto the input.

    ``pad`` is in ``torch.nn.functional.pad``'s order (the last dimension's left and right
    first); ``mode`` is ``"reflect"``, ``"replicate"`` or ``"circular"``.
    """
    grad = delta
    for i in range(len(pad) // 2):
        dim, left, right = delta.dim() - 1 - i, pad[2 * i], pad[2 * i + 1]
        length = grad.shape[dim] - left - right
        source = padding_source(length, left, right, mode, grad.device)
        shape = (*grad.shape[:dim], length, *grad.shape[dim + 1 :])
        # δ of each padded position j added onto the input position it copies
        grad = grad.new_zeros(shape).index_add(dim, source, grad)
    return grad


_PAD_BACKWARD: dict[tuple[str, int], Callable[[Tensor, Tensor, tuple[int, ...]], Tensor]] = {
    ("reflect", 1): torch.ops.aten.reflection_pad1d_backward.default,
    ("reflect", 2): torch.ops.aten.reflection_pad2d_backward.default,
    ("reflect", 3): torch.ops.aten.reflection_pad3d_backward.default,
    ("replicate", 1): torch.ops.aten.replication_pad1d_backward.default,
    ("replicate", 2): torch.ops.aten.replication_pad2d_backward.default,
    ("replicate", 3): torch.ops.aten.replication_pad3d_backward.default,
}


class PadSaved(NamedTuple):
    """x, which the reflect and replicate kernels read for its shape (nothing for the other modes)."""

    x: Tensor | None


@dataclass(frozen=True)
class Pad(Derivatives):
    """The padding before a convolution: each padded position copies an input position (or is a constant).

    Attributes:
        pad: ``torch.nn.functional.pad``'s list: left and right of the last dimension, then of
            the one before, … (negative entries crop, in ``"constant"`` mode only).
        mode: ``"constant"``, ``"reflect"``, ``"replicate"`` or ``"circular"``.
        value: the constant of ``"constant"`` mode.
    """

    kind: ClassVar[str] = "pad"
    Saved: ClassVar[type[PadSaved]] = PadSaved
    saves_own: ClassVar[bool] = True

    pad: tuple[int, ...] = (0, 0)
    mode: str = "constant"
    value: float = 0.0

    def forward(self, x: Tensor, *params: Tensor | None) -> tuple[Tensor, tuple[Tensor, ...]]:
        if self.mode == "constant":
            return torch.nn.functional.pad(x, self.pad, "constant", self.value), ()
        return torch.nn.functional.pad(x, self.pad, self.mode), ()

    def save(
        self,
        x: Tensor,
        params: tuple[Tensor | None, ...],
        z: Tensor,
        buffers: tuple[Tensor, ...],
        needs: tuple[bool, ...],
    ) -> PadSaved:
        return PadSaved(x if needs[0] and (self.mode, len(self.pad) // 2) in _PAD_BACKWARD else None)

    def input_vjp(self, delta: Tensor, saved: PadSaved) -> Tensor:
        if self.mode == "constant":
            # ∂C/∂x = δ at the input's own positions (a constant has no gradient): δ cropped by the pad
            return torch.nn.functional.pad(delta, tuple(-p for p in self.pad))
        kernel = _PAD_BACKWARD.get((self.mode, len(self.pad) // 2))
        if kernel is not None:
            assert saved.x is not None
            # ∂C/∂x[i] = Σ_{j copies i} δ[j], by ATen's reflection/replication-pad backward
            return kernel(delta, saved.x, self.pad)
        # ∂C/∂x[i] = Σ_{j copies i} δ[j]: the wrapped slices added onto the other end
        return fold_padding(delta, self.pad, self.mode)

    def jvp(self, saved: PadSaved, x_t: Tensor | None, *params_t: Tensor | None) -> Tensor:
        assert x_t is not None
        # ż = ẋ padded the same way (a constant's tangent is 0)
        return torch.nn.functional.pad(x_t, self.pad, self.mode)

    @classmethod
    def samples(cls, dtype: torch.dtype, device: torch.device | str) -> list[Sample]:
        def make(*shape: int) -> Tensor:
            return torch.randn(shape, dtype=dtype, device=device)

        return [
            Sample("constant 1-d, one side cropped", cls((2, -1), "constant", 0.5), make(1, 2, 5)),
            Sample("constant 2-d, uneven", cls((0, 1, 0, 1)), make(2, 2, 3, 3)),
            Sample("reflect 1-d", cls((2, 1), "reflect"), make(2, 2, 5)),
            Sample("reflect 2-d, no batch dimension", cls((1, 2, 2, 0), "reflect"), make(2, 4, 4)),
            Sample(
                "replicate 2-d, non-contiguous", cls((2, 1, 1, 3), "replicate"), make(2, 4, 5, 3).permute(0, 3, 1, 2)
            ),
            Sample("replicate 1-d, no batch dimension", cls((3, 1), "replicate"), make(2, 4)),
            Sample("circular 1-d", cls((2, 3), "circular"), make(1, 2, 4)),
            Sample("circular 2-d", cls((1, 1, 2, 0), "circular"), make(2, 2, 3, 4)),
        ]
