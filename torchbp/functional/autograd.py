"""The autograd Functions: each ``backward`` is the δ-recursion, written out.

All Functions use the ``setup_context`` form with ``generate_vmap_rule = True`` so that they
compose with :mod:`torch.func`. Their backward passes are made of differentiable torch ops, so
double backward (``gradgradcheck``, Hessian-vector products) works through them too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor
from torch.autograd import Function

from .activations import Activation
from .layers import dense_backward, dense_forward, linear_backward, linear_forward


class LinearFunction(Function):
    """z = x Wᵀ + b, whose backward is :func:`~torchbp.functional.layers.linear_backward`."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return linear_forward(x, weight, bias)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        x, weight, _ = inputs
        needs_x, needs_weight = ctx.needs_input_grad[:2]
        ctx.save_for_backward(x if needs_weight else None, weight if needs_x else None)

    @staticmethod
    def backward(ctx: Any, delta: Tensor) -> tuple[Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        return linear_backward(delta, x, weight, ctx.needs_input_grad)


class ActivationFunction(Function):
    """a = σ(z), whose backward is δ = ∂C/∂a ⊙ σ′(z) (the JVP for softmax)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(z: Tensor, activation: Activation) -> Tensor:
        return activation(z)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        z, activation = inputs
        ctx.activation = activation
        ctx.save_for_backward(activation.save(z, output))

    @staticmethod
    def backward(ctx: Any, grad_a: Tensor) -> tuple[Tensor | None, None]:
        (saved,) = ctx.saved_tensors
        return ctx.activation.delta(grad_a, saved), None


class DenseFunction(Function):
    """a = σ(x Wᵀ + b) as one node; backward: δ = ∂C/∂a ⊙ σ′(z), then BP2, BP3, BP4.

    The forward pass returns ``(a, z)``. ``z`` is handed out only so that what σ′ reads stays
    inside the graph: in a double backward, a gradient reaching ``z`` comes back in as
    ``grad_z`` and joins δ, which makes the second derivative exact. ``on_delta``, if given, is
    called with δ (detached) during the backward pass.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(
        x: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        activation: Activation,
        on_delta: Callable[[Tensor], None] | None,
    ) -> tuple[Tensor, Tensor]:
        return dense_forward(x, weight, bias, activation)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, Tensor]) -> None:
        x, weight, _, activation, on_delta = inputs
        a, z = output
        needs_x, needs_weight = ctx.needs_input_grad[:2]
        ctx.activation = activation
        ctx.on_delta = on_delta
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(x if needs_weight else None, weight if needs_x else None, activation.save(z, a))

    @staticmethod
    def backward(ctx: Any, grad_a: Tensor | None, grad_z: Tensor | None) -> tuple[Tensor | None, ...]:
        x, weight, saved = ctx.saved_tensors
        needs = ctx.needs_input_grad[:3]
        if grad_a is None:
            if grad_z is None:
                return None, None, None, None, None
            return *linear_backward(grad_z, x, weight, needs), None, None
        delta, grad_x, grad_weight, grad_bias = dense_backward(
            grad_a, x, weight, ctx.activation, saved, needs, extra_delta=grad_z
        )
        if ctx.on_delta is not None:
            ctx.on_delta(delta.detach())
        return grad_x, grad_weight, grad_bias, None, None
