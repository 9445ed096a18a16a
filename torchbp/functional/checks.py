"""Argument checks that turn a bad call into an error naming the argument, what was expected and what came."""

from __future__ import annotations

from typing import TypeVar

import torch
from torch import Tensor

from ..derivatives.base import LOW_PRECISION
from .internals import any_autocast


def shape_text(t: Tensor) -> str:
    """A tensor's shape as ``(4, 3)``, for error messages."""
    return "(" + ", ".join(str(s) for s in t.shape) + ")"


def check_tensor(name: str, value: object) -> Tensor:
    """Raise ``TypeError`` unless ``value`` is a floating-point tensor."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(value).__name__}")
    if not value.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got dtype {value.dtype}")
    return value


def dtype_goes_with(input_dtype: torch.dtype, dtype: torch.dtype) -> bool:
    """Whether statistics or parameters of ``dtype`` go with an input of ``input_dtype``: the same
    dtype, or float32 with a float16/bfloat16 input, as in torch's batch and layer norms."""
    return dtype == input_dtype or (input_dtype in LOW_PRECISION and dtype == torch.float32)


def check_same(name: str, value: Tensor, ref_name: str, ref: Tensor) -> None:
    """Raise ``TypeError``/``ValueError`` unless ``value`` has the dtype and device of ``ref``."""
    if value.dtype != ref.dtype:
        raise TypeError(f"{name}: expected dtype {ref.dtype} (the dtype of {ref_name}), got {value.dtype}")
    if value.device != ref.device:
        raise ValueError(f"{name}: expected device {ref.device} (the device of {ref_name}), got {value.device}")


def check_linear(
    x: object, weight: object, bias: object, names: tuple[str, str, str] = ("x", "weight", "bias")
) -> None:
    """Check the arguments of z = x Wᵀ + b: ``x (*, in)``, ``weight (out, in)``, ``bias (out,)``."""
    if _linear_fits(x, weight, bias):
        return
    x_name, weight_name, bias_name = names
    weight = check_tensor(weight_name, weight)
    x = check_tensor(x_name, x)
    if weight.dim() != 2:
        raise ValueError(
            f"{weight_name}: expected a 2-D tensor of shape (out_features, in_features), got shape {shape_text(weight)}"
        )
    out_features, in_features = weight.shape
    if x.dim() == 0 or x.shape[-1] != in_features:
        raise ValueError(
            f"{x_name}: expected shape (*, {in_features}) to match {weight_name} of shape "
            f"({out_features}, {in_features}), got shape {shape_text(x)}"
        )
    check_same(x_name, x, weight_name, weight)
    _check_bias(bias_name, bias, weight_name, weight)


def _linear_fits(x: object, weight: object, bias: object) -> bool:
    """The quick answer for the usual case: shapes that fit, one floating dtype, one device."""
    if not (isinstance(x, Tensor) and isinstance(weight, Tensor) and x.is_floating_point()):
        return False
    shape, dtype, device = weight.shape, weight.dtype, weight.device
    # x.shape[-1:] is () for a 0-d x, which fits no weight
    if len(shape) != 2 or x.shape[-1:] != shape[1:] or x.dtype != dtype or x.device != device:
        return False
    return bias is None or (
        isinstance(bias, Tensor) and bias.shape == shape[:1] and bias.dtype == dtype and bias.device == device
    )


def _check_bias(name: str, bias: object, weight_name: str, weight: Tensor) -> None:
    if bias is None:
        return
    bias = check_tensor(name, bias)
    if bias.shape != (weight.shape[0],):
        raise ValueError(
            f"{name}: expected shape ({weight.shape[0]},) to match {weight_name} of shape "
            f"{shape_text(weight)}, got shape {shape_text(bias)}"
        )
    check_same(name, bias, weight_name, weight)


def _consistent(x: Tensor, params: list[Tensor | None]) -> bool:
    """The quick answer for the usual case: all shapes chain, one floating dtype, one device."""
    try:
        if not x.is_floating_point():
            return False
        width, dtype, device = x.shape[-1], x.dtype, x.get_device()
        pairs = iter(params)
        for weight, bias in zip(pairs, pairs):
            shape = weight.shape  # type: ignore[union-attr]
            if len(shape) != 2 or shape[1] != width or weight.dtype != dtype or weight.get_device() != device:  # type: ignore[union-attr]
                return False
            width = shape[0]
            if bias is not None and (bias.shape != (width,) or bias.dtype != dtype or bias.get_device() != device):
                return False
    except (AttributeError, IndexError, TypeError):
        return False
    return True


def check_stack(x: object, params: list[Tensor | None]) -> None:
    """Check a stack of layers, ``params`` = ``[W¹, b¹, W², b², …]``: each layer's input width is
    the previous layer's output width."""
    if isinstance(x, Tensor) and _consistent(x, params):
        return
    check_linear(x, params[0], params[1], ("x", "weights[0]", "biases[0]"))
    for l in range(1, len(params) // 2):
        previous, name = params[2 * l - 2], f"weights[{l}]"
        assert previous is not None
        weight = check_tensor(name, params[2 * l])
        if weight.dim() != 2 or weight.shape[1] != previous.shape[0]:
            raise ValueError(
                f"{name}: expected shape (n, {previous.shape[0]}) to follow weights[{l - 1}] of shape "
                f"{shape_text(previous)}, got shape {shape_text(weight)}"
            )
        check_same(name, weight, "weights[0]", params[0])  # type: ignore[arg-type]
        _check_bias(f"biases[{l}]", params[2 * l + 1], name, weight)


def check_dim(name: str, x: Tensor, dim: int) -> None:
    """Raise ``IndexError`` unless ``dim`` is a valid dimension of ``x``."""
    if not -max(x.dim(), 1) <= dim < max(x.dim(), 1):
        raise IndexError(
            f"{name}: dim {dim} is out of range for a tensor of shape {shape_text(x)} "
            f"(expected a dim in [{-max(x.dim(), 1)}, {max(x.dim(), 1) - 1}])"
        )


def autocast_dtype(x: Tensor) -> torch.dtype | None:
    """The dtype autocast asks for on ``x``'s device, or ``None`` where autocast is off or leaves
    x alone (float64, which autocast never casts)."""
    if not any_autocast() or x.dtype == torch.float64:
        return None
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return None


_T = TypeVar("_T", Tensor, Tensor | None)


def cast_floating(t: _T, dtype: torch.dtype) -> _T:
    """``t`` in autocast's ``dtype`` if it is a tensor autocast casts (floating point, not float64),
    as ``torch.nn.functional.linear`` casts. A copy of a parameter (a leaf that needs a gradient, or
    a view of one) remembers it (``cast_from``), so that per-example quantities find the parameter
    behind the copy its layer computed with; a copy of an activation does not keep it alive."""
    if not isinstance(t, Tensor) or not t.is_floating_point() or t.dtype in (dtype, torch.float64):
        return t
    cast = t.to(dtype)
    parameter = t.is_leaf or (t._base is not None and t._base.is_leaf)
    if t.requires_grad and parameter and not torch.compiler.is_compiling():
        cast.__dict__[_CAST_FROM] = t
    return cast


_CAST_FROM = "_torchbp_cast_from"


def cast_from(t: Tensor) -> Tensor:
    """The tensor ``t`` was cast from by ``cast_floating`` (a parameter, or a view of one), else ``t``."""
    return t.__dict__.get(_CAST_FROM, t)  # type: ignore[no-any-return]


def autocast_args(x: Tensor, weight: Tensor, bias: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
    """Under autocast, a layer's floating-point arguments in the dtype autocast asks for (as
    ``torch.nn.functional.linear`` and ``conv2d`` cast them); outside it, the arguments as they are."""
    dtype = autocast_dtype(x) if isinstance(x, Tensor) else None
    if dtype is None:
        return x, weight, bias
    return cast_floating(x, dtype), cast_floating(weight, dtype), cast_floating(bias, dtype)
