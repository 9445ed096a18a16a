"""torchbp's functional core: layers whose backward pass is the explicit δ-recursion.

Like ``torch.nn.functional``, but every op is a ``torch.autograd.Function`` whose
``backward`` is the textbook equation:

* BP1  δᴸ = ∇ₐC ⊙ σ′(zᴸ)
* BP2  δˡ = ((Wˡ⁺¹)ᵀ δˡ⁺¹) ⊙ σ′(zˡ)
* BP3  ∂C/∂bˡ = δˡ
* BP4  ∂C/∂Wˡ = δˡ (aˡ⁻¹)ᵀ

with rows = examples, so in code ∂C/∂W = δᵀ x and ∂C/∂x = δ W.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor
from torch.compiler import is_compiling

from ..derivatives import activations
from ..derivatives.activations import ACTIVATIONS, Activation, get_activation
from ..derivatives.dense import StackFeedback, dense_forward, mlp_forward
from ..derivatives.linear import Linear
from .attention import multi_head_attention_forward, scaled_dot_product_attention
from .batchnorm import batch_norm
from .chain_node import chain
from .checks import autocast_args, autocast_dtype, cast_floating, check_dim, check_linear, check_stack, check_tensor
from .conv import conv1d, conv2d, pad
from .cost import cost
from .dropout import dropout, flatten, unflatten
from .embedding import embedding
from .factory import apply, apply_layer, function_for, traced_without_grad
from .internals import forward_mode, module_apply
from .mlp_node import DENSE_WITH_JVP, MLP_WITH_JVP, DenseFunction, MLPFunction
from .norm import layer_norm, rms_norm
from .pool import adaptive_avg_pool2d, avg_pool2d, max_pool2d

__all__ = [
    "ACTIVATIONS",
    "Activation",
    "activate",
    "adaptive_avg_pool2d",
    "apply_layer",
    "avg_pool2d",
    "batch_norm",
    "chain",
    "conv1d",
    "conv2d",
    "cost",
    "dense",
    "dropout",
    "elu",
    "embedding",
    "flatten",
    "gelu",
    "get_activation",
    "identity",
    "layer_norm",
    "leaky_relu",
    "linear",
    "max_pool2d",
    "mlp",
    "multi_head_attention_forward",
    "pad",
    "relu",
    "rms_norm",
    "scaled_dot_product_attention",
    "sigmoid",
    "silu",
    "softmax",
    "softplus",
    "tanh",
    "unflatten",
]


_LINEAR = Linear()
function_for(Linear)  # made here, in eager code: torch.compile breaks its graph where a class is made
function_for(Activation)


def linear(
    x: Tensor, weight: Tensor, bias: Tensor | None = None, on_delta: Callable[[Tensor], None] | None = None
) -> Tensor:
    """z = x Wᵀ + b, with the explicit backward ∂C/∂x = δ W, ∂C/∂W = δᵀ x, ∂C/∂b = Σ δ.

    Args:
        x: input, shape ``(*, in_features)``.
        weight: W, shape ``(out_features, in_features)`` (``torch.nn.Linear``'s convention).
        bias: b, shape ``(out_features,)``, or ``None``.
        on_delta: called with δ = ∂C/∂z, shape ``(*, out_features)``, during the backward pass.

    Returns:
        z, shape ``(*, out_features)``.

    Examples:
        >>> import torch
        >>> linear(torch.ones(2, 3), torch.ones(4, 3), torch.zeros(4)).shape
        torch.Size([2, 4])
    """
    x, weight, bias = autocast_args(x, weight, bias)
    check_linear(x, weight, bias)
    return apply_layer(_LINEAR, x, (weight, bias), on_delta)


def dense(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    activation: str | Activation = "sigmoid",
    on_delta: Callable[[Tensor], None] | None = None,
) -> Tensor:
    """The fused layer a = σ(x Wᵀ + b) as one autograd node.

    Its backward is δ = ∂C/∂a ⊙ σ′(z) followed by BP2 (∂C/∂x = δ W), BP3 and BP4.

    Args:
        x: input aˡ⁻¹, shape ``(*, in_features)``.
        weight: Wˡ, shape ``(out_features, in_features)``.
        bias: bˡ, shape ``(out_features,)``, or ``None``.
        activation: a name from ``ACTIVATIONS`` or an ``Activation``.
        on_delta: called with δˡ = ∂C/∂zˡ, shape ``(*, out_features)``, during the backward
            pass: the layer's error signal, which explicit backprop has at hand anyway.

    Returns:
        aˡ, shape ``(*, out_features)``.

    Examples:
        >>> import torch
        >>> dense(torch.zeros(1, 3), torch.ones(2, 3), torch.zeros(2), "sigmoid")
        tensor([[0.5000, 0.5000]])
    """
    act = get_activation(activation)
    x, weight, bias = autocast_args(x, weight, bias)
    check_linear(x, weight, bias)
    if isinstance(act, activations.Softmax):
        check_dim("activation", x, act.dim)
    if traced_without_grad(x, weight, bias):
        return dense_forward(x, weight, bias, act)[0]
    a, _ = apply(DenseFunction, DENSE_WITH_JVP, x, weight, bias, act, on_delta)
    return a


def mlp(
    x: Tensor,
    weights: list[Tensor],
    biases: list[Tensor | None],
    activations: list[str | Activation],
    on_delta: Callable[[int, Tensor], None] | None = None,
    feedback: StackFeedback | None = None,
) -> Tensor:
    """A stack of dense layers aˡ = σˡ(aˡ⁻¹ Wˡᵀ + bˡ) as one autograd node.

    Its backward is the δ-recursion in a loop: δᴸ = ∂C/∂aᴸ ⊙ σ′(zᴸ), then BP3, BP4 and
    δˡ⁻¹ = (δˡ Wˡ) ⊙ σ′(zˡ⁻¹) (BP2) layer by layer, exactly as ``dense`` layer after layer.

    Args:
        x: input, shape ``(*, in_features)``.
        weights: Wˡ, shapes ``(n_l, n_{l-1})``.
        biases: bˡ, shapes ``(n_l,)``, or ``None`` entries.
        activations: σˡ per layer, names or ``Activation`` objects.
        on_delta: called as ``on_delta(l, δˡ)`` (l counts from 0) during the backward pass.
        feedback: a feedback rule's Bˡ for BP2 (``torchbp.feedback``); ``None`` is backprop.

    Returns:
        aᴸ, shape ``(*, n_L)``.

    Examples:
        >>> import torch
        >>> mlp(torch.zeros(2, 3), [torch.ones(4, 3), torch.ones(1, 4)], [None, None], ["relu", "identity"]).shape
        torch.Size([2, 1])
    """
    if not (len(weights) == len(biases) == len(activations)) or not weights:
        raise ValueError(
            f"weights, biases, activations: expected one of each per layer, got {len(weights)}, "
            f"{len(biases)} and {len(activations)}"
        )
    acts = [act if isinstance(act, Activation) else get_activation(act) for act in activations]
    params = [t for pair in zip(weights, biases) for t in pair]
    return mlp_stack(x, params, acts, on_delta, feedback)


def mlp_stack(
    x: Tensor,
    params: list[Tensor | None],
    activations: list[Activation],
    on_delta: Callable[[int, Tensor], None] | None = None,
    feedback: StackFeedback | None = None,
    own: bool = False,
) -> Tensor:
    """``mlp`` with the parameters in one list ``[W¹, b¹, W², b², …]`` (a ``None`` bias where a
    layer has none) and one ``Activation`` object per layer: what ``torchbp.nn.MLP`` calls.
    ``own`` says the parameters are modules' own (never left over from a torch.func transform),
    so that only ``x`` is unwrapped on the way in.
    """
    if len(params) != 2 * len(activations) or not activations:
        raise ValueError(
            f"params, activations: expected a weight and a bias (or None) per activation, got {len(params)} "
            f"tensors for {len(activations)} activations"
        )
    dtype = autocast_dtype(x) if isinstance(x, Tensor) else None
    if dtype is not None:
        x = cast_floating(x, dtype)
        params = [cast_floating(t, dtype) for t in params]
    check_stack(x, params)
    last = len(activations) - 1
    if own and not is_compiling() and not forward_mode():
        return module_apply(MLPFunction, (), x, (activations, on_delta, feedback, *params))[last]  # type: ignore[no-any-return]
    if traced_without_grad(x, *params):
        return mlp_forward(x, params[0::2], params[1::2], activations)[0][-1]  # type: ignore[arg-type]
    return apply(MLPFunction, MLP_WITH_JVP, x, activations, on_delta, feedback, *params)[last]  # type: ignore[no-any-return]


def activate(z: Tensor, activation: str | Activation, **options: object) -> Tensor:
    """a = σ(z) for any registered activation, with the explicit backward δ = g ⊙ σ′(z).

    Examples:
        >>> import torch
        >>> activate(torch.tensor([-1.0, 2.0]), "leaky_relu", negative_slope=0.5)
        tensor([-0.5000,  2.0000])
    """
    act = get_activation(activation, **options)
    z = check_tensor("input", z)
    return apply_layer(act, z)


_SIGMOID = activations.sigmoid()
_TANH = activations.tanh()
_RELU = activations.relu()
_SILU = activations.silu()
_IDENTITY = activations.identity()


def sigmoid(input: Tensor) -> Tensor:
    """a = 1 / (1 + e⁻ᶻ), any shape; backward δ = g ⊙ a (1 − a)."""
    return apply_layer(_SIGMOID, check_tensor("input", input))


def tanh(input: Tensor) -> Tensor:
    """a = tanh z, any shape; backward δ = g ⊙ (1 − a²)."""
    return apply_layer(_TANH, check_tensor("input", input))


def relu(input: Tensor) -> Tensor:
    """a = max(z, 0), any shape; backward δ = g where z > 0, else 0."""
    return apply_layer(_RELU, check_tensor("input", input))


def leaky_relu(input: Tensor, negative_slope: float = 0.01) -> Tensor:
    """a = z where z > 0, else slope·z; backward δ = g where z > 0, else slope·g."""
    return activate(input, "leaky_relu", negative_slope=negative_slope)


def elu(input: Tensor, alpha: float = 1.0) -> Tensor:
    """a = z where z > 0, else α(eᶻ − 1); backward δ = g where z > 0, else g α eᶻ."""
    return activate(input, "elu", alpha=alpha)


def softplus(input: Tensor, beta: float = 1.0, threshold: float = 20.0) -> Tensor:
    """a = (1/β) log(1 + e^{βz}) (z above the threshold); backward δ = g ⊙ sigmoid(βz)."""
    return activate(input, "softplus", beta=beta, threshold=threshold)


def gelu(input: Tensor, approximate: str = "none") -> Tensor:
    """a = z Φ(z) (or the tanh approximation); backward δ = g ⊙ (Φ(z) + z φ(z))."""
    return activate(input, "gelu", approximate=approximate)


def silu(input: Tensor) -> Tensor:
    """a = z sigmoid(z); backward δ = g ⊙ s (1 + z (1 − s))."""
    return apply_layer(_SILU, check_tensor("input", input))


def identity(input: Tensor) -> Tensor:
    """a = z; backward δ = g."""
    return apply_layer(_IDENTITY, check_tensor("input", input))


def softmax(input: Tensor, dim: int) -> Tensor:
    """a = softmax(z) along ``dim``; backward is the JVP δz = a ⊙ (g − Σ g ⊙ a).

    Examples:
        >>> import torch
        >>> softmax(torch.zeros(1, 4), dim=1)
        tensor([[0.2500, 0.2500, 0.2500, 0.2500]])
    """
    input = check_tensor("input", input)
    check_dim("softmax", input, dim)
    return activate(input, "softmax", dim=dim)
