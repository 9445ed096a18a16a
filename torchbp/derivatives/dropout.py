"""Dropout: z = x ⊙ m̃ with m̃ = m / (1 − p) and m a fresh Bernoulli(1 − p) mask per call.

``draw_mask`` draws m̃ exactly as ``torch.nn.functional.dropout`` draws its mask (on the CPU,
and for ``inplace=True`` everywhere, a tensor like x filled by ``bernoulli_(1 − p)`` then divided
by 1 − p; otherwise on CUDA, the boolean mask of ATen's fused ``native_dropout`` of x), so for one
RNG state torchbp's output equals torch's.
The mask is drawn just before the layer's Function and handed to it as a second input that needs
no gradient: the Function itself is deterministic, so whatever replays it (gradcheck, forward-mode
AD batched under vmap, which refuses random ops) sees the same mask, and its backward reads the
mask as it reads any saved input.

The layer is the elementwise product z = x ⊙ m̃: ∂C/∂x = δ ⊙ m̃ (BP2's analogue) and, for
completeness, ∂C/∂m̃ = δ ⊙ x.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch
from torch import Tensor

from .base import Derivatives, Sample


def fused_kernel(x: Tensor, p: float, inplace: bool = False) -> bool:
    """Whether ``torch.nn.functional.dropout`` takes ATen's fused ``native_dropout`` for x (CUDA,
    XPU; never in place), which draws its mask from its own random stream."""
    return not inplace and x.device.type in ("cuda", "xpu", "lazy", "privateuseone") and 0 < p < 1 and x.numel() > 0


def draw_mask(x: Tensor, p: float, inplace: bool = False) -> Tensor:
    """m̃ = m / (1 − p), m ~ Bernoulli(1 − p) elementwise, shaped and typed like x, drawn as
    ``torch.nn.functional.dropout(x, p, inplace=inplace)`` draws it (the same random numbers for
    one RNG state).

    Args:
        x: the input, any shape.
        p: the probability of dropping an element, in ``[0, 1]``; 1 gives a mask of zeros.
        inplace: draw as torch's in-place dropout does (never its fused kernel).

    Returns:
        m̃, the shape of x, with entries 0 and 1 / (1 − p).
    """
    if p == 1:
        return torch.zeros_like(x)
    if fused_kernel(x, p, inplace):
        # the fused kernel's own draw on x itself (its random stream depends on x's layout)
        kept = torch.ops.aten.native_dropout.default(x.detach(), p, True)[1]
        return kept.to(x.dtype).div_(1 - p)
    return torch.empty_like(x).bernoulli_(1 - p).div_(1 - p)


class DropoutSaved(NamedTuple):
    """m̃ for ∂C/∂x (where wanted), x for ∂C/∂m̃ (where wanted)."""

    mask: Tensor | None
    x: Tensor | None


@dataclass(frozen=True)
class Dropout(Derivatives):
    """z = x ⊙ m̃, m̃ = m / (1 − p) drawn by ``draw_mask``; ∂C/∂x = δ ⊙ m̃, ∂C/∂m̃ = δ ⊙ x."""

    kind: ClassVar[str] = "dropout"
    params: ClassVar[tuple[str, ...]] = ("mask",)
    Saved: ClassVar[type[DropoutSaved]] = DropoutSaved

    def forward(self, x: Tensor, *params: Tensor | None) -> tuple[Tensor, tuple[Tensor, ...]]:
        (mask,) = params
        assert mask is not None
        return x * mask, ()

    def save(
        self,
        x: Tensor,
        params: tuple[Tensor | None, ...],
        z: Tensor,
        buffers: tuple[Tensor, ...],
        needs: tuple[bool, ...],
    ) -> DropoutSaved:
        return DropoutSaved(params[0] if needs[0] else None, x if needs[1] else None)

    def input_vjp(self, delta: Tensor, saved: DropoutSaved) -> Tensor:
        assert saved.mask is not None
        # ∂C/∂x = δ ⊙ m / (1 − p): the dropped elements get no error
        return delta * saved.mask

    def param_vjps(self, delta: Tensor, saved: DropoutSaved, needs: tuple[bool, ...]) -> tuple[Tensor | None, ...]:
        assert saved.x is not None
        # ∂C/∂m̃ = δ ⊙ x
        return (delta * saved.x,)

    def jvp(self, saved: DropoutSaved, x_t: Tensor | None, *params_t: Tensor | None) -> Tensor:
        assert saved.mask is not None and saved.x is not None
        (mask_t,) = params_t
        # ż = ẋ ⊙ m̃ + x ⊙ m̃̇
        z_t = torch.zeros_like(saved.x) if x_t is None else x_t * saved.mask
        return z_t if mask_t is None else z_t + saved.x * mask_t

    @classmethod
    def samples(cls, dtype: torch.dtype, device: torch.device | str) -> list[Sample]:
        def make(*shape: int) -> Tensor:
            return torch.randn(shape, dtype=dtype, device=device)

        x, x_t, x_1, x_0 = make(2, 3, 4), make(5, 3).t(), make(1), make(2, 3)
        return [
            Sample("p 0.5, batch of 2", cls(), x, (draw_mask(x, 0.5),)),
            Sample("p 0.2, transposed input", cls(), x_t, (draw_mask(x_t, 0.2),)),
            Sample("p 0.9, one value", cls(), x_1, (draw_mask(x_1, 0.9),)),
            Sample("p 1: all dropped", cls(), x_0, (draw_mask(x_0, 1.0),)),
        ]
