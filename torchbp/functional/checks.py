"""Argument checks that turn a bad call into an error naming the argument, what was expected and what came."""

from __future__ import annotations

import torch
from torch import Tensor


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


def check_same(name: str, value: Tensor, ref_name: str, ref: Tensor) -> None:
    """Raise ``TypeError``/``ValueError`` unless ``value`` has the dtype and device of ``ref``."""
    if value.dtype != ref.dtype:
        raise TypeError(f"{name}: expected dtype {ref.dtype} (the dtype of {ref_name}), got {value.dtype}")
    if value.device != ref.device:
        raise ValueError(f"{name}: expected device {ref.device} (the device of {ref_name}), got {value.device}")


def check_linear(x: object, weight: object, bias: object) -> None:
    """Check the arguments of z = x Wᵀ + b: ``x (*, in)``, ``weight (out, in)``, ``bias (out,)``."""
    weight = check_tensor("weight", weight)
    x = check_tensor("x", x)
    if weight.dim() != 2:
        raise ValueError(
            f"weight: expected a 2-D tensor of shape (out_features, in_features), got shape {shape_text(weight)}"
        )
    out_features, in_features = weight.shape
    if x.dim() == 0 or x.shape[-1] != in_features:
        raise ValueError(
            f"x: expected shape (*, {in_features}) to match weight of shape "
            f"({out_features}, {in_features}), got shape {shape_text(x)}"
        )
    check_same("x", x, "weight", weight)
    if bias is not None:
        bias = check_tensor("bias", bias)
        if bias.shape != (out_features,):
            raise ValueError(
                f"bias: expected shape ({out_features},) to match weight of shape "
                f"({out_features}, {in_features}), got shape {shape_text(bias)}"
            )
        check_same("bias", bias, "weight", weight)


def check_dim(name: str, x: Tensor, dim: int) -> None:
    """Raise ``IndexError`` unless ``dim`` is a valid dimension of ``x``."""
    if not -max(x.dim(), 1) <= dim < max(x.dim(), 1):
        raise IndexError(
            f"{name}: dim {dim} is out of range for a tensor of shape {shape_text(x)} "
            f"(expected a dim in [{-max(x.dim(), 1)}, {max(x.dim(), 1) - 1}])"
        )


def autocast_dtype(x: Tensor) -> torch.dtype | None:
    """The dtype autocast asks for on ``x``'s device, or ``None`` where autocast is off."""
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return None
