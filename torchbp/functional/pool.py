"""Pooling ops: ``max_pool2d``, ``avg_pool2d``, ``adaptive_avg_pool2d``, with explicit backward passes.

Each call's settings are checked once and kept with their ``torchbp.derivatives.pool`` object
(a call with the same settings reuses both), so the hot path checks the input only: a few
comparisons against the smallest height and width the settings allow. Only when one fails does
the full check run, to say which argument is wrong.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from ..derivatives.pool import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d, Pair
from .checks import check_tensor, shape_text
from .factory import apply_layer, apply_layer_with_buffers
from .settings_cache import SettingsCache, settings_key

__all__ = ["adaptive_avg_pool2d", "avg_pool2d", "max_pool2d"]

Size2 = int | Sequence[int]


def _pair(name: str, value: object, smallest: int) -> Pair:
    """``value`` as ``(height, width)``: an int for both, or a sequence of one or two ints, each ≥ ``smallest``."""
    items = [value] if isinstance(value, int) else value
    if (
        isinstance(items, Sequence)
        and len(items) in (1, 2)
        and all(isinstance(v, int) and not isinstance(v, bool) for v in items)
    ):
        pair = (int(items[0]), int(items[-1]))
        if min(pair) >= smallest:
            return pair
    bound = "positive integers" if smallest == 1 else "non-negative integers"
    raise ValueError(f"{name}: expected {bound}, one for both sides or one per (height, width), got {value!r}")


def _half_kernel(kernel: Pair, padding: Pair) -> None:
    if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
        raise ValueError(
            f"padding: expected at most half the kernel size ({kernel[0] // 2}, {kernel[1] // 2} for "
            f"kernel_size {kernel}), got {padding}"
        )


def output_size(size: int, kernel: int, stride: int, padding: int, dilation: int, ceil_mode: bool) -> int:
    """The number of windows along one axis, as ATen counts them: in ``ceil_mode`` a partial window at
    the end counts, if it starts inside the input or its left padding."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    n = (span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (n - 1) * stride >= size + padding:
        n -= 1
    return n


def _check_input(x: object, kernel: Pair, stride: Pair, padding: Pair, dilation: Pair, ceil_mode: bool) -> None:
    """The full check of a pooling input: a 3-D or 4-D floating-point tensor with room for one window."""
    x = check_tensor("input", x)
    if x.dim() not in (3, 4) or 0 in x.shape[-3:]:
        raise ValueError(
            f"input: expected a non-empty 3-D (C, H, W) or 4-D (N, C, H, W) tensor, got shape {shape_text(x)}"
        )
    height, width = x.shape[-2:]
    sizes = [
        output_size(n, k, s, p, d, ceil_mode)
        for n, k, s, p, d in zip((height, width), kernel, stride, padding, dilation)
    ]
    if min(sizes) < 1:
        raise ValueError(
            f"input: height and width ({height}, {width}) give no complete window for kernel_size {kernel}, "
            f"stride {stride}, padding {padding}, dilation {dilation} (output size ({sizes[0]}, {sizes[1]})); "
            f"expected at least ({dilation[0] * (kernel[0] - 1) + 1 - 2 * padding[0]}, "
            f"{dilation[1] * (kernel[1] - 1) + 1 - 2 * padding[1]})"
        )


def _fits(x: object, smallest: Pair) -> bool:
    """The hot-path check: a floating-point 3-D or 4-D tensor at least ``smallest`` high and wide."""
    return (
        isinstance(x, Tensor)
        and x.is_floating_point()
        and x.dim() in (3, 4)
        and x.shape[-2] >= smallest[0]
        and x.shape[-1] >= smallest[1]
        and x.shape[-3] > 0
    )


_MAX_POOLS: SettingsCache[tuple[MaxPool2d, Pair]] = SettingsCache()


def _max_pool_settings(
    kernel_size: Size2, stride: Size2 | None, padding: Size2, dilation: Size2, ceil_mode: bool
) -> tuple[MaxPool2d, Pair]:
    """The layer's derivatives object, and the smallest input height and width that hold a whole window."""
    key = settings_key(kernel_size, stride, padding, dilation, ceil_mode)
    cached = _MAX_POOLS.get(key)
    if cached is not None:
        return cached
    kernel = _pair("kernel_size", kernel_size, 1)
    strides = (
        kernel if stride is None or (isinstance(stride, Sequence) and len(stride) == 0) else _pair("stride", stride, 1)
    )
    pads = _pair("padding", padding, 0)
    dilations = _pair("dilation", dilation, 1)
    _half_kernel(kernel, pads)
    smallest = (
        max(dilations[0] * (kernel[0] - 1) + 1 - 2 * pads[0], 1),
        max(dilations[1] * (kernel[1] - 1) + 1 - 2 * pads[1], 1),
    )
    return _MAX_POOLS.remember(key, (MaxPool2d(kernel, strides, pads, dilations, bool(ceil_mode)), smallest))


def max_pool_layer(
    input: Tensor, kernel_size: Size2, stride: Size2 | None, padding: Size2, dilation: Size2, ceil_mode: bool
) -> MaxPool2d:
    """The derivatives object of a ``max_pool2d`` call, its settings and ``input`` checked."""
    derivatives, smallest = _max_pool_settings(kernel_size, stride, padding, dilation, ceil_mode)
    if not _fits(input, smallest):
        _check_input(
            input, derivatives.kernel_size, derivatives.stride, derivatives.padding, derivatives.dilation, ceil_mode
        )
    return derivatives


def max_pool2d(
    input: Tensor,
    kernel_size: Size2,
    stride: Size2 | None = None,
    padding: Size2 = 0,
    dilation: Size2 = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """z = the maximum of each window of the input; backward ∂C/∂x = δ routed to each window's winner.

    Args:
        input: x, shape ``(N, C, H, W)`` or ``(C, H, W)``.
        kernel_size: the window's ``(height, width)``, or one int for both.
        stride: the step between windows; ``None`` (default) is ``kernel_size``.
        padding: implicit −∞ padding on each side, at most half the kernel size.
        dilation: the step between a window's elements.
        ceil_mode: count a partial window at the end (rounds the output size up).
        return_indices: also return each window's winner, as ``h·W + w`` in its plane.

    Returns:
        z, shape ``(N, C, H_out, W_out)`` or ``(C, H_out, W_out)``; with ``return_indices``,
        ``(z, indices)``, indices of z's shape (int64, no gradient).

    Examples:
        >>> import torch
        >>> max_pool2d(torch.arange(16.0).reshape(1, 1, 4, 4), 2)
        tensor([[[[ 5.,  7.],
                  [13., 15.]]]])
    """
    derivatives = max_pool_layer(input, kernel_size, stride, padding, dilation, ceil_mode)
    if return_indices:
        z, indices = apply_layer_with_buffers(derivatives, input)
        return z, indices
    return apply_layer(derivatives, input)


_AVG_POOLS: SettingsCache[tuple[AvgPool2d, Pair]] = SettingsCache()


def _avg_pool_settings(
    kernel_size: Size2,
    stride: Size2 | None,
    padding: Size2,
    ceil_mode: bool,
    count_include_pad: bool,
    divisor_override: int | None,
) -> tuple[AvgPool2d, Pair]:
    """The layer's derivatives object, and the smallest input height and width that hold a whole window."""
    key = settings_key(kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
    cached = _AVG_POOLS.get(key)
    if cached is not None:
        return cached
    kernel = _pair("kernel_size", kernel_size, 1)
    strides = (
        kernel if stride is None or (isinstance(stride, Sequence) and len(stride) == 0) else _pair("stride", stride, 1)
    )
    pads = _pair("padding", padding, 0)
    _half_kernel(kernel, pads)
    if divisor_override is not None and (
        not isinstance(divisor_override, int) or isinstance(divisor_override, bool) or divisor_override == 0
    ):
        raise ValueError(f"divisor_override: expected None or a non-zero integer, got {divisor_override!r}")
    smallest = (max(kernel[0] - 2 * pads[0], 1), max(kernel[1] - 2 * pads[1], 1))
    derivatives = AvgPool2d(kernel, strides, pads, bool(ceil_mode), bool(count_include_pad), divisor_override)
    return _AVG_POOLS.remember(key, (derivatives, smallest))


def avg_pool_layer(
    input: Tensor,
    kernel_size: Size2,
    stride: Size2 | None,
    padding: Size2,
    ceil_mode: bool,
    count_include_pad: bool,
    divisor_override: int | None,
) -> AvgPool2d:
    """The derivatives object of an ``avg_pool2d`` call, its settings and ``input`` checked."""
    derivatives, smallest = _avg_pool_settings(
        kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
    )
    if not _fits(input, smallest):
        _check_input(input, derivatives.kernel_size, derivatives.stride, derivatives.padding, (1, 1), ceil_mode)
    return derivatives


def avg_pool2d(
    input: Tensor,
    kernel_size: Size2,
    stride: Size2 | None = None,
    padding: Size2 = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> Tensor:
    """z = the mean of each window of the input; backward ∂C/∂x = δ / divisor spread over each window.

    Args:
        input: x, shape ``(N, C, H, W)`` or ``(C, H, W)``.
        kernel_size: the window's ``(height, width)``, or one int for both.
        stride: the step between windows; ``None`` (default) is ``kernel_size``.
        padding: implicit zero padding on each side, at most half the kernel size.
        ceil_mode: count a partial window at the end (rounds the output size up).
        count_include_pad: divide by the window's size including padding (else by its part inside x).
        divisor_override: divide every window's sum by this instead.

    Returns:
        z, shape ``(N, C, H_out, W_out)`` or ``(C, H_out, W_out)``.

    Examples:
        >>> import torch
        >>> avg_pool2d(torch.arange(16.0).reshape(1, 1, 4, 4), 2)
        tensor([[[[ 2.5000,  4.5000],
                  [10.5000, 12.5000]]]])
    """
    derivatives = avg_pool_layer(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
    return apply_layer(derivatives, input)


_ADAPTIVE: SettingsCache[AdaptiveAvgPool2d] = SettingsCache()


def _adaptive_settings(x: Tensor, output_size: int | Sequence[int | None]) -> AdaptiveAvgPool2d:
    """The derivatives object for ``output_size``, its ``None`` entries read from x's height and width."""
    if isinstance(output_size, int) and not isinstance(output_size, bool) and output_size >= 0:
        pair = (output_size, output_size)
    elif isinstance(output_size, Sequence) and len(output_size) == 2:
        h, w = output_size
        pair = (x.shape[-2] if h is None else h, x.shape[-1] if w is None else w)  # type: ignore[assignment]
    else:
        pair = (-1, -1)
    key = settings_key(pair)
    derivatives = _ADAPTIVE.get(key)
    if derivatives is None:
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in pair):
            raise ValueError(
                f"output_size: expected a non-negative integer, or a (height, width) pair of them or None, "
                f"got {output_size!r}"
            )
        derivatives = _ADAPTIVE.remember(key, AdaptiveAvgPool2d(pair))
    return derivatives


def adaptive_avg_pool2d(input: Tensor, output_size: int | Sequence[int | None]) -> Tensor:
    """z = the mean of each of ``output_size`` windows that tile the input (overlapping where the sizes
    do not divide); backward ∂C/∂x = δ spread evenly over each window.

    Window i along an axis of n inputs covers ``[⌊i·n/n_out⌋, ⌈(i+1)·n/n_out⌉)``.

    Args:
        input: x, shape ``(N, C, H, W)`` or ``(C, H, W)``.
        output_size: ``(H_out, W_out)``, one int for both, ``None`` entries keeping the input's size.

    Returns:
        z, shape ``(N, C, H_out, W_out)`` or ``(C, H_out, W_out)``.

    Examples:
        >>> import torch
        >>> adaptive_avg_pool2d(torch.arange(6.0).reshape(1, 1, 2, 3), (1, None))
        tensor([[[[1.5000, 2.5000, 3.5000]]]])
    """
    return apply_layer(adaptive_avg_pool_layer(input, output_size), input)


def adaptive_avg_pool_layer(input: Tensor, output_size: int | Sequence[int | None]) -> AdaptiveAvgPool2d:
    """The derivatives object of an ``adaptive_avg_pool2d`` call, ``input`` checked."""
    if not _fits(input, (1, 1)):
        x = check_tensor("input", input)
        raise ValueError(
            f"input: expected a non-empty 3-D (C, H, W) or 4-D (N, C, H, W) tensor, got shape {shape_text(x)}"
        )
    return _adaptive_settings(input, output_size)
