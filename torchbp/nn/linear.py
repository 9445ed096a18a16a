"""Linear and the fused dense layer σ(x Wᵀ + b)."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import functional as F
from ..derivatives import linear as derivatives
from ..derivatives.activations import Activation
from ..derivatives.base import Derivatives
from ..functional.checks import check_linear
from ..hookspecs import hookimpl
from ..specs import LayerSpec
from .delta_hooks import DeltaHooks
from .feedback import FeedbackLayer, stack_feedback

_LINEAR = derivatives.Linear()


class Linear(FeedbackLayer, DeltaHooks, torch.nn.Linear):
    """z = x Wᵀ + b, like ``torch.nn.Linear``; input ``(*, in_features)``, output ``(*, out_features)``.

    With a feedback rule (``torchbp.nn.convert`` ``feedback=``), BP2 reads the buffer
    ``feedback_weight`` B in W's place: ∂C/∂x = δ B (or e B for a direct rule).

    Examples:
        >>> layer = Linear(3, 2)
        >>> sorted(layer.state_dict())
        ['bias', 'weight']
    """

    def forward(self, input: Tensor) -> Tensor:
        if self._feedback is not None and torch.is_grad_enabled():
            params = self.link_params()
            return F.apply_layer(self.linked(input, params), input, params, self.on_delta())
        return F.linear(input, self.weight, self.bias, self.on_delta())

    def link(self, x: Tensor) -> Derivatives:
        check_linear(x, self._parameters["weight"], self._parameters["bias"], ("input", "weight", "bias"))
        return _LINEAR

    def link_params(self) -> tuple[Tensor | None, ...]:
        return self._parameters["weight"], self._parameters["bias"]


class Dense(FeedbackLayer, DeltaHooks, torch.nn.Module):
    """The fused layer a = σ(x Wᵀ + b), one autograd node.

    With a feedback rule, BP2 reads the buffer ``feedback_weight`` B in W's place (the layer then
    runs as a one-layer ``torchbp.functional.mlp`` node, which takes the rule's B).

    ``weight`` ``(out_features, in_features)`` and ``bias`` ``(out_features,)`` are named, shaped
    and initialised like ``torch.nn.Linear``'s. Input ``(*, in_features)``, output ``(*, out_features)``.

    Args:
        activation: a name from ``torchbp.functional.ACTIVATIONS`` or an
            ``Activation``, e.g.
            ``get_activation("leaky_relu", negative_slope=0.2)``.

    Examples:
        >>> Dense(3, 2, "tanh")
        Dense(in_features=3, out_features=2, activation=tanh(), bias=True)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        activation: str | Activation = "sigmoid",
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation = F.get_activation(activation)
        self.weight = torch.nn.Parameter(torch.empty(out_features, in_features, device=device, dtype=dtype))
        if bias:
            self.bias = torch.nn.Parameter(torch.empty(out_features, device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)  # as torch.nn.Linear does
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise exactly as ``torch.nn.Linear`` does (Kaiming-uniform weight, uniform bias)."""
        torch.nn.Linear.reset_parameters(self)  # type: ignore[arg-type]

    def forward(self, input: Tensor) -> Tensor:
        feedback = None if self._feedback is None else stack_feedback([self], input)
        if feedback is not None:
            on_delta = None if not self._delta_hooks else lambda _, delta: self._call_delta_hooks(delta)
            return F.mlp(input, [self.weight], [self.bias], [self.activation], on_delta, feedback)
        return F.dense(input, self.weight, self.bias, self.activation, self.on_delta())

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"activation={self.activation!r}, bias={self.bias is not None}"
        )


def _linear_examples(dtype: torch.dtype) -> list[tuple[torch.nn.Module, Tensor]]:
    return [
        (torch.nn.Linear(3, 2, dtype=dtype), torch.randn(5, 3, dtype=dtype)),
        (torch.nn.Linear(3, 2, bias=False, dtype=dtype), torch.randn(2, 4, 3, dtype=dtype)),
    ]


@hookimpl
def torchbp_layers() -> list[LayerSpec]:
    return [
        LayerSpec(
            "Linear",
            "z = x Wᵀ + b; ∂C/∂x = δ W (BP2), ∂C/∂W = δᵀ x (BP4), ∂C/∂b = Σ δ (BP3)",
            torch.nn.Linear,
            Linear,
            derivatives.Linear,
            _linear_examples,
        )
    ]
