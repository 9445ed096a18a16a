"""Checks on targets that cost plugins share; each error names what was expected and what came."""

from __future__ import annotations

import torch
from torch import Tensor

from .functional.checks import shape_text as _shape


def check_output(a: object) -> Tensor:
    """The network output must be a floating-point tensor with a batch dimension."""
    if not isinstance(a, Tensor):
        raise TypeError(f"output: expected a torch.Tensor, got {type(a).__name__}")
    if not a.is_floating_point():
        raise TypeError(f"output: expected a floating-point tensor, got dtype {a.dtype}")
    if a.dim() == 0:
        raise ValueError("output: expected shape (n, *) with one row per example, got a scalar")
    return a


def check_like(a: Tensor, y: object) -> None:
    """The targets must be a floating-point tensor of the output's shape."""
    if not isinstance(y, Tensor):
        raise TypeError(f"target: expected a torch.Tensor, got {type(y).__name__}")
    if not y.is_floating_point():
        raise TypeError(f"target: expected a floating-point tensor, got dtype {y.dtype}")
    if y.shape != a.shape:
        raise ValueError(f"target: expected shape {_shape(a)} (the output's shape), got {_shape(y)}")


def check_probabilities(name: str, t: Tensor) -> None:
    """Every element of ``t`` must lie in [0, 1]."""
    if t.numel() and not bool(((t >= 0) & (t <= 1)).all()):
        raise ValueError(
            f"{name}: expected probabilities in [0, 1], got values from {t.min().item():.6g} to {t.max().item():.6g}"
        )


def check_classes(logits: Tensor, y: object, cost: str = "this cost") -> None:
    """Targets for ``(n, C)`` logits: class indices ``(n,)`` in [0, C) or probabilities ``(n, C)``.

    One output (C = 1) is refused: a softmax over one class is 1 whatever the logit, so the cost
    would be 0 and nothing would train. ``cost`` names the cost in that message.
    """
    if logits.dim() != 2:
        raise ValueError(f"output: expected logits of shape (n, C), got shape {_shape(logits)}")
    n, classes = logits.shape
    if classes < 2:
        raise ValueError(
            f"output: {cost} needs logits for at least 2 classes, got {classes} output per example "
            "(a softmax over one class is always 1: the cost would be 0 and nothing would train); "
            "give the network one output per class, or use binary_cross_entropy_with_logits for one output"
        )
    if not isinstance(y, Tensor):
        raise TypeError(f"target: expected a torch.Tensor, got {type(y).__name__}")
    if y.is_floating_point():
        if y.shape != logits.shape:
            raise ValueError(
                f"target: expected class probabilities of shape ({n}, {classes}) or class "
                f"indices of shape ({n},), got a floating-point tensor of shape {_shape(y)}"
            )
        check_probabilities("target", y)
        return
    if y.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise TypeError(f"target: expected integer class indices or floating-point probabilities, got dtype {y.dtype}")
    if y.shape != (n,):
        raise ValueError(
            f"target: expected class indices of shape ({n},) for logits of shape "
            f"({n}, {classes}), got shape {_shape(y)}"
        )
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= classes):
        raise ValueError(
            f"target: expected class indices in [0, {classes}), got values from {int(y.min())} to {int(y.max())}"
        )


def as_distribution(logits: Tensor, y: Tensor) -> Tensor:
    """Targets as a ``(n, C)`` distribution: one-hot rows for class indices, probabilities as they are."""
    if y.is_floating_point():
        return y
    return torch.nn.functional.one_hot(y.long(), logits.shape[1]).to(logits.dtype)
