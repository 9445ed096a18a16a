"""Conv1d and Conv2d: ``torch.nn``'s convolutions with the explicit backward
∂C/∂x = Wᵀ ⋆ δ (BP2), ∂C/∂W = x ⋆ δ (BP4), ∂C/∂b = Σ δ (BP3)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from ..derivatives import conv as derivatives
from ..derivatives.base import Derivatives
from ..functional.conv import checked_settings, conv1d, conv2d, conv_settings, pad
from ..functional.factory import apply_layer
from ..hookspecs import hookimpl
from ..specs import LayerSpec
from .delta_hooks import DeltaHooks
from .feedback import FeedbackLayer


class _Conv(FeedbackLayer, DeltaHooks):
    """What Conv1d and Conv2d share: the call (padding first where its mode is not zeros, as torch's
    convolutions do) and, in a chain, a zero-padded convolution as one ``Conv``.

    With a feedback rule, BP2 reads the buffer ``feedback_weight`` B in W's place: ∂C/∂x = Bᵀ ⋆ δ,
    or, for a direct rule, e B reshaped like x, B ``(outputs, C_in · spatial size of x)``.
    """

    convolve: Callable[..., Tensor]
    _reversed_padding_repeated_twice: list[int]

    weight: Tensor
    bias: Tensor | None
    stride: tuple[int, ...]
    padding: str | tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int
    padding_mode: Literal["zeros", "reflect", "replicate", "circular"]

    def forward(self, input: Tensor) -> Tensor:
        if self._feedback is not None and torch.is_grad_enabled():
            params = self.link_params()
            return apply_layer(self.linked(input, params), input, params, self.on_delta())
        padding: str | tuple[int, ...] | int = self.padding
        if self.padding_mode != "zeros":
            input = pad(input, self._reversed_padding_repeated_twice, self.padding_mode)
            padding = 0
        return self.convolve(
            input, self.weight, self.bias, self.stride, padding, self.dilation, self.groups, self.on_delta()
        )

    def linkable(self) -> bool:
        if self.padding_mode != "zeros":
            return False  # the padding is a layer of its own
        if self.padding != "same":
            return True
        d = len(self.stride)
        return conv_settings(d, self.stride, self.padding, self.dilation, self.groups, self.weight).extra is None

    def link(self, x: Tensor) -> Derivatives:
        d = len(self.stride)
        settings = checked_settings(d, x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        return settings.conv

    def link_params(self) -> tuple[Tensor | None, ...]:
        return self._parameters["weight"], self._parameters["bias"]  # type: ignore[attr-defined]


class Conv1d(_Conv, torch.nn.Conv1d):
    """z = W ⋆ x + b over one spatial dimension, like ``torch.nn.Conv1d``; input ``([N,] C_in, L)``.

    A ``padding_mode`` other than ``"zeros"`` pads first (its own explicit layer), as
    ``torch.nn.Conv1d`` does, and the convolution then adds no zeros.

    Examples:
        >>> Conv1d(2, 3, 5, padding="same")
        Conv1d(2, 3, kernel_size=(5,), stride=(1,), padding=same)
    """

    convolve = staticmethod(conv1d)


class Conv2d(_Conv, torch.nn.Conv2d):
    """z = W ⋆ x + b over two spatial dimensions, like ``torch.nn.Conv2d``; input ``([N,] C_in, H, W)``.

    A ``padding_mode`` other than ``"zeros"`` pads first (its own explicit layer), as
    ``torch.nn.Conv2d`` does, and the convolution then adds no zeros.

    Examples:
        >>> Conv2d(3, 8, 3, stride=2, padding_mode="reflect")
        Conv2d(3, 8, kernel_size=(3, 3), stride=(2, 2), padding_mode=reflect)
    """

    convolve = staticmethod(conv2d)


def _conv1d_examples(dtype: torch.dtype) -> list[tuple[torch.nn.Module, Tensor]]:
    def make(*shape: int) -> Tensor:
        return torch.randn(shape, dtype=dtype)

    return [
        (torch.nn.Conv1d(3, 4, 3, stride=2, padding=1, dtype=dtype), make(2, 3, 9)),
        (torch.nn.Conv1d(2, 4, 4, padding="same", dilation=1, groups=2, dtype=dtype), make(2, 2, 7)),
        (torch.nn.Conv1d(2, 3, 3, padding=2, padding_mode="circular", bias=False, dtype=dtype), make(2, 7)),
        (torch.nn.Conv1d(2, 3, 3, padding=2, padding_mode="reflect", dtype=dtype), make(2, 2, 6)),
        (torch.nn.Conv1d(2, 3, 2, padding="same", dilation=3, padding_mode="replicate", dtype=dtype), make(1, 2, 6)),
    ]


def _conv2d_examples(dtype: torch.dtype) -> list[tuple[torch.nn.Module, Tensor]]:
    def make(*shape: int) -> Tensor:
        return torch.randn(shape, dtype=dtype)

    return [
        (torch.nn.Conv2d(3, 4, 3, stride=2, dtype=dtype), make(2, 3, 7, 7)),
        (torch.nn.Conv2d(2, 3, 3, padding="same", dilation=2, dtype=dtype), make(2, 2, 6, 6)),
        (torch.nn.Conv2d(2, 3, (2, 4), padding="same", dtype=dtype), make(2, 2, 5, 6)),
        (torch.nn.Conv2d(4, 6, 3, groups=2, bias=False, dtype=dtype), make(2, 4, 5, 5)),
        (torch.nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect", dtype=dtype), make(2, 2, 5, 5)),
        (torch.nn.Conv2d(2, 3, 3, padding=(2, 1), padding_mode="replicate", dtype=dtype), make(2, 2, 4, 5)),
        (torch.nn.Conv2d(2, 3, 3, stride=2, padding=1, padding_mode="circular", dtype=dtype), make(2, 2, 5, 6)),
        (torch.nn.Conv2d(2, 3, 4, padding="same", padding_mode="reflect", dtype=dtype), make(2, 2, 6, 6)),
        (torch.nn.Conv2d(2, 3, 3, padding=1, dtype=dtype), make(2, 5, 5)),
    ]


@hookimpl
def torchbp_layers() -> list[LayerSpec]:
    return [
        LayerSpec(
            "Conv1d",
            "z = W ⋆ x + b over one dimension; ∂C/∂x = Wᵀ ⋆ δ (BP2), ∂C/∂W = x ⋆ δ (BP4), ∂C/∂b = Σ δ (BP3)",
            torch.nn.Conv1d,
            Conv1d,
            derivatives.Conv,
            _conv1d_examples,
        ),
        LayerSpec(
            "Conv2d",
            "z = W ⋆ x + b over two dimensions; ∂C/∂x = Wᵀ ⋆ δ (BP2), ∂C/∂W = x ⋆ δ (BP4), ∂C/∂b = Σ δ (BP3)",
            torch.nn.Conv2d,
            Conv2d,
            derivatives.Conv,
            _conv2d_examples,
        ),
    ]
