"""Dense layers a = σ(x Wᵀ + b) and stacks of them: the δ-recursion as plain maths, no autograd.

The fused dense and MLP nodes (``torchbp.functional.mlp_node``) and the graph-free training
step call these routines, so all three compute the same numbers. Conventions as in
``torchbp.derivatives.linear``: rows are examples, ``z`` and ``a`` are ``(*, out)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

from torch import Tensor

from .activations import Activation
from .linear import linear_backward, linear_forward


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
    """Gradients of a = σ(x Wᵀ + b) from ∂C/∂a: first δ = ∂C/∂a ⊙ σ′(z), then ``linear_backward``.

    ``saved`` is what ``activation.read(z, a)`` returned in the forward pass; ``extra_delta`` is
    a gradient that reached z directly (only in a double backward), added to δ.

    Returns:
        ``(delta, grad_x, grad_weight, grad_bias)``: δ itself, shape ``(*, out)``, then the
        gradients of ``linear_backward``.
    """
    # BP1 / BP2: δ = ∂C/∂a ⊙ σ′(z)
    delta = activation.delta(grad_a, saved)
    if extra_delta is not None:
        delta = delta + extra_delta
    return delta, *linear_backward(delta, x, weight, needs)


class StackFeedback(NamedTuple):
    """A feedback rule's part in a stack of dense layers (``torchbp.feedback``): BP2 reads Bˡ.

    Attributes:
        matrices: Bˡ per layer, read by BP2 in Wˡ's place: shaped like Wˡ, or, for a direct
            rule, ``(outputs, n_{l-1})``.
        error: for a direct rule, what returns e = ∂C/∂(network output) ``(*, outputs)`` in the
            backward pass (``None``: the stack's own output is the network's, e = ∂C/∂aᴸ); ``None``
            too for the other rules, with ``direct`` false.
        direct: whether BP2 becomes e Bˡ.
        learn: called with the stack's ∂C/∂Wˡ after the backward pass (a rule that learns B, or
            one that writes the next B in place).
        check: called before the backward pass reads the Bˡ: raises if one was overwritten since.
    """

    matrices: list[Tensor]
    error: Callable[[], Tensor] | None = None
    direct: bool = False
    learn: Callable[[list[Tensor | None]], None] | None = None
    check: Callable[[], None] | None = None


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
    direct_error: Tensor | None = None,
) -> tuple[list[Tensor | None], Tensor | None, list[Tensor | None], list[Tensor | None]]:
    """The δ-recursion through a stack of dense layers, from the last layer down.

    δᴸ = ∂C/∂aᴸ ⊙ σ′(zᴸ) (BP1); for each layer l, ∂C/∂bˡ (BP3) and ∂C/∂Wˡ (BP4) from δˡ; then
    δˡ⁻¹ = (δˡ Wˡ) ⊙ σ′(zˡ⁻¹) (BP2). Each step is ``dense_backward``.

    Args:
        grad_output: ∂C/∂aᴸ, shape ``(*, out)``.
        inputs: each layer's input aˡ⁻¹ (``None`` where its ∂C/∂W is not needed).
        weights: each layer's W (``None`` where its input's gradient is not needed).
        activations: each layer's σ.
        saved: what each layer's ``σ.read(z, a)`` kept.
        needs: per layer, whether ∂C/∂aˡ⁻¹, ∂C/∂Wˡ, ∂C/∂bˡ are wanted.
        extra_grad_a: per layer, a gradient reaching its output aˡ directly (only in a double
            backward through saved tensors), added to ∂C/∂aˡ.
        extra_delta: per layer, a gradient reaching its zˡ directly, added to δˡ.
        direct_error: e for a direct feedback rule (``torchbp.feedback``): each layer then
            hands down e Bˡ, with ``weights`` holding the Bˡ ``(outputs, n_{l-1})``, in place of δˡ Wˡ.

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
        layer_needs = needs[l] if direct_error is None else (False, *needs[l][1:])
        if grad_a is None:
            if extra is None:
                continue
            delta = extra
            grad_a, grad_weights[l], grad_biases[l] = linear_backward(delta, inputs[l], weights[l], layer_needs)
        else:
            delta, grad_a, grad_weights[l], grad_biases[l] = dense_backward(
                grad_a, inputs[l], weights[l], activations[l], saved[l], layer_needs, extra
            )
        deltas[l] = delta
        if direct_error is not None and needs[l][0]:
            # direct feedback: ∂C/∂aˡ⁻¹ = e Bˡ in place of δˡ Wˡ
            grad_a = direct_error @ weights[l]  # type: ignore[operator]
    return deltas, grad_a, grad_weights, grad_biases
