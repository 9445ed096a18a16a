"""LayerNorm and RMSNorm: torch's modules, normalising through ``torchbp.functional.norm``."""

from __future__ import annotations

import torch
from torch import Tensor

from ..derivatives import norm as derivatives
from ..functional.norm import check_norm, default_rms_eps, layer_norm, rms_norm
from ..hookspecs import hookimpl
from ..specs import LayerSpec
from .delta_hooks import DeltaHooks


class LayerNorm(DeltaHooks, torch.nn.LayerNorm):
    """z = γ ⊙ (x − μ)/√(σ² + ε) + β per example over the trailing ``normalized_shape``, like
    ``torch.nn.LayerNorm``; input and output ``(*, *normalized_shape)``.

    Examples:
        >>> layer = LayerNorm(4)
        >>> sorted(layer.state_dict())
        ['bias', 'weight']
    """

    def forward(self, input: Tensor) -> Tensor:
        return layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps, self.on_delta())

    def link(self, x: Tensor) -> derivatives.LayerNorm:
        check_norm(x, self.normalized_shape, weight=self.weight, bias=self.bias)
        return derivatives.LayerNorm(len(self.normalized_shape), self.eps)

    def link_params(self) -> tuple[Tensor | None, ...]:
        return self._parameters["weight"], self._parameters["bias"]


class RMSNorm(DeltaHooks, torch.nn.RMSNorm):
    """z = γ ⊙ x/√(⟨x²⟩ + ε) per example over the trailing ``normalized_shape``, like
    ``torch.nn.RMSNorm``; input and output ``(*, *normalized_shape)``.

    Examples:
        >>> layer = RMSNorm(4)
        >>> sorted(layer.state_dict())
        ['weight']
    """

    def forward(self, input: Tensor) -> Tensor:
        return rms_norm(input, self.normalized_shape, self.weight, self.eps, self.on_delta())

    def link(self, x: Tensor) -> derivatives.RMSNorm:
        check_norm(x, self.normalized_shape, any_dtype=True, weight=self.weight)
        return derivatives.RMSNorm(len(self.normalized_shape), default_rms_eps(x) if self.eps is None else self.eps)

    def link_params(self) -> tuple[Tensor | None, ...]:
        return (self._parameters["weight"],)


def _randomised(module: torch.nn.Module) -> torch.nn.Module:
    """``module`` with random γ and β, so that none of them is 1 or 0."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_()
    return module


def _layer_norm_examples(dtype: torch.dtype) -> list[tuple[torch.nn.Module, Tensor]]:
    return [
        (_randomised(torch.nn.LayerNorm(5, dtype=dtype)), torch.randn(4, 5, dtype=dtype)),
        (_randomised(torch.nn.LayerNorm((3, 4), eps=1e-3, dtype=dtype)), torch.randn(2, 5, 3, 4, dtype=dtype)),
        (torch.nn.LayerNorm(4, elementwise_affine=False, dtype=dtype), torch.randn(3, 2, 4, dtype=dtype)),
        (_randomised(torch.nn.LayerNorm(4, bias=False, dtype=dtype)), torch.randn(6, 4, dtype=dtype)),
    ]


def _rms_norm_examples(dtype: torch.dtype) -> list[tuple[torch.nn.Module, Tensor]]:
    return [
        (_randomised(torch.nn.RMSNorm(5, dtype=dtype)), torch.randn(4, 5, dtype=dtype)),
        (_randomised(torch.nn.RMSNorm((3, 4), eps=1e-3, dtype=dtype)), torch.randn(2, 5, 3, 4, dtype=dtype)),
        (torch.nn.RMSNorm(4, elementwise_affine=False, dtype=dtype), torch.randn(3, 2, 4, dtype=dtype)),
    ]


@hookimpl
def torchbp_layers() -> list[LayerSpec]:
    return [
        LayerSpec(
            "LayerNorm",
            "z = γ x̂ + β, x̂ = (x − μ)/√(σ² + ε) per example; ∂C/∂β = Σ δ, ∂C/∂γ = Σ δ ⊙ x̂, "
            "∂C/∂x = r·(g − ⟨g⟩ − x̂ ⟨g ⊙ x̂⟩), g = δ ⊙ γ",
            torch.nn.LayerNorm,
            LayerNorm,
            derivatives.LayerNorm,
            _layer_norm_examples,
        ),
        LayerSpec(
            "RMSNorm",
            "z = γ x̂, x̂ = x/√(⟨x²⟩ + ε) per example; ∂C/∂γ = Σ δ ⊙ x̂, ∂C/∂x = r·(g − x̂ ⟨g ⊙ x̂⟩), g = δ ⊙ γ",
            torch.nn.RMSNorm,
            RMSNorm,
            derivatives.RMSNorm,
            _rms_norm_examples,
        ),
    ]
