"""Batch normalisation: z = γ x̂ + β with x̂ = (x − μ)·invstd, per channel, and its backward.

Conventions (PyTorch's): ``x`` is ``(N, C, *)`` (``(N, C)``, ``(N, C, L)``, ``(N, C, H, W)``),
channel dimension 1; ``weight`` γ, ``bias`` β, ``running_mean`` and ``running_var`` are ``(C,)``.
Every sum Σ runs over the m = N·L (or N·H·W) values of one channel, and invstd = 1/√(σ² + ε).

In training, μ and σ² (biased) are the batch's own statistics, so x moves z through x̂, μ and σ²
alike; in eval, μ and σ² are the running statistics, and the layer is an affine map per channel.

The backward is written out twice: as the equations (the reference, and the double backward,
where μ and invstd are recomputed from x with differentiable ops), and as ATen's fused kernel
``native_batch_norm_backward`` (two passes over memory instead of five), which computes the very
same equations and is used whenever no double backward is being recorded. The tests check one
against the other.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch
from torch import Tensor

from .base import Derivatives, Sample


def channel_dims(x: Tensor) -> list[int]:
    """The dimensions a channel's statistics run over: every one but the channel dimension 1."""
    return [0, *range(2, x.dim())]


def per_channel(v: Tensor, x: Tensor) -> Tensor:
    """A ``(C,)`` vector shaped ``(C, 1, …)`` to broadcast against ``x`` ``(N, C, *)``, in ``x``'s dtype."""
    return v.to(x.dtype).reshape(v.shape[0], *([1] * (x.dim() - 2)))


def normalized(x: Tensor, mean: Tensor, invstd: Tensor) -> Tensor:
    """x̂ = (x − μ)·invstd, shape of ``x``."""
    return (x - per_channel(mean, x)) * per_channel(invstd, x)


def batch_statistics(x: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """μ and invstd = 1/√(σ² + ε) of ``x`` ``(N, C, *)`` per channel (σ² biased), with differentiable ops."""
    var, mean = torch.var_mean(x, channel_dims(x), correction=0)
    return mean, torch.rsqrt(var + eps)


class BatchNormSaved(NamedTuple):
    """x (where x̂ is needed), γ, and the statistics: the batch's μ and invstd (buffers) in
    training, the running μ and σ² in eval (``None`` in the other mode)."""

    x: Tensor | None
    weight: Tensor | None
    mean: Tensor | None
    invstd: Tensor | None
    running_mean: Tensor | None
    running_var: Tensor | None


@dataclass(frozen=True)
class BatchNorm(Derivatives):
    """z = γ x̂ + β, x̂ = (x − μ)·invstd: ∂C/∂β = Σ δ, ∂C/∂γ = Σ δ ⊙ x̂, and in training
    ∂C/∂x = (γ·invstd / m)·(m·δ − Σδ − x̂ ⊙ Σ(δ ⊙ x̂)); in eval ∂C/∂x = δ·γ·invstd.

    Attributes:
        training: normalise with the batch's statistics (buffers ``(mean, invstd)``, each
            ``(C,)``) rather than the running ones.
        eps: ε, added to σ² before the square root.
        momentum: in training, the weight of the batch's statistics when the forward pass moves
            ``running_mean`` and ``running_var`` (where given) towards them, in place, in ATen's
            own kernel: running ← (1 − momentum)·running + momentum·batch, with the unbiased
            variance, exactly as ``torch.nn.functional.batch_norm`` does.

    The parameters are ``weight`` γ and ``bias`` β (``None`` for ``affine=False``), then
    ``running_mean`` and ``running_var``: normalised with in eval; in training only updated, so
    they get no gradient there (z does not depend on them).
    """

    kind: ClassVar[str] = "batch_norm"
    params: ClassVar[tuple[str, ...]] = ("weight", "bias", "running_mean", "running_var")
    Saved: ClassVar[type[BatchNormSaved]] = BatchNormSaved
    saves_own: ClassVar[bool] = True

    training: bool = True
    eps: float = 1e-5
    momentum: float = 0.0

    def forward(self, x: Tensor, *params: Tensor | None) -> tuple[Tensor, tuple[Tensor, ...]]:
        weight, bias, running_mean, running_var = params
        if self.training and x.numel() == 0:
            # an empty batch: nothing to normalise, no statistics to move (as torch's batch norm)
            channels = x.shape[1]
            return x.new_empty(x.shape), (x.new_zeros(channels), x.new_zeros(channels))
        if self.training:
            if not self.momentum:  # nothing to move (and NaN statistics cannot reach the running ones)
                running_mean = running_var = None
            z, mean, invstd = torch.native_batch_norm(
                x, weight, bias, running_mean, running_var, True, self.momentum, self.eps
            )
            return z, (mean, invstd)
        return torch.native_batch_norm(x, weight, bias, running_mean, running_var, False, 0.0, self.eps)[0], ()

    def save(
        self,
        x: Tensor,
        params: tuple[Tensor | None, ...],
        z: Tensor,
        buffers: tuple[Tensor, ...],
        needs: tuple[bool, ...],
    ) -> BatchNormSaved:
        needs_x, needs_weight, _, _, needs_running_var = needs
        # x̂ is read by ∂C/∂γ, by ∂C/∂σ²_run, and in training by ∂C/∂x (through μ and σ²)
        keep_x = needs_weight or needs_running_var or (self.training and needs_x)
        weight, _, running_mean, running_var = params
        if self.training:
            mean, invstd = buffers
            return BatchNormSaved(x if keep_x else None, weight, mean, invstd, None, None)
        return BatchNormSaved(x if keep_x else None, weight, None, None, running_mean, running_var)

    def statistics(self, saved: BatchNormSaved) -> tuple[Tensor, Tensor]:
        """μ and invstd the forward pass normalised with, differentiable where a double backward
        is being recorded (the buffers are constants to autograd, so μ and invstd are then
        recomputed from x)."""
        if not self.training:
            assert saved.running_mean is not None and saved.running_var is not None
            # eval: invstd = 1/√(σ²_run + ε)
            return saved.running_mean, torch.rsqrt(saved.running_var + self.eps)
        if torch.is_grad_enabled() and saved.x is not None:
            return batch_statistics(saved.x, self.eps)
        assert saved.mean is not None and saved.invstd is not None
        return saved.mean, saved.invstd

    def scale(self, saved: BatchNormSaved, invstd: Tensor) -> Tensor:
        """γ·invstd per channel (invstd alone without γ)."""
        return invstd if saved.weight is None else saved.weight * invstd

    def input_vjp(self, delta: Tensor, saved: BatchNormSaved) -> Tensor:
        if self.training and not torch.is_grad_enabled():
            # ATen's fused kernel for the equation below: one pass for Σδ and Σ δ ⊙ x̂, one for ∂C/∂x
            grad_x = self.kernel(delta, saved, [True, False, False])[0]
            assert grad_x is not None
            return grad_x
        mean, invstd = self.statistics(saved)
        scale = self.scale(saved, invstd)
        if not self.training:
            # eval, an affine map per channel: ∂C/∂x = δ·γ·invstd
            return delta * per_channel(scale, delta)
        assert saved.x is not None
        x_hat = normalized(saved.x, mean, invstd)
        m = delta.numel() // delta.shape[1]
        dims = channel_dims(delta)
        # Σ δ and Σ δ ⊙ x̂ per channel: what δ sends back through μ and through σ²
        sum_delta = delta.sum(dims, keepdim=True)
        sum_delta_x_hat = (delta * x_hat).sum(dims, keepdim=True)
        # ∂C/∂x = (γ·invstd / m)·(m·δ − Σδ − x̂ ⊙ Σ(δ ⊙ x̂)): through x̂ directly, through μ, through σ²
        return per_channel(scale / m, delta) * (m * delta - sum_delta - x_hat * sum_delta_x_hat)

    def sums(
        self, delta: Tensor, saved: BatchNormSaved, x_hat_sum: bool, delta_sum: bool
    ) -> tuple[Tensor | None, Tensor | None]:
        """Σ δ ⊙ x̂ and Σ δ per channel, each ``(C,)``, ``None`` where not asked for."""
        if x_hat_sum and not torch.is_grad_enabled():
            # ATen's fused kernel: Σ δ ⊙ x̂ (its ∂C/∂γ) and Σ δ (its ∂C/∂β) in one pass over δ and x
            _, sum_delta_x_hat, sum_delta = self.kernel(delta, saved, [False, True, delta_sum])
            return sum_delta_x_hat, sum_delta
        dims = channel_dims(delta)
        sum_delta_x_hat = None
        if x_hat_sum:
            assert saved.x is not None
            sum_delta_x_hat = (delta * normalized(saved.x, *self.statistics(saved))).sum(dims)
        return sum_delta_x_hat, delta.sum(dims) if delta_sum else None

    def replay(self) -> BatchNorm:
        return dataclasses.replace(self, momentum=0.0)

    def vjps(self, delta: Tensor, saved: BatchNormSaved, needs: tuple[bool, ...]) -> tuple[Tensor | None, ...]:
        needs_x, needs_weight, needs_bias, needs_running_mean, needs_running_var = needs
        if delta.numel() == 0:  # an empty batch: every sum over it is 0
            zeros = delta.new_zeros(delta.shape[1])
            grad_x = torch.zeros_like(delta) if needs_x else None
            return grad_x, *(zeros if need else None for need in needs[1:])
        if (
            torch.is_grad_enabled()
            or saved.x is None
            or (self.training and not needs_x)
            or (not self.training and (needs_running_mean or needs_running_var))
        ):
            return super().vjps(delta, saved, needs)
        # ATen's fused kernel for ∂C/∂x, ∂C/∂γ = Σ δ ⊙ x̂ and ∂C/∂β = Σ δ together: two passes over δ and x
        grad_x, grad_weight, grad_bias = self.kernel(
            delta, saved, [needs_x, needs_weight and saved.weight is not None, needs_bias]
        )
        return grad_x, grad_weight, grad_bias, None, None

    def kernel(
        self, delta: Tensor, saved: BatchNormSaved, mask: list[bool]
    ) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        """ATen's ``native_batch_norm_backward``: ∂C/∂x, Σ δ ⊙ x̂ (∂C/∂γ, whatever γ is) and Σ δ,
        where ``mask`` says (``None`` elsewhere: on CUDA the kernel can return a sum it was not
        asked for); the same equations as the written ones, in two passes over δ and x."""
        mean, invstd, weight = saved.mean, saved.invstd, saved.weight
        statistic = mean if self.training else saved.running_mean
        assert statistic is not None
        if not self.training:
            # as ATen's own eval-mode batch norm hands them over: empty, the running statistics
            # being read instead (CUDA's kernel refuses undefined ones)
            mean = invstd = statistic.new_empty(0)
        if weight is None and (mask[1] or mask[2]):
            # γ = 1: CUDA's kernel sums δ ⊙ x̂ and δ only for a layer with γ (the sums do not read it)
            weight = statistic.new_ones(delta.shape[1])
        sums = torch.ops.aten.native_batch_norm_backward.default(
            delta,
            saved.x,
            weight,
            saved.running_mean,
            saved.running_var,
            mean,
            invstd,
            self.training,
            self.eps,
            mask,
        )
        grad_x, sum_delta_x_hat, sum_delta = (value if wanted else None for value, wanted in zip(sums, mask))
        return grad_x, sum_delta_x_hat, sum_delta

    def param_vjps(self, delta: Tensor, saved: BatchNormSaved, needs: tuple[bool, ...]) -> tuple[Tensor | None, ...]:
        needs_weight, needs_bias, needs_running_mean, needs_running_var = needs
        if self.training:
            needs_running_mean = needs_running_var = False  # z does not depend on them in training
        sum_delta_x_hat, sum_delta = self.sums(
            delta, saved, needs_weight or needs_running_var, needs_bias or needs_running_mean
        )
        grad_weight = grad_bias = grad_running_mean = grad_running_var = None
        if needs_weight:
            # BP4's analogue: ∂C/∂γ = Σ δ ⊙ x̂
            grad_weight = sum_delta_x_hat
        if needs_bias:
            # BP3's analogue: ∂C/∂β = Σ δ
            grad_bias = sum_delta
        if needs_running_mean or needs_running_var:
            _, invstd = self.statistics(saved)
            scale = self.scale(saved, invstd)
            if needs_running_mean:
                assert sum_delta is not None
                # eval: ∂C/∂μ_run = −γ·invstd·Σ δ
                grad_running_mean = -scale * sum_delta
            if needs_running_var:
                assert sum_delta_x_hat is not None
                # eval: ∂C/∂σ²_run = −½·γ·invstd²·Σ δ ⊙ x̂   (∂invstd/∂σ² = −½ invstd³)
                grad_running_var = -0.5 * scale * invstd * sum_delta_x_hat
        return grad_weight, grad_bias, grad_running_mean, grad_running_var

    def jvp(self, saved: BatchNormSaved, x_t: Tensor | None, *params_t: Tensor | None) -> Tensor:
        weight_t, bias_t, running_mean_t, running_var_t = params_t
        x = saved.x
        assert x is not None
        mean, invstd = self.statistics(saved)
        x_hat = normalized(x, mean, invstd)
        dims = channel_dims(x)
        # ẋ̂, the tangent of x̂ = (x − μ)·invstd
        x_hat_t: Tensor | None = None
        if x_t is not None and self.training:
            # μ̇ = mean(ẋ), invstḋ = −invstd·mean(x̂ ⊙ ẋ): ẋ̂ = invstd·(ẋ − mean(ẋ) − x̂ ⊙ mean(x̂ ⊙ ẋ))
            centred_t = x_t - x_t.mean(dims, keepdim=True) - x_hat * (x_hat * x_t).mean(dims, keepdim=True)
            x_hat_t = per_channel(invstd, x) * centred_t
        elif x_t is not None:
            # eval: ẋ̂ = invstd·ẋ
            x_hat_t = per_channel(invstd, x) * x_t
        if running_mean_t is not None:
            # eval: ẋ̂ −= invstd·μ̇_run
            shift_t = per_channel(-invstd * running_mean_t, x)
            x_hat_t = shift_t if x_hat_t is None else x_hat_t + shift_t
        if running_var_t is not None:
            # eval: ẋ̂ −= ½·invstd²·x̂·σ̇²_run
            stretch_t = per_channel(-0.5 * invstd * invstd * running_var_t, x) * x_hat
            x_hat_t = stretch_t if x_hat_t is None else x_hat_t + stretch_t
        # ż = γ ẋ̂ + γ̇ x̂ + β̇
        z_t = torch.zeros_like(x)
        if x_hat_t is not None:
            z_t = z_t + (x_hat_t if saved.weight is None else per_channel(saved.weight, x) * x_hat_t)
        if weight_t is not None:
            z_t = z_t + per_channel(weight_t, x) * x_hat
        if bias_t is not None:
            z_t = z_t + per_channel(bias_t, x)
        return z_t

    @classmethod
    def samples(cls, dtype: torch.dtype, device: torch.device | str) -> list[Sample]:
        def make(*shape: int) -> Tensor:
            return torch.randn(shape, dtype=dtype, device=device)

        def running(channels: int) -> tuple[Tensor, Tensor]:
            return make(channels), torch.rand(channels, dtype=dtype, device=device) + 0.5

        train, evaluate = cls(True), cls(False, eps=1e-3)
        return [
            Sample("train, affine, (N, C)", train, make(4, 3), (make(3), make(3), None, None)),
            Sample("train, affine, (N, C, L)", train, make(2, 3, 4), (make(3), make(3), None, None)),
            Sample("train, not affine, 2d", train, make(2, 2, 3, 2), (None, None, None, None)),
            Sample("train, batch of 2, eps 1e-3", cls(True, 1e-3), make(2, 3), (make(3), make(3), None, None)),
            Sample("train, non-contiguous", train, make(3, 2, 2).transpose(0, 2), (make(2), make(2), None, None)),
            Sample("eval, affine, 2d", evaluate, make(2, 3, 2, 2), (make(3), make(3), *running(3))),
            Sample("eval, not affine, (N, C)", evaluate, make(3, 2), (None, None, *running(2))),
            Sample(
                "eval, non-contiguous (N, C, L)", evaluate, make(3, 2, 2).transpose(0, 2), (make(2), None, *running(2))
            ),
        ]
