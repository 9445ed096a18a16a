"""Robust-regression and margin costs: per-example value Cₖ and gradient ∇ₐCₖ."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from torchbp import CostSpec
from torchbp.targets import check_classes, check_like


def _mean_per_example(elementwise: Tensor) -> Tensor:
    return elementwise.reshape(elementwise.shape[0], -1).mean(1)


def _size(a: Tensor) -> int:
    return a[0].numel()


def _regression_sample(n: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    return 2 * torch.randn(n, 3, dtype=dtype), torch.randn(n, 3, dtype=dtype)


def _check_regression(a: Tensor, y: Tensor, **_: object) -> None:
    check_like(a, y)


# huber: ½ r² where |r| < δ, else δ (|r| − ½δ);  r = a − y
def _huber(a: Tensor, y: Tensor, delta: float = 1.0) -> Tensor:
    r = a - y
    return _mean_per_example(torch.where(r.abs() < delta, 0.5 * r * r, delta * (r.abs() - 0.5 * delta)))


def _huber_gradient(a: Tensor, y: Tensor, delta: float = 1.0) -> Tensor:
    # ∇ₐCₖ = clamp(r, −δ, δ) / m
    return (a - y).clamp(-delta, delta) / _size(a)


# smooth_l1: ½ r² / β where |r| < β, else |r| − ½β
def _smooth_l1(a: Tensor, y: Tensor, beta: float = 1.0) -> Tensor:
    r = a - y
    if beta == 0:
        return _mean_per_example(r.abs())
    return _mean_per_example(torch.where(r.abs() < beta, 0.5 * r * r / beta, r.abs() - 0.5 * beta))


def _smooth_l1_gradient(a: Tensor, y: Tensor, beta: float = 1.0) -> Tensor:
    # ∇ₐCₖ = r / β where |r| < β, else sign(r); over m
    r = a - y
    if beta == 0:
        return torch.sign(r) / _size(a)
    return torch.where(r.abs() < beta, r / beta, torch.sign(r)) / _size(a)


def _check_delta(delta: float) -> None:
    # as torch.nn.functional.huber_loss
    if delta <= 0:
        raise ValueError(f"delta: expected a value > 0, got {delta}")


def _check_beta(beta: float) -> None:
    # as torch.nn.functional.smooth_l1_loss
    if beta < 0:
        raise ValueError(f"beta: expected a value >= 0, got {beta}")


# log_cosh: log cosh r = r + softplus(−2r) − log 2 (stable for large |r|)
def _log_cosh(a: Tensor, y: Tensor) -> Tensor:
    r = a - y
    return _mean_per_example(r + torch.nn.functional.softplus(-2 * r) - math.log(2.0))


def _log_cosh_gradient(a: Tensor, y: Tensor) -> Tensor:
    # ∇ₐCₖ = tanh(r) / m
    return torch.tanh(a - y) / _size(a)


# multi_margin: (1/C) Σ_{i≠y} max(0, margin − z_y + z_i)
def _margins(z: Tensor, y: Tensor, margin: float) -> tuple[Tensor, Tensor]:
    target = torch.nn.functional.one_hot(y.long(), z.shape[1]).to(torch.bool)
    z_y = z.gather(1, y.long().unsqueeze(1))
    hinge = (margin - z_y + z).masked_fill(target, 0.0)
    return hinge, target


def _multi_margin(z: Tensor, y: Tensor, margin: float = 1.0) -> Tensor:
    hinge, _ = _margins(z, y, margin)
    return hinge.clamp_min(0).sum(1) / z.shape[1]


def _multi_margin_gradient(z: Tensor, y: Tensor, margin: float = 1.0) -> Tensor:
    # ∂/∂z_i = [hinge_i > 0] / C for i ≠ y;  ∂/∂z_y = −Σ_{i≠y} [hinge_i > 0] / C
    hinge, target = _margins(z, y, margin)
    active = (hinge > 0).to(z.dtype)
    return (active - target * active.sum(1, keepdim=True)) / z.shape[1]


def _check_multi_margin(z: Tensor, y: Tensor, margin: float = 1.0) -> None:
    check_classes(z, y, "multi_margin")
    if y.is_floating_point():
        raise TypeError("target: multi_margin expects integer class indices, got probabilities")


def _class_sample(n: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    return torch.randn(n, 4, dtype=dtype), torch.randint(0, 4, (n,))


COSTS = [
    CostSpec(
        "huber",
        "Huber loss, quadratic within delta and linear beyond; equal to torch.nn.functional.huber_loss",
        _huber,
        _huber_gradient,
        _regression_sample,
        {"delta": 1.0},
        _check_regression,
        check_options=_check_delta,
    ),
    CostSpec(
        "smooth_l1",
        "smooth L1 loss (Huber divided by beta); equal to torch.nn.functional.smooth_l1_loss",
        _smooth_l1,
        _smooth_l1_gradient,
        _regression_sample,
        {"beta": 1.0},
        _check_regression,
        check_options=_check_beta,
    ),
    CostSpec(
        "log_cosh",
        "log-cosh loss: about r²/2 near zero and |r| − log 2 far away; ∇ = tanh(a − y)",
        _log_cosh,
        _log_cosh_gradient,
        _regression_sample,
        {},
        _check_regression,
    ),
    CostSpec(
        "multi_margin",
        "multi-class hinge loss from scores; equal to torch.nn.functional.multi_margin_loss",
        _multi_margin,
        _multi_margin_gradient,
        _class_sample,
        {"margin": 1.0},
        _check_multi_margin,
        class_targets=True,
    ),
]
