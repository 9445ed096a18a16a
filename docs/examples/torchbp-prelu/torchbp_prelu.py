"""torch.nn.PReLU with its backward written out: a layer plugin for torchbp.

a = max(0, z) + α · min(0, z), with one α or one per channel (dimension 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch
from torch import Tensor

import torchbp
from torchbp.derivatives import Derivatives, Sample
from torchbp.functional import apply_layer


def _per_channel(alpha: Tensor, z: Tensor) -> Tensor:
    """α shaped to broadcast over z: one value, or one per channel of dimension 1."""
    if alpha.numel() == 1 or z.dim() < 2:
        return alpha.reshape(())
    return alpha.reshape(-1, *([1] * (z.dim() - 2)))


class PReLUSaved(NamedTuple):
    z: Tensor
    alpha: Tensor


@dataclass(frozen=True)
class PReLUDerivatives(Derivatives):
    """a = max(0, z) + α min(0, z);  ∂C/∂z = δ ⊙ (1 where z > 0, else α);  ∂C/∂α = Σ δ ⊙ min(0, z)."""

    kind: ClassVar[str] = "prelu"
    params: ClassVar[tuple[str, ...]] = ("alpha",)
    Saved: ClassVar[type[PReLUSaved]] = PReLUSaved

    def forward(self, x: Tensor, *params: Tensor | None) -> tuple[Tensor, tuple[Tensor, ...]]:
        (alpha,) = params
        assert alpha is not None
        return torch.where(x > 0, x, _per_channel(alpha, x) * x), ()

    def save(
        self,
        x: Tensor,
        params: tuple[Tensor | None, ...],
        z: Tensor,
        buffers: tuple[Tensor, ...],
        needs: tuple[bool, ...],
    ) -> PReLUSaved:
        (alpha,) = params
        assert alpha is not None
        return PReLUSaved(x, alpha)

    def input_vjp(self, delta: Tensor, saved: PReLUSaved) -> Tensor:
        # ∂C/∂z = δ ⊙ σ′(z), σ′ = 1 where z > 0, else α
        return torch.where(saved.z > 0, delta, _per_channel(saved.alpha, saved.z) * delta)

    def param_vjps(self, delta: Tensor, saved: PReLUSaved, needs: tuple[bool, ...]) -> tuple[Tensor | None, ...]:
        # ∂C/∂α = Σ δ ⊙ min(0, z), over everything but the channel α belongs to
        contribution = delta * saved.z.clamp(max=0)
        if saved.alpha.numel() == 1 or saved.z.dim() < 2:
            return (contribution.sum().reshape(saved.alpha.shape),)
        return (contribution.transpose(0, 1).reshape(saved.alpha.numel(), -1).sum(1),)

    def jvp(self, saved: PReLUSaved, x_t: Tensor | None, *params_t: Tensor | None) -> Tensor:
        z, alpha = saved
        z_t = torch.zeros_like(z)
        if x_t is not None:
            z_t = z_t + torch.where(z > 0, x_t, _per_channel(alpha, z) * x_t)
        if params_t[0] is not None:
            z_t = z_t + _per_channel(params_t[0], z) * z.clamp(max=0)
        return z_t

    @classmethod
    def samples(cls, dtype: torch.dtype, device: torch.device | str) -> list[Sample]:
        z = torch.randn(4, 3, 2, dtype=dtype, device=device)
        return [
            Sample("one α", cls(), z, (torch.rand(1, dtype=dtype, device=device),)),
            Sample("one α per channel", cls(), z, (torch.rand(3, dtype=dtype, device=device),)),
        ]


class PReLU(torchbp.nn.DeltaHooks, torch.nn.PReLU):
    """Like torch.nn.PReLU(num_parameters, init), whose backward is PReLUDerivatives'."""

    def forward(self, input: Tensor) -> Tensor:
        return apply_layer(PReLUDerivatives(), input, (self.weight,), self.on_delta())


@torchbp.hookimpl
def torchbp_layers() -> list[torchbp.LayerSpec]:
    return [
        torchbp.LayerSpec(
            "PReLU",
            "a = max(0, z) + α min(0, z), δ ⊙ (1 or α) written out",
            torch.nn.PReLU,
            PReLU,
            PReLUDerivatives,
            examples=lambda dtype: [
                (torch.nn.PReLU(dtype=dtype), torch.randn(5, 4, dtype=dtype)),
                (torch.nn.PReLU(3, dtype=dtype), torch.randn(2, 3, 4, 4, dtype=dtype)),
            ],
        )
    ]
