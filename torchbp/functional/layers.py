"""The plain forward and backward maths of a layer, with no autograd in them.

These routines are the one source of truth for a layer's equations. The autograd Functions in
:mod:`torchbp.functional.autograd` call them, and so does any graph-free training step.

Conventions (PyTorch's, Nielsen's ``wˡ`` as ``[out, in]``): rows are examples,
``x`` is ``(*, in)``, ``weight`` is ``(out, in)``, ``bias`` is ``(out,)``, ``z`` and ``a`` are ``(*, out)``.
"""

from __future__ import annotations

from torch import Tensor

from .activations import Activation


def linear_forward(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """z = x Wᵀ + b, for ``x`` of shape ``(*, in)``."""
    z = x @ weight.t()
    return z if bias is None else z + bias


def linear_backward(
    delta: Tensor,
    x: Tensor,
    weight: Tensor,
    needs: tuple[bool, bool, bool],
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """Gradients of z = x Wᵀ + b from δ = ∂C/∂z, each computed only where ``needs`` says so.

    Args:
        delta: δ, shape ``(*, out)``.
        x: the layer's input aˡ⁻¹, shape ``(*, in)``.
        weight: W, shape ``(out, in)``.
        needs: whether ∂C/∂x, ∂C/∂W, ∂C/∂b are wanted.

    Returns:
        ``(grad_x (*, in), grad_weight (out, in), grad_bias (out,))``, ``None`` where not needed.
    """
    grad_x = grad_weight = grad_bias = None
    if needs[0]:
        # ∂C/∂aˡ⁻¹ = δ W   (the (Wˡ)ᵀ δˡ of BP2, rows = examples)
        grad_x = delta @ weight
    if needs[1] or needs[2]:
        delta_rows = delta.reshape(-1, delta.shape[-1])
        if needs[1]:
            # BP4: ∂C/∂W = δᵀ aˡ⁻¹, summed over the examples
            grad_weight = delta_rows.t() @ x.reshape(-1, x.shape[-1])
        if needs[2]:
            # BP3: ∂C/∂b = δ, summed over the examples
            grad_bias = delta_rows.sum(0)
    return grad_x, grad_weight, grad_bias


def dense_forward(x: Tensor, weight: Tensor, bias: Tensor | None, activation: Activation) -> tuple[Tensor, Tensor]:
    """a = σ(z) with z = x Wᵀ + b. Returns ``(a, z)``, both ``(*, out)``."""
    z = linear_forward(x, weight, bias)
    return activation(z), z


def dense_backward(
    grad_a: Tensor,
    x: Tensor,
    weight: Tensor,
    activation: Activation,
    saved: Tensor | None,
    needs: tuple[bool, bool, bool],
    extra_delta: Tensor | None = None,
) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor | None]:
    """Gradients of a = σ(x Wᵀ + b) from ∂C/∂a: first δ = ∂C/∂a ⊙ σ′(z), then :func:`linear_backward`.

    ``saved`` is what ``activation.save(z, a)`` returned in the forward pass; ``extra_delta`` is
    a gradient that reached z directly (only in a double backward), added to δ.

    Returns:
        ``(delta, grad_x, grad_weight, grad_bias)``: δ itself, shape ``(*, out)``, then the
        gradients of :func:`linear_backward`.
    """
    # BP1 / BP2: δ = ∂C/∂a ⊙ σ′(z)
    delta = activation.delta(grad_a, saved)
    if extra_delta is not None:
        delta = delta + extra_delta
    return delta, *linear_backward(delta, x, weight, needs)
