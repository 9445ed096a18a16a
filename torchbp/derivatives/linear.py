"""Linear: z = x Wᵀ + b, and its BP2, BP3 and BP4.

Conventions (PyTorch's, Nielsen's ``wˡ`` as ``[out, in]``): rows are examples, ``x`` is
``(*, in)``, ``weight`` is ``(out, in)``, ``bias`` is ``(out,)``, ``z`` is ``(*, out)``.
The functions are the one source of truth for these equations: ``Linear``, the fused
dense layer, the MLP node and the graph-free step all call them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch
from torch import Tensor

from .base import Derivatives, Sample


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


class LinearSaved(NamedTuple):
    """x for BP4 (where ∂C/∂W is wanted), W for BP2 (where ∂C/∂x is wanted)."""

    x: Tensor | None
    weight: Tensor | None


@dataclass(frozen=True)
class Linear(Derivatives):
    """z = x Wᵀ + b: ∂C/∂x = δ W (BP2), ∂C/∂W = δᵀ x (BP4), ∂C/∂b = Σ δ (BP3)."""

    kind: ClassVar[str] = "linear"
    params: ClassVar[tuple[str, ...]] = ("weight", "bias")
    Saved: ClassVar[type[LinearSaved]] = LinearSaved
    saves_own: ClassVar[bool] = True

    def forward(self, x: Tensor, *params: Tensor | None) -> tuple[Tensor, tuple[Tensor, ...]]:
        weight, bias = params
        assert weight is not None
        return linear_forward(x, weight, bias), ()

    def save(
        self,
        x: Tensor,
        params: tuple[Tensor | None, ...],
        z: Tensor,
        buffers: tuple[Tensor, ...],
        needs: tuple[bool, ...],
    ) -> LinearSaved:
        return LinearSaved(x if needs[1] else None, params[0] if needs[0] else None)

    def input_vjp(self, delta: Tensor, saved: LinearSaved) -> Tensor:
        grad_x, _, _ = linear_backward(delta, None, saved.weight, (True, False, False))
        assert grad_x is not None
        return grad_x

    def param_vjps(self, delta: Tensor, saved: LinearSaved, needs: tuple[bool, ...]) -> tuple[Tensor | None, ...]:
        _, grad_weight, grad_bias = linear_backward(delta, saved.x, None, (False, needs[0], needs[1]))
        return grad_weight, grad_bias

    def vjps(self, delta: Tensor, saved: LinearSaved, needs: tuple[bool, ...]) -> tuple[Tensor | None, ...]:
        return linear_backward(delta, saved.x, saved.weight, needs)  # type: ignore[arg-type]

    def jvp(self, saved: LinearSaved, x_t: Tensor | None, *params_t: Tensor | None) -> Tensor:
        assert saved.x is not None and saved.weight is not None
        return linear_jvp(saved.x, saved.weight, x_t, *params_t)

    @classmethod
    def samples(cls, dtype: torch.dtype, device: torch.device | str) -> list[Sample]:
        def make(*shape: int) -> Tensor:
            return torch.randn(shape, dtype=dtype, device=device)

        weight, bias = make(2, 3), make(2)
        return [
            Sample("batch of 5", cls(), make(5, 3), (weight, bias)),
            Sample("one example", cls(), make(1, 3), (weight, bias)),
            Sample("no batch dimension", cls(), make(3), (weight, bias)),
            Sample("two batch dimensions, no bias", cls(), make(2, 4, 3), (weight, None)),
            Sample("transposed input", cls(), make(3, 5).t(), (weight, bias)),
        ]
