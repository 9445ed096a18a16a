"""Twins of torch.nn's 2-D pooling modules: max pooling routes δ to each window's winner, average
pooling spreads it evenly over each window."""

from __future__ import annotations

import torch
from torch import Tensor

from ..derivatives import pool as derivatives
from ..functional.pool import (
    adaptive_avg_pool2d,
    adaptive_avg_pool_layer,
    avg_pool2d,
    avg_pool_layer,
    max_pool2d,
    max_pool_layer,
)
from ..hookspecs import hookimpl
from ..specs import LayerSpec
from .link import Linked


class MaxPool2d(Linked, torch.nn.MaxPool2d):
    """Like ``torch.nn.MaxPool2d``; input ``(N, C, H, W)`` or ``(C, H, W)``, ``return_indices`` supported.

    Examples:
        >>> MaxPool2d(2)(torch.zeros(1, 3, 4, 4)).shape
        torch.Size([1, 3, 2, 2])
    """

    def forward(self, input: Tensor) -> Tensor:
        return max_pool2d(  # type: ignore[return-value]
            input, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode, self.return_indices
        )

    def link_is_pure(self) -> bool:
        return True

    def link(self, x: Tensor) -> derivatives.MaxPool2d:
        return max_pool_layer(x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode)

    def linkable(self) -> bool:
        return not self.return_indices  # its call hands out the indices too


class AvgPool2d(Linked, torch.nn.AvgPool2d):
    """Like ``torch.nn.AvgPool2d``; input ``(N, C, H, W)`` or ``(C, H, W)``."""

    def forward(self, input: Tensor) -> Tensor:
        return avg_pool2d(
            input,
            self.kernel_size,
            self.stride,
            self.padding,
            self.ceil_mode,
            self.count_include_pad,
            self.divisor_override,
        )

    def link_is_pure(self) -> bool:
        return True

    def link(self, x: Tensor) -> derivatives.AvgPool2d:
        return avg_pool_layer(
            x,
            self.kernel_size,
            self.stride,
            self.padding,
            self.ceil_mode,
            self.count_include_pad,
            self.divisor_override,
        )


class AdaptiveAvgPool2d(Linked, torch.nn.AdaptiveAvgPool2d):
    """Like ``torch.nn.AdaptiveAvgPool2d``; input ``(N, C, H, W)`` or ``(C, H, W)``."""

    def forward(self, input: Tensor) -> Tensor:
        return adaptive_avg_pool2d(input, self.output_size)  # type: ignore[arg-type]

    def link_is_pure(self) -> bool:
        return True

    def link(self, x: Tensor) -> derivatives.AdaptiveAvgPool2d:
        return adaptive_avg_pool_layer(x, self.output_size)  # type: ignore[arg-type]


def _distinct(*shape: int, dtype: torch.dtype) -> Tensor:
    """Values without ties, so that every window has one winner."""
    n = torch.Size(shape).numel()
    return (torch.randperm(n).to(dtype) / n - 0.5).reshape(shape)


def _max_pool_examples(dtype: torch.dtype) -> list[tuple[torch.nn.Module, Tensor]]:
    return [
        (torch.nn.MaxPool2d(2), _distinct(2, 3, 6, 6, dtype=dtype)),
        (torch.nn.MaxPool2d(3, stride=2, padding=1), _distinct(2, 2, 7, 7, dtype=dtype)),
        (
            torch.nn.MaxPool2d((2, 3), stride=(1, 2), padding=(1, 1), dilation=(2, 1), ceil_mode=True),
            _distinct(2, 2, 7, 8, dtype=dtype),
        ),
        (torch.nn.MaxPool2d(2, ceil_mode=True), _distinct(3, 5, 5, dtype=dtype)),
    ]


def _avg_pool_examples(dtype: torch.dtype) -> list[tuple[torch.nn.Module, Tensor]]:
    def make(*shape: int) -> Tensor:
        return torch.randn(shape, dtype=dtype)

    return [
        (torch.nn.AvgPool2d(2), make(2, 3, 6, 6)),
        (torch.nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False), make(2, 2, 7, 6)),
        (torch.nn.AvgPool2d((2, 3), stride=(2, 1), padding=(1, 0), divisor_override=4), make(1, 2, 5, 6)),
        (torch.nn.AvgPool2d(2, ceil_mode=True), make(3, 5, 4)),
    ]


def _adaptive_examples(dtype: torch.dtype) -> list[tuple[torch.nn.Module, Tensor]]:
    def make(*shape: int) -> Tensor:
        return torch.randn(shape, dtype=dtype)

    return [
        (torch.nn.AdaptiveAvgPool2d((3, 2)), make(2, 3, 7, 5)),
        (torch.nn.AdaptiveAvgPool2d((None, 2)), make(2, 2, 5, 7)),
        (torch.nn.AdaptiveAvgPool2d(1), make(2, 4, 3, 3)),
        (torch.nn.AdaptiveAvgPool2d((4, 3)), make(2, 6, 7)),
    ]


@hookimpl
def torchbp_layers() -> list[LayerSpec]:
    return [
        LayerSpec(
            "MaxPool2d",
            "z = the maximum of each window; ∂C/∂x = δ at each window's winner, 0 elsewhere",
            torch.nn.MaxPool2d,
            MaxPool2d,
            derivatives.MaxPool2d,
            _max_pool_examples,
        ),
        LayerSpec(
            "AvgPool2d",
            "z = the mean of each window; ∂C/∂x = δ / divisor spread over each window",
            torch.nn.AvgPool2d,
            AvgPool2d,
            derivatives.AvgPool2d,
            _avg_pool_examples,
        ),
        LayerSpec(
            "AdaptiveAvgPool2d",
            "z = the mean of each of output_size windows; ∂C/∂x = δ spread evenly over each window",
            torch.nn.AdaptiveAvgPool2d,
            AdaptiveAvgPool2d,
            derivatives.AdaptiveAvgPool2d,
            _adaptive_examples,
        ),
    ]
