"""The autograd Function that turns a cost's maths into a batch-averaged loss.

A cost supplies Cₖ = C(aₖ, yₖ) per example and its gradient ∇ₐCₖ. Here C = (1/n) Σₖ Cₖ over
the n examples (rows), and the backward pass hands out ∇ₐC = (1/n) ∇ₐCₖ: the first factor of
the output error δᴸ = ∇ₐC ⊙ σ′(zᴸ) (BP1).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from torch import Tensor
from torch.autograd import Function

from .factory import apply, twin_with_jvp
from .internals import forward_mode


class CostFunction(Function):
    """C = (1/n) Σₖ C(aₖ, yₖ); backward ∂C/∂a = (1/n) ∇ₐC(aₖ, yₖ). Targets get no gradient."""

    generate_vmap_rule = True

    @staticmethod
    def forward(
        a: Tensor,
        y: Tensor,
        mean: Callable[[Tensor, Tensor], Tensor],
        gradient: Callable[[Tensor, Tensor], Tensor],
    ) -> Tensor:
        # C = (1/n) Σₖ Cₖ
        return mean(a, y)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        a, y, _, gradient = inputs
        ctx.gradient = gradient
        ctx.save_for_backward(a, y)
        if forward_mode():
            ctx.save_for_forward(a, y)

    @staticmethod
    def backward(ctx: Any, grad_cost: Tensor) -> tuple[Tensor | None, None, None, None]:
        a, y = ctx.saved_tensors
        n = a.shape[0]
        # BP1's first factor: ∇ₐC = (1/n) ∇ₐCₖ
        return grad_cost * ctx.gradient(a, y) / n, None, None, None

    @staticmethod
    def tangent(ctx: Any, a_t: Tensor, *_: None) -> Tensor:
        a, y = ctx.saved_tensors
        # Ċ = (1/n) Σₖ ⟨∇ₐCₖ, ȧₖ⟩
        return (ctx.gradient(a, y) * a_t).sum() / a.shape[0]


COST_WITH_JVP = twin_with_jvp(CostFunction)


def mean_of_values(value: Callable[[Tensor, Tensor], Tensor], a: Tensor, y: Tensor) -> Tensor:
    """C = (1/n) Σₖ Cₖ from the per-example ``value(a, y)``."""
    return value(a, y).mean()


def cost(
    a: Tensor,
    y: Tensor,
    value: Callable[[Tensor, Tensor], Tensor],
    gradient: Callable[[Tensor, Tensor], Tensor],
    mean: Callable[[Tensor, Tensor], Tensor] | None = None,
) -> Tensor:
    """The batch-averaged cost C = (1/n) Σₖ value(a, y)ₖ, whose backward is ``gradient(a, y) / n``.

    Args:
        a: the network's output, shape ``(n, *)``: one row per example.
        y: the targets.
        value: ``value(a, y) -> (n,)``, the cost of each example.
        gradient: ``gradient(a, y)``, shaped like ``a``: each example's ∇ₐCₖ.
        mean: ``mean(a, y)``, C itself in a faster form, if there is one (it must equal
            ``value(a, y).mean()``).

    Returns:
        The scalar C.
    """
    return apply(
        CostFunction,
        COST_WITH_JVP,
        a,
        y,
        mean if mean is not None else functools.partial(mean_of_values, value),
        gradient,
    )
