"""Batch normalisation as a functional op, like ``torch.nn.functional.batch_norm``, with the
explicit backward of ``torchbp.derivatives.batchnorm.BatchNorm``."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..derivatives.batchnorm import BatchNorm
from .checks import LOW_PRECISION, check_tensor, dtype_goes_with, shape_text
from .factory import apply_layer, function_for

__all__ = ["batch_norm"]

function_for(BatchNorm)  # made here, in eager code: torch.compile breaks its graph where a class is made

_VECTORS = ("running_mean", "running_var", "weight", "bias")


def _fits(input: Tensor, vectors: tuple[object, ...]) -> bool:
    """The quick answer for the usual case: ``(N, C, *)`` input, ``(C,)`` vectors of its dtype and device."""
    if input.dim() < 2 or not input.is_floating_point():
        return False
    channels, device = input.shape[1], input.get_device()
    dtypes = (input.dtype, torch.float32) if input.dtype in LOW_PRECISION else (input.dtype,)
    for v in vectors:
        if v is not None and (
            not isinstance(v, Tensor) or v.shape != (channels,) or v.dtype not in dtypes or v.get_device() != device
        ):
            return False
    return True


def check_batch_norm(
    input: object,
    running_mean: object,
    running_var: object,
    weight: object,
    bias: object,
    training: bool,
    eps: float,
) -> None:
    """Check the arguments of batch normalisation: ``input (N, C, *)``, each vector ``(C,)``, on
    ``input``'s device, in its dtype (float32 vectors also go with a float16/bfloat16 input), and
    more than one value per channel in training."""
    vectors = (running_mean, running_var, weight, bias)
    if isinstance(input, Tensor) and _fits(input, vectors):
        x = input
    else:
        x = check_tensor("input", input)
        if x.dim() < 2:
            raise ValueError(f"input: expected a tensor of shape (N, C, *) with 2 or more dims, got {shape_text(x)}")
        channels = x.shape[1]
        for name, value in zip(_VECTORS, vectors):
            if value is None:
                continue
            v = check_tensor(name, value)
            if v.shape != (channels,):
                raise ValueError(
                    f"{name}: expected shape ({channels},), one value per channel of input of shape "
                    f"{shape_text(x)} (channels are dim 1), got {shape_text(v)}"
                )
            if v.device != x.device:
                raise ValueError(f"{name}: expected device {x.device} (the device of input), got {v.device}")
            if not dtype_goes_with(x.dtype, v.dtype):
                raise TypeError(f"{name}: expected dtype {x.dtype} (the dtype of input), got {v.dtype}")
    if training:
        if x.numel() == x.shape[1]:
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {x.size()}")
        if eps <= 0.0:
            raise ValueError(f"batch_norm eps must be positive during training, but got {eps}")
    elif eps < 0.0:
        raise ValueError(f"batch_norm eps must be non-negative, but got {eps}")
    elif running_mean is None or running_var is None:
        raise ValueError(
            "running_mean, running_var: expected both in evaluation mode (training=False normalises with "
            f"them), got {type(running_mean).__name__} and {type(running_var).__name__}"
        )


def batch_norm(
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
    on_delta: Callable[[Tensor], None] | None = None,
) -> Tensor:
    """z = γ (x − μ)/√(σ² + ε) + β per channel, like ``torch.nn.functional.batch_norm``.

    In training, μ and σ² are the batch's (σ² biased), and ``running_mean`` / ``running_var``,
    where given, are moved towards them in place (``running ← (1 − momentum)·running +
    momentum·batch``, with the unbiased variance). In eval they are the running statistics.
    The backward is ∂C/∂β = Σ δ, ∂C/∂γ = Σ δ ⊙ x̂ and, in training,
    ∂C/∂x = (γ/(m·√(σ² + ε)))·(m·δ − Σ δ − x̂ ⊙ Σ δ ⊙ x̂), sums over each channel's m values.

    Args:
        input: x, shape ``(N, C, *)``.
        running_mean: ``(C,)`` or ``None``.
        running_var: ``(C,)`` or ``None``.
        weight: γ, ``(C,)`` or ``None`` (γ = 1).
        bias: β, ``(C,)`` or ``None`` (β = 0).
        training: normalise with the batch's statistics.
        momentum: the weight of the batch's statistics in the running ones.
        eps: ε.
        on_delta: called with δ = ∂C/∂z, shape of ``input``, during the backward pass.

    Returns:
        z, shape of ``input``.

    Examples:
        >>> import torch
        >>> batch_norm(torch.tensor([[1.0], [3.0]]), None, None, training=True)
        tensor([[-1.0000],
                [ 1.0000]])
    """
    check_batch_norm(input, running_mean, running_var, weight, bias, training, eps)
    if not training:
        return apply_layer(BatchNorm(False, eps), input, (weight, bias, running_mean, running_var), on_delta)
    # the running statistics move inside ATen's forward kernel, as torch's own batch norm
    return apply_layer(BatchNorm(True, eps, momentum), input, (weight, bias, running_mean, running_var), on_delta)
