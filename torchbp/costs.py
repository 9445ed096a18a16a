"""The built-in cost functions: an ordinary plugin, registered through the same hook as any other.

Each cost is its per-example value Cₖ and gradient ∇ₐCₖ; torchbp averages over the batch.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .hookspecs import hookimpl
from .specs import CostSpec
from .targets import as_distribution, check_classes, check_like, check_probabilities


def _per_example(elementwise: Tensor, mean: bool) -> Tensor:
    """Reduce an elementwise cost ``(n, *)`` to one value per example, ``(n,)``."""
    rows = elementwise if elementwise.dim() == 2 else elementwise.reshape(elementwise.shape[0], -1)
    return rows.mean(1) if mean else rows.sum(1)


def _per_example_size(a: Tensor) -> int:
    return a[0].numel()


def _regression_sample(n: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    return torch.rand(n, 3, dtype=dtype), torch.rand(n, 3, dtype=dtype)


def _logits_sample(n: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    return torch.randn(n, 4, dtype=dtype), torch.randint(0, 4, (n,))


def _probability_sample(n: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    return 0.1 + 0.8 * torch.rand(n, 3, dtype=dtype), torch.rand(n, 3, dtype=dtype)


def _binary_logit_sample(n: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    return torch.randn(n, 3, dtype=dtype), torch.rand(n, 3, dtype=dtype)


def _check_regression(a: Tensor, y: Tensor, **_: object) -> None:
    check_like(a, y)


# quadratic: Cₖ = ½ ‖aₖ − yₖ‖²  (halved=False: ‖aₖ − yₖ‖²)
def _quadratic(a: Tensor, y: Tensor, halved: bool = True) -> Tensor:
    squares = _per_example((a - y).square(), mean=False)
    return squares / 2 if halved else squares


def _quadratic_mean(a: Tensor, y: Tensor, halved: bool = True) -> Tensor:
    # C = (1/n) Σₖ ½ ‖aₖ − yₖ‖²: one sum over every element
    return (a - y).square().sum() / (2 * a.shape[0] if halved else a.shape[0])


def _quadratic_gradient(a: Tensor, y: Tensor, halved: bool = True) -> Tensor:
    # ∇ₐCₖ = aₖ − yₖ  (2 (aₖ − yₖ) un-halved)
    return (a - y) if halved else 2 * (a - y)


# mse: Cₖ = mean over the example's m elements of (aₖ − yₖ)², so C = F.mse_loss(a, y)
def _mse(a: Tensor, y: Tensor) -> Tensor:
    return _per_example((a - y).square(), mean=True)


def _mse_mean(a: Tensor, y: Tensor) -> Tensor:
    # every example has the same m elements, so the mean of the means is the mean of all
    return (a - y).square().mean()


def _mse_gradient(a: Tensor, y: Tensor) -> Tensor:
    # ∇ₐCₖ = 2 (aₖ − yₖ) / m
    return 2 * (a - y) / _per_example_size(a)


# cross_entropy from logits z: Cₖ = −Σ_c yₖc log softmax(zₖ)_c
def _smoothed(z: Tensor, y: Tensor, label_smoothing: float) -> Tensor:
    target = as_distribution(z, y)
    if label_smoothing:
        target = target * (1 - label_smoothing) + label_smoothing / z.shape[1]
    return target


def _cross_entropy(z: Tensor, y: Tensor, label_smoothing: float = 0.0) -> Tensor:
    return -(_smoothed(z, y, label_smoothing) * torch.log_softmax(z, 1)).sum(1)


def _cross_entropy_mean(z: Tensor, y: Tensor, label_smoothing: float = 0.0) -> Tensor:
    target = y if y.is_floating_point() else y.long()
    return torch.nn.functional.cross_entropy(z, target, label_smoothing=label_smoothing)


def _cross_entropy_gradient(z: Tensor, y: Tensor, label_smoothing: float = 0.0) -> Tensor:
    # ∇_z Cₖ = softmax(zₖ) − yₖ
    return torch.softmax(z, 1) - _smoothed(z, y, label_smoothing)


def _check_cross_entropy(z: Tensor, y: Tensor, label_smoothing: float = 0.0) -> None:
    check_classes(z, y, "cross_entropy")


def _check_label_smoothing(label_smoothing: float) -> None:
    # as torch.nn.functional.cross_entropy
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing: expected a value in [0, 1], got {label_smoothing}")


# binary_cross_entropy from probabilities a: Cₖ = mean of −[y log a + (1 − y) log(1 − a)]
_LOG_FLOOR = -100.0  # torch.nn.functional.binary_cross_entropy clamps log at −100
_EPSILON = 1e-12  # and its gradient's denominator at 1e-12


def _binary_cross_entropy(a: Tensor, y: Tensor) -> Tensor:
    log_a = torch.log(a).clamp_min(_LOG_FLOOR)
    log_not_a = torch.log1p(-a).clamp_min(_LOG_FLOOR)
    return _per_example(-(y * log_a + (1 - y) * log_not_a), mean=True)


def _binary_cross_entropy_mean(a: Tensor, y: Tensor) -> Tensor:
    return torch.nn.functional.binary_cross_entropy(a, y)


def _binary_cross_entropy_gradient(a: Tensor, y: Tensor) -> Tensor:
    # ∇ₐCₖ = (a − y) / (a (1 − a)) / m
    return (a - y) / (a * (1 - a)).clamp_min(_EPSILON) / _per_example_size(a)


def _check_binary(a: Tensor, y: Tensor) -> None:
    check_like(a, y)
    check_probabilities("output", a)
    check_probabilities("target", y)


# binary_cross_entropy_with_logits: Cₖ = mean of softplus(z) − y z
def _binary_cross_entropy_with_logits(z: Tensor, y: Tensor) -> Tensor:
    softplus = z.clamp_min(0) + torch.log1p(torch.exp(-z.abs()))
    return _per_example(softplus - y * z, mean=True)


def _binary_cross_entropy_with_logits_mean(z: Tensor, y: Tensor) -> Tensor:
    return torch.nn.functional.binary_cross_entropy_with_logits(z, y)


def _binary_cross_entropy_with_logits_gradient(z: Tensor, y: Tensor) -> Tensor:
    # ∇_z Cₖ = (sigmoid(z) − y) / m
    return (torch.sigmoid(z) - y) / _per_example_size(z)


def _check_binary_logits(z: Tensor, y: Tensor) -> None:
    check_like(z, y)
    check_probabilities("target", y)


COSTS = [
    CostSpec(
        "quadratic",
        "C = (1/n) Σₖ ½‖aₖ − yₖ‖² (halved=False: without the ½); ∇ₐC = a − y",
        _quadratic,
        _quadratic_gradient,
        _regression_sample,
        {"halved": True},
        _check_regression,
        mean=_quadratic_mean,
    ),
    CostSpec(
        "mse",
        "mean squared error over all elements, equal to torch.nn.functional.mse_loss",
        _mse,
        _mse_gradient,
        _regression_sample,
        {},
        _check_regression,
        mean=_mse_mean,
    ),
    CostSpec(
        "cross_entropy",
        "softmax cross-entropy from logits (class-index or probability targets), "
        "equal to torch.nn.functional.cross_entropy; δ = softmax(z) − y",
        _cross_entropy,
        _cross_entropy_gradient,
        _logits_sample,
        {"label_smoothing": 0.0},
        _check_cross_entropy,
        class_targets=True,
        mean=_cross_entropy_mean,
        check_options=_check_label_smoothing,
    ),
    CostSpec(
        "binary_cross_entropy",
        "binary cross-entropy from probabilities, equal to torch.nn.functional.binary_cross_entropy",
        _binary_cross_entropy,
        _binary_cross_entropy_gradient,
        _probability_sample,
        {},
        _check_binary,
        mean=_binary_cross_entropy_mean,
    ),
    CostSpec(
        "binary_cross_entropy_with_logits",
        "binary cross-entropy from logits, equal to "
        "torch.nn.functional.binary_cross_entropy_with_logits; δ = sigmoid(z) − y",
        _binary_cross_entropy_with_logits,
        _binary_cross_entropy_with_logits_gradient,
        _binary_logit_sample,
        {},
        _check_binary_logits,
        mean=_binary_cross_entropy_with_logits_mean,
    ),
]


@hookimpl
def torchbp_costs() -> list[CostSpec]:
    return COSTS
