"""Twins of torch.nn's activation modules: a = σ(z) with the explicit backward δ = ∂C/∂a ⊙ σ′(z)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .. import functional as F
from ..derivatives.activations import Activation, get_activation
from ..functional.checks import check_dim, check_tensor
from ..hookspecs import hookimpl
from ..specs import LayerSpec
from .link import Linked

_SIGMOID = get_activation("sigmoid")
_TANH = get_activation("tanh")
_RELU = get_activation("relu")
_SILU = get_activation("silu")
_IDENTITY = get_activation("identity")


class _Activation(Linked):
    """What the activation twins share: in a chain, the layer is its σ."""

    def sigma(self) -> Activation:
        """This layer's σ, with its options."""
        raise NotImplementedError

    def link(self, x: Tensor) -> Activation:
        check_tensor("input", x)
        return self.sigma()


class Sigmoid(_Activation, torch.nn.Sigmoid):
    """a = sigmoid(z), like ``torch.nn.Sigmoid``; any shape."""

    def sigma(self) -> Activation:
        return _SIGMOID

    def forward(self, input: Tensor) -> Tensor:
        return F.sigmoid(input)


class Tanh(_Activation, torch.nn.Tanh):
    """a = tanh(z), like ``torch.nn.Tanh``; any shape."""

    def sigma(self) -> Activation:
        return _TANH

    def forward(self, input: Tensor) -> Tensor:
        return F.tanh(input)


class ReLU(_Activation, torch.nn.ReLU):
    """a = max(z, 0), like ``torch.nn.ReLU``; ``inplace`` is accepted, the result is computed out of place."""

    def sigma(self) -> Activation:
        return _RELU

    def forward(self, input: Tensor) -> Tensor:
        return F.relu(input)


class LeakyReLU(_Activation, torch.nn.LeakyReLU):
    """Like ``torch.nn.LeakyReLU(negative_slope, inplace)``; computed out of place."""

    def sigma(self) -> Activation:
        return get_activation("leaky_relu", negative_slope=self.negative_slope)

    def forward(self, input: Tensor) -> Tensor:
        return F.leaky_relu(input, self.negative_slope)


class ELU(_Activation, torch.nn.ELU):
    """Like ``torch.nn.ELU(alpha, inplace)``; computed out of place."""

    def sigma(self) -> Activation:
        return get_activation("elu", alpha=self.alpha)

    def forward(self, input: Tensor) -> Tensor:
        return F.elu(input, self.alpha)


class Softplus(_Activation, torch.nn.Softplus):
    """Like ``torch.nn.Softplus(beta, threshold)``."""

    def sigma(self) -> Activation:
        return get_activation("softplus", beta=self.beta, threshold=self.threshold)

    def forward(self, input: Tensor) -> Tensor:
        return F.softplus(input, self.beta, self.threshold)


class GELU(_Activation, torch.nn.GELU):
    """Like ``torch.nn.GELU(approximate)``, ``"none"`` (erf) or ``"tanh"``."""

    def sigma(self) -> Activation:
        return get_activation("gelu", approximate=self.approximate)

    def forward(self, input: Tensor) -> Tensor:
        return F.gelu(input, self.approximate)


class SiLU(_Activation, torch.nn.SiLU):
    """a = z sigmoid(z), like ``torch.nn.SiLU``; computed out of place."""

    def sigma(self) -> Activation:
        return _SILU

    def forward(self, input: Tensor) -> Tensor:
        return F.silu(input)


class Identity(_Activation, torch.nn.Identity):
    """a = z, like ``torch.nn.Identity`` (its arguments are ignored too)."""

    def sigma(self) -> Activation:
        return _IDENTITY

    def forward(self, input: Tensor) -> Tensor:
        return F.identity(input)


class Softmax(_Activation, torch.nn.Softmax):
    """Like ``torch.nn.Softmax(dim)``; ``dim=None`` picks a dim as ``torch.nn.Softmax`` does, and warns."""

    def sigma(self) -> Activation:
        return get_activation("softmax", dim=self.dim)

    def link(self, x: Tensor) -> Activation:
        assert self.dim is not None  # linkable() says so
        check_dim("softmax", check_tensor("input", x), self.dim)
        return self.sigma()

    def linkable(self) -> bool:
        return self.dim is not None  # an implicit dim warns in the layer's own call

    def forward(self, input: Tensor) -> Tensor:
        dim = self.dim
        if dim is None:
            warnings.warn(
                "Implicit dimension choice for softmax has been deprecated. "
                "Change the call to include dim=X as an argument.",
                stacklevel=2,
            )
            dim = 0 if input.dim() in (0, 1, 3) else 1
        return F.softmax(input, dim)


_ACTIVATIONS: list[tuple[str, type[torch.nn.Module], type[torch.nn.Module], dict[str, object]]] = [
    ("Sigmoid", torch.nn.Sigmoid, Sigmoid, {}),
    ("Tanh", torch.nn.Tanh, Tanh, {}),
    ("ReLU", torch.nn.ReLU, ReLU, {}),
    ("LeakyReLU", torch.nn.LeakyReLU, LeakyReLU, {"negative_slope": 0.2}),
    ("ELU", torch.nn.ELU, ELU, {"alpha": 0.7}),
    ("Softplus", torch.nn.Softplus, Softplus, {"beta": 2.0, "threshold": 3.0}),
    ("GELU", torch.nn.GELU, GELU, {"approximate": "tanh"}),
    ("SiLU", torch.nn.SiLU, SiLU, {}),
    ("Identity", torch.nn.Identity, Identity, {}),
    ("Softmax", torch.nn.Softmax, Softmax, {"dim": 1}),
]


@hookimpl
def torchbp_layers() -> list[LayerSpec]:
    def examples(module: type[torch.nn.Module], options: dict[str, object]) -> Callable[..., list[Any]]:
        return lambda dtype: [
            (module(**options), torch.randn(4, 5, dtype=dtype)),
            (module(**options), torch.randn(3, 2, 2, dtype=dtype)),
        ]

    return [
        LayerSpec(name, f"a = {name}(z); δ = ∂C/∂a ⊙ σ′(z)", module, twin, Activation, examples(module, options))
        for name, module, twin, options in _ACTIVATIONS
    ]
