"""``conv1d``, ``conv2d`` and ``pad``: ``torch.nn.functional``'s signatures, with the explicit
backward of ``torchbp.derivatives.conv`` (BP2 as a transposed convolution, BP4 as a
correlation, BP3 as a sum), and ``on_delta``, called with δ = ∂C/∂z.

The layer settings (stride, padding, dilation, groups) become a frozen
``Conv`` once per distinct call and are looked up after that; the
tensors get a quick consistency test, and the full checks with their errors run only when it fails.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

from torch import Tensor

from ..derivatives.conv import PAD_MODES, Conv, Pad
from .checks import autocast_args, check_same, check_tensor, shape_text
from .factory import apply_layer, function_for
from .settings_cache import SettingsCache, settings_key

__all__ = ["conv1d", "conv2d", "pad"]

OnDelta = Callable[[Tensor], None]


class _Settings(NamedTuple):
    """One convolution's settings: the layer, the extra zeros of ``padding="same"`` with an even
    (dilated) kernel (ATen puts the odd one on the right), and how many that adds per dimension."""

    conv: Conv
    extra: Pad | None
    odd: tuple[int, ...]


_SETTINGS: SettingsCache[_Settings] = SettingsCache()
_PADS: SettingsCache[Pad] = SettingsCache()

# the Functions are made now: Dynamo cannot trace the making of a class, so a first call under
# torch.compile would break the graph there
function_for(Conv)
function_for(Pad)


def _ints(name: str, value: object, d: int, minimum: int) -> tuple[int, ...]:
    """``value`` (an int, or ``d`` ints) as a tuple of ``d`` ints ≥ ``minimum``, or a ``ValueError``."""
    values = (value,) * d if isinstance(value, int) else tuple(value) if isinstance(value, Sequence) else ()
    if len(values) != d or not all(isinstance(v, int) and v >= minimum for v in values):
        raise ValueError(f"{name}: expected an int or a tuple of {d} ints, each ≥ {minimum}, got {value!r}")
    return values  # type: ignore[return-value]


def _check_weight(d: int, weight: object) -> Tensor:
    weight = check_tensor("weight", weight)
    if weight.dim() != d + 2:
        kernel = ", ".join(["k"] * d)
        raise ValueError(
            f"weight: expected a {d + 2}-D tensor of shape (out_channels, in_channels / groups, {kernel}) "
            f"for conv{d}d, got shape {shape_text(weight)}"
        )
    return weight


def _settings(d: int, stride: object, padding: object, dilation: object, groups: object, weight: object) -> _Settings:
    """The checked settings of a ``conv{d}d`` call as a ``Conv``."""
    kernel = _check_weight(d, weight).shape[2:]
    strides = _ints("stride", stride, d, 1)
    dilations = _ints("dilation", dilation, d, 1)
    if not isinstance(groups, int) or groups < 1:
        raise ValueError(f"groups: expected a positive int, got {groups!r}")
    extra, odd = None, (0,) * d
    if padding == "valid":
        pads = (0,) * d
    elif padding == "same":
        if any(s != 1 for s in strides):
            raise ValueError(
                f"padding: 'same' is not supported for strided convolutions (stride {strides}); give it as ints"
            )
        totals = [dil * (k - 1) for dil, k in zip(dilations, kernel)]
        pads, odd = tuple(t // 2 for t in totals), tuple(t % 2 for t in totals)
        if any(odd):
            extra = Pad(tuple(v for o in reversed(odd) for v in (0, o)))
    elif isinstance(padding, str):
        raise ValueError(f"padding: expected 'same', 'valid', an int or a tuple of {d} ints, got {padding!r}")
    else:
        pads = _ints("padding", padding, d, 0)
    return _Settings(Conv(strides, pads, dilations, groups), extra, odd)


def _consistent(x: Tensor, weight: Tensor, bias: Tensor | None, settings: _Settings) -> bool:
    """The quick answer for the usual case: channels, kernel and bias fit, one floating dtype, one device."""
    conv = settings.conv
    try:
        w, shape = weight.shape, x.shape
        d = len(conv.stride)
        if len(w) != d + 2 or len(shape) not in (d + 1, d + 2) or not x.is_floating_point():
            return False
        if x.dtype != weight.dtype or x.get_device() != weight.get_device():
            return False
        if shape[-d - 1] != w[1] * conv.groups or w[0] % conv.groups:
            return False
        if bias is not None and (
            bias.shape != (w[0],) or bias.dtype != weight.dtype or bias.get_device() != weight.get_device()
        ):
            return False
        for size, k, p, dil, o in zip(shape[-d:], w[2:], conv.padding, conv.dilation, settings.odd):
            if size + 2 * p + o < dil * (k - 1) + 1:
                return False
    except (AttributeError, TypeError):
        return False
    return True


def _check(d: int, x: object, weight: object, bias: object, settings: _Settings) -> None:
    """The full checks, each raising an error that names the argument, what was expected and what came."""
    x = check_tensor("input", x)
    weight = _check_weight(d, weight)
    if x.dim() not in (d + 1, d + 2):
        names = ", ".join(["L"] if d == 1 else ["H", "W"] if d == 2 else ["D", "H", "W"])
        raise ValueError(
            f"input: expected a {d + 1}-D (unbatched) or {d + 2}-D (batched) tensor of shape "
            f"([N,] C_in, {names}) for conv{d}d, got shape {shape_text(x)}"
        )
    check_same("input", x, "weight", weight)
    conv = settings.conv
    groups, out_channels, group_channels = conv.groups, weight.shape[0], weight.shape[1]
    if out_channels % groups:
        raise ValueError(
            f"weight: expected out_channels (dim 0) divisible by groups={groups}, got shape {shape_text(weight)}"
        )
    if x.shape[-d - 1] != group_channels * groups:
        raise ValueError(
            f"input: expected {group_channels * groups} channels in dim {x.dim() - d - 1} "
            f"(weight's in_channels / groups = {group_channels}, times groups={groups}), got shape {shape_text(x)}"
        )
    if bias is not None:
        bias = check_tensor("bias", bias)
        if bias.shape != (out_channels,):
            raise ValueError(
                f"bias: expected shape ({out_channels},) to match weight of shape {shape_text(weight)}, "
                f"got shape {shape_text(bias)}"
            )
        check_same("bias", bias, "weight", weight)
    spatial, kernel = tuple(x.shape[-d:]), tuple(weight.shape[2:])
    padded = tuple(size + 2 * p + o for size, p, o in zip(spatial, conv.padding, settings.odd))
    reach = tuple(dil * (k - 1) + 1 for dil, k in zip(conv.dilation, kernel))
    if any(p < r for p, r in zip(padded, reach)):
        raise ValueError(
            f"input: spatial size {spatial} padded to {padded} is smaller than the kernel {kernel} "
            f"dilated by {conv.dilation}, which spans {reach}; got input shape {shape_text(x)}"
        )


def conv_settings(
    d: int, stride: object, padding: object, dilation: object, groups: object, weight: Tensor
) -> _Settings:
    """The settings of a ``conv{d}d`` call, checked once per distinct call and then looked up."""
    key = settings_key(d, stride, padding, dilation, groups, weight.shape[2:] if padding == "same" else None)
    settings = _SETTINGS.get(key)
    if settings is None:
        settings = _SETTINGS.remember(key, _settings(d, stride, padding, dilation, groups, weight))
    return settings


def checked_settings(
    d: int,
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: object,
    padding: object,
    dilation: object,
    groups: object,
) -> _Settings:
    """``conv_settings``, with the tensors checked against them (an error naming what does not fit)."""
    settings = conv_settings(d, stride, padding, dilation, groups, weight)
    if not _consistent(input, weight, bias, settings):
        _check(d, input, weight, bias, settings)
    return settings


def _convolution(
    d: int,
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: object,
    padding: object,
    dilation: object,
    groups: object,
    on_delta: OnDelta | None,
) -> Tensor:
    input, weight, bias = autocast_args(input, weight, bias)
    settings = checked_settings(d, input, weight, bias, stride, padding, dilation, groups)
    if settings.extra is not None:
        input = apply_layer(settings.extra, input)
    return apply_layer(settings.conv, input, (weight, bias), on_delta)


def conv1d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int | tuple[int, ...] = 1,
    padding: str | int | tuple[int, ...] = 0,
    dilation: int | tuple[int, ...] = 1,
    groups: int = 1,
    on_delta: OnDelta | None = None,
) -> Tensor:
    """z = W ⋆ x + b over one spatial dimension, with the explicit backward
    ∂C/∂x = Wᵀ ⋆ δ (BP2), ∂C/∂W = x ⋆ δ (BP4), ∂C/∂b = Σ δ (BP3).

    Args:
        input: x, shape ``(N, C_in, L)`` or ``(C_in, L)``.
        weight: W, shape ``(C_out, C_in / groups, k)``.
        bias: b, shape ``(C_out,)``, or ``None``.
        stride: s, an int or a 1-tuple.
        padding: zeros on both sides: an int, a 1-tuple, ``"valid"`` (none) or ``"same"``
            (output as long as the input; stride 1 only).
        dilation: the spacing of the kernel's taps.
        groups: the number of blocks the channels are split into.
        on_delta: called with δ = ∂C/∂z, shape ``(N, C_out, L_out)``, during the backward pass.

    Returns:
        z, shape ``(N, C_out, L_out)`` (or ``(C_out, L_out)``),
        ``L_out = ⌊(L + 2·padding − dilation·(k − 1) − 1) / stride⌋ + 1``.

    Examples:
        >>> import torch
        >>> conv1d(torch.ones(1, 2, 5), torch.ones(3, 2, 3), padding="same").shape
        torch.Size([1, 3, 5])
    """
    return _convolution(1, input, weight, bias, stride, padding, dilation, groups, on_delta)


def conv2d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int | tuple[int, ...] = 1,
    padding: str | int | tuple[int, ...] = 0,
    dilation: int | tuple[int, ...] = 1,
    groups: int = 1,
    on_delta: OnDelta | None = None,
) -> Tensor:
    """z = W ⋆ x + b over two spatial dimensions, with the explicit backward
    ∂C/∂x = Wᵀ ⋆ δ (BP2), ∂C/∂W = x ⋆ δ (BP4), ∂C/∂b = Σ δ (BP3).

    Args:
        input: x, shape ``(N, C_in, H, W)`` or ``(C_in, H, W)``.
        weight: W, shape ``(C_out, C_in / groups, kH, kW)``.
        bias: b, shape ``(C_out,)``, or ``None``.
        stride: s, an int or a pair.
        padding: zeros on both sides: an int, a pair, ``"valid"`` (none) or ``"same"`` (output
            as large as the input; stride 1 only; with an even kernel the odd zero goes after).
        dilation: the spacing of the kernel's taps.
        groups: the number of blocks the channels are split into.
        on_delta: called with δ = ∂C/∂z, shape ``(N, C_out, H_out, W_out)``, during the backward pass.

    Returns:
        z, shape ``(N, C_out, H_out, W_out)`` (or ``(C_out, H_out, W_out)``), each
        ``⌊(size + 2·padding − dilation·(k − 1) − 1) / stride⌋ + 1``.

    Examples:
        >>> import torch
        >>> conv2d(torch.ones(1, 3, 6, 6), torch.ones(4, 3, 3, 3), stride=2).shape
        torch.Size([1, 4, 2, 2])
    """
    return _convolution(2, input, weight, bias, stride, padding, dilation, groups, on_delta)


def _pad_layer(pad: object, mode: object, value: float | None) -> Pad:
    if mode not in PAD_MODES:
        raise ValueError(f"mode: expected one of {', '.join(map(repr, PAD_MODES))}, got {mode!r}")
    pads = tuple(pad) if isinstance(pad, Sequence) else ()
    if not pads or len(pads) % 2 or not all(isinstance(p, int) for p in pads):
        raise ValueError(f"pad: expected an even number of ints (left, right of the last dimension, …), got {pad!r}")
    if mode == "constant":
        return Pad(pads, "constant", float(value or 0.0))
    if value:
        raise ValueError(f"value: {mode!r} padding takes no value (only 'constant' does), got {value!r}")
    if any(p < 0 for p in pads):
        raise ValueError(f"pad: {mode!r} padding expected non-negative ints, got {pad!r}")
    return Pad(pads, str(mode))


def _check_pad(x: object, layer: Pad) -> Tensor:
    x = check_tensor("input", x)
    k = len(layer.pad) // 2
    if k > x.dim() or (layer.mode != "constant" and x.dim() not in (k + 1, k + 2)):
        expected = f"at least {k}" if layer.mode == "constant" else f"{k + 1} or {k + 2}"
        raise ValueError(
            f"input: {layer.mode!r} padding of {k} dimension(s) expected a tensor of {expected} dimensions, "
            f"got shape {shape_text(x)}"
        )
    if layer.mode in ("reflect", "circular"):
        for i in range(k):
            size, left, right = x.shape[-1 - i], layer.pad[2 * i], layer.pad[2 * i + 1]
            limit = size - 1 if layer.mode == "reflect" else size
            if max(left, right) > limit:
                raise ValueError(
                    f"pad: {layer.mode!r} padding of dim {x.dim() - 1 - i} (size {size}) expected each side "
                    f"≤ {limit}, got ({left}, {right}); input shape {shape_text(x)}"
                )
    return x


def pad(input: Tensor, pad: Sequence[int], mode: str = "constant", value: float | None = None) -> Tensor:
    """``input`` padded as ``torch.nn.functional.pad`` pads it, with the explicit backward
    ∂C/∂x[i] = Σ_{j copies i} δ[j] (for ``"constant"``: δ cropped back to the input's positions).

    Args:
        input: x, shape ``(*, *padded)``; for the modes other than ``"constant"``,
            ``([N,] C, *padded)`` with one to three padded dimensions.
        pad: left and right of the last dimension, then of the one before, …
        mode: ``"constant"``, ``"reflect"``, ``"replicate"`` or ``"circular"``.
        value: the constant of ``"constant"`` mode (0 if ``None``).

    Returns:
        the padded tensor, each padded dimension ``left + size + right`` long.

    Examples:
        >>> import torch
        >>> pad(torch.tensor([[[1.0, 2.0, 3.0]]]), (2, 1), "reflect")
        tensor([[[3., 2., 1., 2., 3., 2.]]])
    """
    key = settings_key(tuple(pad) if isinstance(pad, Sequence) else pad, mode, value)
    layer = _PADS.get(key)
    if layer is None:
        layer = _PADS.remember(key, _pad_layer(pad, mode, value))
    return apply_layer(layer, _check_pad(input, layer))
