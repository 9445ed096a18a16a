"""MLP: a stack of dense layers run as one autograd node."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .. import functional as F
from ..derivatives.activations import Activation
from ..feedback.base import FeedbackRule, OutputError
from ..functional.internals import has_hooks
from .feedback import attach, stack_feedback
from .linear import Dense


class MLP(torch.nn.Module):
    """A stack of ``Dense`` layers run as one autograd node (``torchbp.functional.mlp``).

    ``sizes = [n₀, n₁, …, n_L]`` gives L layers. Delta hooks on its layers fire as usual; a
    module hook on a layer (forward, forward-pre, backward, backward-pre, or a global one) makes
    the stack run layer by layer, each layer through its own call, so that the hook fires.

    Args:
        sizes: the width of each layer, input first, e.g. ``[64, 30, 10]``.
        activation: σ of the hidden layers.
        output_activation: σ of the last layer; ``None`` uses ``activation`` too (as in
            Nielsen's ``network.py``), ``"identity"`` gives raw outputs (logits).
        bias: whether the layers have biases.
        feedback: the feedback rule that carries δ down (``torchbp.feedback``): a registered
            name (``"fa"``, ``"dfa"``, …) or a rule object from ``torchbp.get_feedback`` (with
            its options). Each layer keeps its B in ``layers.<l>.feedback_weight``; for ``"dfa"``
            the MLP's output is the network's (e = ∂C/∂aᴸ).

    Input ``(*, sizes[0])``, output ``(*, sizes[-1])``; parameters ``layers.<l>.weight`` / ``.bias``.

    Examples:
        >>> MLP([3, 2, 1]).layers[0].weight.shape
        torch.Size([2, 3])
    """

    def __init__(
        self,
        sizes: Sequence[int],
        activation: str | Activation = "sigmoid",
        output_activation: str | Activation | None = None,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        feedback: str | FeedbackRule = "backprop",
    ) -> None:
        super().__init__()
        sizes = list(sizes)
        if len(sizes) < 2 or not all(isinstance(n, int) and n > 0 for n in sizes):
            raise ValueError(f"sizes: expected at least two positive integers (input and output widths), got {sizes}")
        last = activation if output_activation is None else output_activation
        activations = [activation] * (len(sizes) - 2) + [last]
        self.sizes = sizes
        self.layers = torch.nn.ModuleList(
            Dense(n_in, n_out, act, bias=bias, device=device, dtype=dtype)
            for n_in, n_out, act in zip(sizes[:-1], sizes[1:], activations)
        )
        if feedback != "backprop":
            attach(self, feedback)

    captures_output_error = True
    """A direct feedback rule reads e off the MLP's own output (a tensor hook its forward sets)."""

    @property
    def dense_layers(self) -> list[Dense]:
        """The layers, typed as what they are."""
        layers: list[Dense] = list(self.layers)  # type: ignore[arg-type]
        return layers

    def forward(self, input: Tensor) -> Tensor:
        layers: list[Dense] = list(self._modules["layers"]._modules.values())  # type: ignore[union-attr,arg-type]
        output_error: OutputError | None = self.__dict__.get("_output_error")
        if output_error is not None and torch.is_grad_enabled():
            output = self._forward(input, layers)
            if output.requires_grad:
                output.register_hook(output_error.capture)
            return output
        return self._forward(input, layers)

    def _forward(self, input: Tensor, layers: list[Dense]) -> Tensor:
        if has_hooks(*layers):
            # a module hook on a layer (forward or backward, its own or global) needs that layer's own call
            a = input
            for layer in layers:
                a = layer(a)
            return a
        # the layers' tensors straight from the module dicts: at the sizes where the stack is
        # overhead-bound, a ``Module.__getattr__`` lookup per tensor adds up to an addmm's time
        params: list[Tensor | None] = []
        activations: list[Activation] = []
        delta_hooked = False
        for layer in layers:
            own = layer._parameters
            params += own["weight"], own.get("bias")
            act = layer.activation  # set to a name after construction, it is looked up, as Dense's own call does
            activations.append(act if isinstance(act, Activation) else F.get_activation(act))
            delta_hooked = delta_hooked or bool(layer._delta_hooks)
        on_delta = self._call_layer_delta_hooks if delta_hooked else None
        feedback = None if layers[0]._feedback is None else stack_feedback(layers, input)
        return F.mlp_stack(input, params, activations, on_delta, feedback, own=True)

    def _call_layer_delta_hooks(self, index: int, delta: Tensor) -> None:
        self.dense_layers[index]._call_delta_hooks(delta)
