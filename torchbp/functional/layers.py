"""The plain forward and backward maths of a layer, with no autograd in them.

These routines are the one source of truth for a layer's equations. The autograd Functions in
:mod:`torchbp.functional.autograd` call them, and so does any graph-free training step.

Conventions (PyTorch's, Nielsen's ``wˡ`` as ``[out, in]``): rows are examples,
``x`` is ``(*, in)``, ``weight`` is ``(out, in)``, ``bias`` is ``(out,)``, ``z`` and ``a`` are ``(*, out)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .activations import Activation


def linear_forward(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """z = x Wᵀ + b, for ``x`` of shape ``(*, in)``.

    The forward product is PyTorch's fused ``linear`` kernel (one call for x Wᵀ + b); what
    torchbp writes out is the backward pass.
    """
    return torch.nn.functional.linear(x, weight, bias)


def linear_jvp(x: Tensor, weight: Tensor, x_t: Tensor | None, weight_t: Tensor | None, bias_t: Tensor | None) -> Tensor:
    """Forward-mode derivative of z = x Wᵀ + b: ż = ẋ Wᵀ + x Ẇᵀ + ḃ (tangents may be ``None``)."""
    z_t = torch.zeros((*x.shape[:-1], weight.shape[0]), dtype=x.dtype, device=x.device)
    if x_t is not None:
        z_t = z_t + x_t @ weight.t()
    if weight_t is not None:
        z_t = z_t + x @ weight_t.t()
    if bias_t is not None:
        z_t = z_t + bias_t
    return z_t


def linear_backward(
    delta: Tensor,
    x: Tensor | None,
    weight: Tensor | None,
    needs: tuple[bool, bool, bool],
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """Gradients of z = x Wᵀ + b from δ = ∂C/∂z, each computed only where ``needs`` says so.

    Args:
        delta: δ, shape ``(*, out)``.
        x: the layer's input aˡ⁻¹, shape ``(*, in)`` (may be ``None`` when ∂C/∂W is not needed).
        weight: W, shape ``(out, in)`` (may be ``None`` when ∂C/∂x is not needed).
        needs: whether ∂C/∂x, ∂C/∂W, ∂C/∂b are wanted.

    Returns:
        ``(grad_x (*, in), grad_weight (out, in), grad_bias (out,))``, ``None`` where not needed.
    """
    grad_x = grad_weight = grad_bias = None
    if needs[0]:
        assert weight is not None, "∂C/∂x needs W"
        # ∂C/∂aˡ⁻¹ = δ W   (the (Wˡ)ᵀ δˡ of BP2, rows = examples)
        grad_x = delta @ weight
    if needs[1] or needs[2]:
        delta_rows = delta if delta.dim() == 2 else delta.reshape(-1, delta.shape[-1])
        if needs[1]:
            assert x is not None, "∂C/∂W needs the layer's input"
            x_rows = x if x.dim() == 2 else x.reshape(-1, x.shape[-1])
            # BP4: ∂C/∂W = δᵀ aˡ⁻¹, summed over the examples
            grad_weight = delta_rows.t() @ x_rows
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
    x: Tensor | None,
    weight: Tensor | None,
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


def mlp_forward(
    x: Tensor, weights: Sequence[Tensor], biases: Sequence[Tensor | None], activations: Sequence[Activation]
) -> tuple[list[Tensor], list[Tensor]]:
    """The forward pass of a stack of dense layers: a⁰ = x, aˡ = σˡ(aˡ⁻¹ Wˡᵀ + bˡ).

    Returns:
        ``([a⁰, a¹, …, aᴸ], [z¹, …, zᴸ])``.
    """
    a, z = [x], []
    for weight, bias, activation in zip(weights, biases, activations):
        a_l, z_l = dense_forward(a[-1], weight, bias, activation)
        a.append(a_l)
        z.append(z_l)
    return a, z


def mlp_backward(
    grad_output: Tensor | None,
    inputs: Sequence[Tensor | None],
    weights: Sequence[Tensor | None],
    activations: Sequence[Activation],
    saved: Sequence[Tensor | None],
    needs: Sequence[tuple[bool, bool, bool]],
    extra_grad_a: Sequence[Tensor | None] | None = None,
    extra_delta: Sequence[Tensor | None] | None = None,
) -> tuple[list[Tensor | None], Tensor | None, list[Tensor | None], list[Tensor | None]]:
    """The δ-recursion through a stack of dense layers, from the last layer down.

    δᴸ = ∂C/∂aᴸ ⊙ σ′(zᴸ) (BP1); for each layer l, ∂C/∂bˡ (BP3) and ∂C/∂Wˡ (BP4) from δˡ; then
    δˡ⁻¹ = (δˡ Wˡ) ⊙ σ′(zˡ⁻¹) (BP2). Each step is :func:`dense_backward`.

    Args:
        grad_output: ∂C/∂aᴸ, shape ``(*, out)``.
        inputs: each layer's input aˡ⁻¹ (``None`` where its ∂C/∂W is not needed).
        weights: each layer's W (``None`` where its input's gradient is not needed).
        activations: each layer's σ.
        saved: what each layer's ``σ.save(z, a)`` kept.
        needs: per layer, whether ∂C/∂aˡ⁻¹, ∂C/∂Wˡ, ∂C/∂bˡ are wanted.
        extra_grad_a: per layer, a gradient reaching its output aˡ directly (only in a double
            backward through saved tensors), added to ∂C/∂aˡ.
        extra_delta: per layer, a gradient reaching its zˡ directly, added to δˡ.

    Returns:
        ``(deltas, grad_x, grad_weights, grad_biases)``: δˡ per layer (``None`` where no
        gradient reached the layer), ∂C/∂x, and the parameter gradients per layer.
    """
    layers = len(weights)
    deltas: list[Tensor | None] = [None] * layers
    grad_weights: list[Tensor | None] = [None] * layers
    grad_biases: list[Tensor | None] = [None] * layers
    grad_a = grad_output
    for l in reversed(range(layers)):
        reaching = extra_grad_a[l] if extra_grad_a is not None else None
        if reaching is not None:
            grad_a = reaching if grad_a is None else grad_a + reaching
        extra = extra_delta[l] if extra_delta is not None else None
        if grad_a is None:
            if extra is None:
                continue
            delta = extra
            grad_a, grad_weights[l], grad_biases[l] = linear_backward(delta, inputs[l], weights[l], needs[l])
        else:
            delta, grad_a, grad_weights[l], grad_biases[l] = dense_backward(
                grad_a, inputs[l], weights[l], activations[l], saved[l], needs[l], extra
            )
        deltas[l] = delta
    return deltas, grad_a, grad_weights, grad_biases
