"""``fit``'s own checks of what it is given, made before anything is built or written.

Each error names the argument, what was expected and what came.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import TensorDataset

_FIT_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "cost": ((str,), "a registered cost's name"),
    "rule": ((str,), "a registered rule's name"),
    "logdir": ((str, os.PathLike, type(None)), "a path or None"),
    "resume": ((str, os.PathLike, type(None)), "a run directory or None"),
    "name": ((str,), "text"),
    "cost_options": ((Mapping, type(None)), "a dict of option values or None"),
    "config": ((Mapping, type(None)), "a dict of settings or None"),
    "verbose": ((bool,), "True or False"),
    "graph_free": ((bool, type(None)), "True, False or None"),
}


def _integer(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int >= {low}, got {value!r} ({type(value).__name__})")
    if value < low:
        raise ValueError(f"{name}: expected an int >= {low}, got {value}")


def check_fit_arguments(*, lr: Any, epochs: Any, batch_size: Any, seed: Any, threads: Any, **others: Any) -> None:
    """Types and ranges of ``fit``'s own arguments (the rule's hyperparameters are the rule's)."""
    for name, value in others.items():
        kinds, expected = _FIT_TYPES[name]
        if not isinstance(value, kinds):
            raise TypeError(f"{name}: expected {expected}, got {value!r} ({type(value).__name__})")
    _integer("epochs", epochs, 0)
    _integer("batch_size", batch_size, 1)
    if seed is not None:
        _integer("seed", seed, 0)
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads: expected a positive int or None, got {threads!r}")
    if isinstance(lr, Tensor) and lr.numel() == 1:
        lr = float(lr)
    if isinstance(lr, bool) or not isinstance(lr, int | float):
        raise TypeError(f"lr: expected a finite float >= 0, got {lr!r} ({type(lr).__name__})")
    if not math.isfinite(lr) or lr < 0:
        raise ValueError(f"lr: expected a finite float >= 0, got {lr}")
    check_name(others["name"])


def check_name(name: str) -> str:
    """A run name is one directory level: no path separators, not ``.`` or ``..``, not empty."""
    separators = {"/", "\\", os.sep, os.altsep or "/"}
    if not name or name in (".", "..") or any(s in name for s in separators) or "\0" in name:
        raise ValueError(
            f"name: expected a plain directory name (no '/', '\\\\', '.' or '..'), got {name!r}; "
            "the run goes to logdir/name/version_N"
        )
    return name


def check_finite(where: str, tensor: Tensor) -> None:
    """Refuse a floating-point tensor holding NaN or ±inf, naming the first such element's index."""
    if not tensor.is_floating_point() or tensor.numel() == 0:
        return
    finite = torch.isfinite(tensor)
    if bool(finite.all()):
        return
    bad = (~finite).nonzero()
    first = tuple(int(i) for i in bad[0])
    value = tensor[first].item()
    index = first[0] if len(first) == 1 else first
    raise ValueError(
        f"{where}: expected finite numbers, got {value} at index {index} "
        f"({len(bad)} non-finite element{'s' if len(bad) > 1 else ''} in all); "
        "clean or impute the data before training"
    )


def check_finite_data(name: str, data: Any) -> None:
    """The inputs and targets of tensor data (a pair, or a two-tensor ``TensorDataset``) are finite."""
    if isinstance(data, TensorDataset) and len(data.tensors) == 2:
        data = data.tensors
    if isinstance(data, tuple | list) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
        check_finite(f"{name} inputs", data[0])
        check_finite(f"{name} targets", data[1])


_PROBABILITY_OUTPUTS = ("sigmoid", "softmax")
_LOGIT_COSTS = ("cross_entropy", "binary_cross_entropy_with_logits")


def _output_activation(model: torch.nn.Module) -> str | None:
    """The name of the model's last activation when it is visible: an MLP's, or a Sequential's last module."""
    from ..nn import MLP

    if isinstance(model, MLP):
        return str(model.dense_layers[-1].activation.name)
    if isinstance(model, torch.nn.Sequential) and len(model):
        return type(model[-1]).__name__.lower()
    return None


def warn_if_probabilities_into_logit_cost(model: torch.nn.Module, cost: str) -> None:
    """Warn when a cost that takes logits follows a sigmoid or softmax output."""
    activation = _output_activation(model)
    if cost in _LOGIT_COSTS and activation in _PROBABILITY_OUTPUTS:
        warnings.warn(
            f"cost {cost!r} expects logits (raw scores), but the model's output goes through {activation}; "
            f"use output_activation 'identity' (--output-activation identity), or a cost for probabilities",
            UserWarning,
            stacklevel=3,
        )
