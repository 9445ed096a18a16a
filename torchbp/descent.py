"""Gradient descent on any differentiable f: ℝⁿ → ℝ, with any registered update rule.

Near x, f(x + ε) ≈ f(x) + ε f′(x): a small step against the gradient, x′ = x − η ∇f(x),
lowers f. ``minimize`` takes such steps with a rule from ``torchbp.create_rule`` (plain
``sgd`` is exactly x′ = x − η∇f; the others are its descendants) and returns the whole path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .registry import create_rule


@dataclass(frozen=True)
class DescentPath:
    """The points x₀, x₁, …, x_T ``(T + 1, *x₀.shape)`` and the values f(xₖ) ``(T + 1,)`` of a descent."""

    points: Tensor
    values: Tensor
    rule: str
    hyperparameters: dict[str, Any] = field(default_factory=dict)


def minimize(
    f: Callable[[Tensor], Tensor],
    x0: Tensor | float | list[float],
    rule: str = "sgd",
    lr: float = 0.1,
    steps: int = 100,
    **hyperparameters: Any,
) -> DescentPath:
    """Run ``steps`` steps of the update rule ``rule`` on f from x₀; return the path.

    Args:
        f: a function of a tensor shaped like ``x0`` returning a scalar, differentiable by autograd.
        x0: the starting point (a number for a function of one variable).
        rule: any registered update rule.
        lr: its learning rate η.
        steps: how many updates.
        **hyperparameters: the rule's other settings.

    Examples:
        >>> path = minimize(lambda x: (x ** 2).sum(), [1.0, -2.0], lr=0.25, steps=2)
        >>> path.points.tolist()
        [[1.0, -2.0], [0.5, -1.0], [0.25, -0.5]]
    """
    if steps < 0:
        raise ValueError(f"steps: expected a number >= 0, got {steps}")
    start = torch.as_tensor(x0)
    if not start.is_floating_point():
        start = start.to(torch.get_default_dtype())
    x = start.detach().clone().requires_grad_()
    update = create_rule(rule, [x], lr=lr, **hyperparameters)
    points, values = [], []
    for step in range(steps + 1):
        value = f(x)
        if not isinstance(value, Tensor) or value.numel() != 1:
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ValueError(f"f: expected a scalar value, got {shape}")
        points.append(x.detach().clone())
        values.append(value.detach().reshape(()))
        if step == steps:
            break
        update.zero_grad()
        value.reshape(()).backward()
        update.step()
    return DescentPath(torch.stack(points), torch.stack(values), rule, {"lr": lr, **hyperparameters})


def bowl(x: Tensor) -> Tensor:
    """A convex quadratic bowl, f(x) = ½ xᵀ A x with A = [[1, 0.5], [0.5, 3]], minimum at 0."""
    a = x.new_tensor([[1.0, 0.5], [0.5, 3.0]])
    return 0.5 * x @ a @ x


def rosenbrock(x: Tensor) -> Tensor:
    """Rosenbrock's banana valley, f(x, y) = (1 − x)² + 100 (y − x²)², minimum at (1, 1)."""
    return (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2


def two_minima(x: Tensor) -> Tensor:
    """Two valleys, f(x, y) = (x² − 1)² + 0.3 x + y², minima near (−1, 0) (lower) and (1, 0)."""
    return (x[0] ** 2 - 1) ** 2 + 0.3 * x[0] + x[1] ** 2
