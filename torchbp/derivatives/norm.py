"""Layer normalisation and RMS normalisation: per example, over the trailing dimensions.

Conventions (PyTorch's): ``x`` is ``(*, *normalized_shape)``; ``weight`` γ and ``bias`` β are
``normalized_shape``; every mean ⟨·⟩ runs over the m values of one example's normalised
dimensions, and Σ over the batch dimensions ``*``.

Layer norm, x̂ = (x − μ)·r with μ = ⟨x⟩, r = 1/√(⟨(x − μ)²⟩ + ε), z = γ ⊙ x̂ + β::

    ∂C/∂β = Σ δ,   ∂C/∂γ = Σ δ ⊙ x̂,   g = δ ⊙ γ
    ∂C/∂x = r·(g − ⟨g⟩ − x̂ ⊙ ⟨g ⊙ x̂⟩)      (through x̂ directly, through μ, through r)

RMS norm, x̂ = x·r with r = 1/√(⟨x²⟩ + ε), z = γ ⊙ x̂::

    ∂C/∂γ = Σ δ ⊙ x̂,   g = δ ⊙ γ
    ∂C/∂x = r·(g − x̂ ⊙ ⟨g ⊙ x̂⟩)

Layer norm's backward is also ATen's fused ``native_layer_norm_backward`` (the same equations in
one pass), used whenever no double backward is being recorded; the tests check one against the
other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch
from torch import Tensor

from .base import LOW_PRECISION, Derivatives, Sample


def upcast_if_mixed(x: Tensor, params: tuple[Tensor | None, ...]) -> Tensor:
    """x in the dtype the normalisation computes in: float32 for a float16/bfloat16 x with float32
    γ or β (torch's mixed path, which rounds z to x's dtype), x's own dtype otherwise."""
    if all(p is None or p.dtype == x.dtype for p in params):
        return x
    return x.float()


def opmath_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype ATen computes in for ``dtype`` (its opmath type): float32 for float16 and bfloat16,
    ``dtype`` itself otherwise."""
    return torch.float32 if dtype in LOW_PRECISION else dtype


def opmath(x: Tensor) -> Tensor:
    """x in the dtype torch's RMS norm computes in (``opmath_dtype``); z is then rounded to x's
    dtype, whatever γ's."""
    return x.to(opmath_dtype(x.dtype))


def example_dims(x: Tensor, normalized_ndim: int) -> list[int]:
    """The trailing dimensions one example is normalised over."""
    return list(range(x.dim() - normalized_ndim, x.dim()))


def batch_sum(t: Tensor, normalized_ndim: int) -> Tensor:
    """Σ over the batch dimensions: a tensor of shape ``normalized_shape``."""
    return t.sum(list(range(t.dim() - normalized_ndim))) if t.dim() > normalized_ndim else t


def layer_statistics(x: Tensor, normalized_ndim: int, eps: float) -> tuple[Tensor, Tensor]:
    """μ and r = 1/√(σ² + ε) per example (σ² biased), kept dimensions, with differentiable ops."""
    var, mean = torch.var_mean(x, example_dims(x, normalized_ndim), correction=0, keepdim=True)
    return mean, torch.rsqrt(var + eps)


def rms_statistic(x: Tensor, normalized_ndim: int, eps: float) -> Tensor:
    """r = 1/√(⟨x²⟩ + ε) per example, kept dimensions."""
    return torch.rsqrt(x.square().mean(example_dims(x, normalized_ndim), keepdim=True) + eps)


class LayerNormSaved(NamedTuple):
    """x, γ (where given), and the statistics μ and r the forward pass made (buffers)."""

    x: Tensor
    weight: Tensor | None
    mean: Tensor
    rstd: Tensor


@dataclass(frozen=True)
class LayerNorm(Derivatives):
    """z = γ ⊙ x̂ + β, x̂ = (x − μ)·r per example: ∂C/∂β = Σ δ, ∂C/∂γ = Σ δ ⊙ x̂,
    ∂C/∂x = r·(g − ⟨g⟩ − x̂ ⊙ ⟨g ⊙ x̂⟩) with g = δ ⊙ γ.

    Attributes:
        normalized_ndim: how many trailing dimensions one example spans.
        eps: ε, added to σ² before the square root.

    The parameters are ``weight`` γ and ``bias`` β (each ``None`` without elementwise affine);
    the buffers are μ and r, shaped ``(*, 1, …, 1)``.
    """

    kind: ClassVar[str] = "layer_norm"
    params: ClassVar[tuple[str, ...]] = ("weight", "bias")
    Saved: ClassVar[type[LayerNormSaved]] = LayerNormSaved
    saves_own: ClassVar[bool] = True

    normalized_ndim: int = 1
    eps: float = 1e-5

    def forward(self, x: Tensor, *params: Tensor | None) -> tuple[Tensor, tuple[Tensor, ...]]:
        weight, bias = params
        x_c = upcast_if_mixed(x, params)
        z, mean, rstd = torch.native_layer_norm(x_c, x.shape[x.dim() - self.normalized_ndim :], weight, bias, self.eps)
        return z.to(x.dtype), (mean, rstd)

    def save(
        self,
        x: Tensor,
        params: tuple[Tensor | None, ...],
        z: Tensor,
        buffers: tuple[Tensor, ...],
        needs: tuple[bool, ...],
    ) -> LayerNormSaved:
        return LayerNormSaved(x, params[0], *buffers)

    def statistics(self, saved: LayerNormSaved, x: Tensor) -> tuple[Tensor, Tensor]:
        """μ and r of x (``saved.x`` in the dtype computed in), recomputed with differentiable ops
        where a double backward is being recorded."""
        if torch.is_grad_enabled():
            return layer_statistics(x, self.normalized_ndim, self.eps)
        return saved.mean, saved.rstd

    def vjps(self, delta: Tensor, saved: LayerNormSaved, needs: tuple[bool, ...]) -> tuple[Tensor | None, ...]:
        needs_x, needs_weight, needs_bias = needs
        x = upcast_if_mixed(saved.x, (saved.weight,))
        delta_c = delta.to(x.dtype)
        if not torch.is_grad_enabled() and delta.numel() and (saved.weight is not None or not needs_bias):
            # ATen's fused kernel for the equations below, in one pass over δ and x (it reads its
            # β argument only for the shape of ∂C/∂β, which is γ's)
            shape = x.shape[x.dim() - self.normalized_ndim :]
            mask = [needs_x, needs_weight, needs_bias]
            grad_x, grad_weight, grad_bias = torch.ops.aten.native_layer_norm_backward.default(
                delta_c, x, shape, saved.mean, saved.rstd, saved.weight, saved.weight, mask
            )
            return None if grad_x is None else grad_x.to(saved.x.dtype), grad_weight, grad_bias
        mean, rstd = self.statistics(saved, x)
        x_hat = (x - mean) * rstd
        grad_x = grad_weight = grad_bias = None
        if needs_x:
            dims = example_dims(delta, self.normalized_ndim)
            g = delta_c if saved.weight is None else delta_c * saved.weight
            # ∂C/∂x = r·(g − ⟨g⟩ − x̂ ⊙ ⟨g ⊙ x̂⟩): through x̂ directly, through μ, through r
            grad_x = rstd * (g - g.mean(dims, keepdim=True) - x_hat * (g * x_hat).mean(dims, keepdim=True))
            grad_x = grad_x.to(saved.x.dtype)
        if needs_weight:
            # BP4's analogue: ∂C/∂γ = Σ δ ⊙ x̂
            grad_weight = batch_sum(delta_c * x_hat, self.normalized_ndim)
        if needs_bias:
            # BP3's analogue: ∂C/∂β = Σ δ
            grad_bias = batch_sum(delta_c, self.normalized_ndim)
        return grad_x, grad_weight, grad_bias

    def input_vjp(self, delta: Tensor, saved: LayerNormSaved) -> Tensor:
        grad_x = self.vjps(delta, saved, (True, False, False))[0]
        assert grad_x is not None
        return grad_x

    def param_vjps(self, delta: Tensor, saved: LayerNormSaved, needs: tuple[bool, ...]) -> tuple[Tensor | None, ...]:
        return self.vjps(delta, saved, (False, *needs))[1:]

    def jvp(self, saved: LayerNormSaved, x_t: Tensor | None, *params_t: Tensor | None) -> Tensor:
        weight_t, bias_t = params_t
        x = upcast_if_mixed(saved.x, (saved.weight,))
        mean, rstd = self.statistics(saved, x)
        x_hat = (x - mean) * rstd
        z_t = torch.zeros_like(x)
        if x_t is not None:
            dims = example_dims(x_t, self.normalized_ndim)
            # ẋ̂ = r·(ẋ − ⟨ẋ⟩ − x̂ ⊙ ⟨x̂ ⊙ ẋ⟩)
            x_hat_t = rstd * (x_t - x_t.mean(dims, keepdim=True) - x_hat * (x_hat * x_t).mean(dims, keepdim=True))
            z_t = z_t + (x_hat_t if saved.weight is None else saved.weight * x_hat_t)
        # ż = γ ⊙ ẋ̂ + γ̇ ⊙ x̂ + β̇
        if weight_t is not None:
            z_t = z_t + weight_t * x_hat
        if bias_t is not None:
            z_t = z_t + bias_t
        return z_t.to(saved.x.dtype)

    @classmethod
    def samples(cls, dtype: torch.dtype, device: torch.device | str) -> list[Sample]:
        def make(*shape: int) -> Tensor:
            return torch.randn(shape, dtype=dtype, device=device)

        return [
            Sample("affine, (N, D)", cls(), make(4, 5), (make(5), make(5))),
            Sample("affine, (N, L, D)", cls(eps=1e-3), make(2, 3, 4), (make(4), make(4))),
            Sample("not affine, over two dimensions", cls(2), make(3, 2, 3), (None, None)),
            Sample("weight without bias, one example", cls(), make(1, 6), (make(6), None)),
            Sample("no batch dimension", cls(), make(5), (make(5), make(5))),
            Sample("non-contiguous", cls(), make(4, 3).t(), (make(4), make(4))),
        ]


class RMSNormSaved(NamedTuple):
    """x, γ (where given), and r the forward pass made (a buffer)."""

    x: Tensor
    weight: Tensor | None
    rstd: Tensor


@dataclass(frozen=True)
class RMSNorm(Derivatives):
    """z = γ ⊙ x̂, x̂ = x·r, r = 1/√(⟨x²⟩ + ε) per example: ∂C/∂γ = Σ δ ⊙ x̂,
    ∂C/∂x = r·(g − x̂ ⊙ ⟨g ⊙ x̂⟩) with g = δ ⊙ γ.

    Attributes:
        normalized_ndim: how many trailing dimensions one example spans.
        eps: ε, added to ⟨x²⟩ before the square root.

    The parameter is ``weight`` γ (``None`` without elementwise affine); the buffer is r,
    shaped ``(*, 1, …, 1)``.
    """

    kind: ClassVar[str] = "rms_norm"
    params: ClassVar[tuple[str, ...]] = ("weight",)
    Saved: ClassVar[type[RMSNormSaved]] = RMSNormSaved
    saves_own: ClassVar[bool] = True

    normalized_ndim: int = 1
    eps: float = 1e-6

    def forward(self, x: Tensor, *params: Tensor | None) -> tuple[Tensor, tuple[Tensor, ...]]:
        (weight,) = params
        x_c = opmath(x)
        rstd = rms_statistic(x_c, self.normalized_ndim, self.eps)
        z = x_c * rstd
        return (z if weight is None else z * weight.to(x_c.dtype)).to(x.dtype), (rstd,)

    def save(
        self,
        x: Tensor,
        params: tuple[Tensor | None, ...],
        z: Tensor,
        buffers: tuple[Tensor, ...],
        needs: tuple[bool, ...],
    ) -> RMSNormSaved:
        return RMSNormSaved(x, params[0], buffers[0])

    def statistic(self, saved: RMSNormSaved, x: Tensor) -> Tensor:
        """r of x (``saved.x`` in the dtype computed in), recomputed with differentiable ops where
        a double backward is being recorded."""
        return rms_statistic(x, self.normalized_ndim, self.eps) if torch.is_grad_enabled() else saved.rstd

    def vjps(self, delta: Tensor, saved: RMSNormSaved, needs: tuple[bool, ...]) -> tuple[Tensor | None, ...]:
        needs_x, needs_weight = needs
        x = opmath(saved.x)
        delta_c = delta.to(x.dtype)
        rstd = self.statistic(saved, x)
        x_hat = x * rstd
        grad_x = grad_weight = None
        if needs_x:
            dims = example_dims(delta, self.normalized_ndim)
            g = delta_c if saved.weight is None else delta_c * saved.weight.to(x.dtype)
            # ∂C/∂x = r·(g − x̂ ⊙ ⟨g ⊙ x̂⟩): through x̂ directly and through r
            grad_x = rstd * (g - x_hat * (g * x_hat).mean(dims, keepdim=True))
            grad_x = grad_x.to(saved.x.dtype)
        if needs_weight:
            # BP4's analogue: ∂C/∂γ = Σ δ ⊙ x̂
            grad_weight = batch_sum(delta_c * x_hat, self.normalized_ndim)
        return grad_x, grad_weight

    def input_vjp(self, delta: Tensor, saved: RMSNormSaved) -> Tensor:
        grad_x = self.vjps(delta, saved, (True, False))[0]
        assert grad_x is not None
        return grad_x

    def param_vjps(self, delta: Tensor, saved: RMSNormSaved, needs: tuple[bool, ...]) -> tuple[Tensor | None, ...]:
        return self.vjps(delta, saved, (False, *needs))[1:]

    def jvp(self, saved: RMSNormSaved, x_t: Tensor | None, *params_t: Tensor | None) -> Tensor:
        (weight_t,) = params_t
        x = opmath(saved.x)
        rstd = self.statistic(saved, x)
        x_hat = x * rstd
        z_t = torch.zeros_like(x)
        if x_t is not None:
            dims = example_dims(x_t, self.normalized_ndim)
            # ẋ̂ = r·(ẋ − x̂ ⊙ ⟨x̂ ⊙ ẋ⟩)
            x_hat_t = rstd * (x_t - x_hat * (x_hat * x_t).mean(dims, keepdim=True))
            z_t = z_t + (x_hat_t if saved.weight is None else saved.weight.to(x.dtype) * x_hat_t)
        # ż = γ ⊙ ẋ̂ + γ̇ ⊙ x̂
        if weight_t is not None:
            z_t = z_t + weight_t.to(x.dtype) * x_hat
        return z_t.to(saved.x.dtype)

    @classmethod
    def samples(cls, dtype: torch.dtype, device: torch.device | str) -> list[Sample]:
        def make(*shape: int) -> Tensor:
            return torch.randn(shape, dtype=dtype, device=device)

        return [
            Sample("affine, (N, D)", cls(), make(4, 5), (make(5),)),
            Sample("affine, (N, L, D), eps 1e-3", cls(eps=1e-3), make(2, 3, 4), (make(4),)),
            Sample("not affine, over two dimensions", cls(2), make(3, 2, 3), (None,)),
            Sample("no batch dimension", cls(), make(5), (make(5),)),
            Sample("non-contiguous", cls(), make(4, 3).t(), (make(4),)),
        ]
