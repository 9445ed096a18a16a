"""MLP: a stack of dense layers run as one autograd node."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from .. import functional as F
from ..derivatives.activations import Activation
from .linear import Dense


class MLP(torch.nn.Module):
    """A stack of :class:`Dense` layers run as one autograd node (:func:`torchbp.functional.mlp`).

    ``sizes = [n₀, n₁, …, n_L]`` gives L layers. Delta hooks on its layers fire as usual; a
    layer with its own forward hooks makes the stack run layer by layer.

    Args:
        sizes: the width of each layer, input first, e.g. ``[64, 30, 10]``.
        activation: σ of the hidden layers.
        output_activation: σ of the last layer; ``None`` uses ``activation`` too (as in
            Nielsen's ``network.py``), ``"identity"`` gives raw outputs (logits).
        bias: whether the layers have biases.

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

    @property
    def dense_layers(self) -> list[Dense]:
        """The layers, typed as what they are."""
        layers: list[Dense] = list(self.layers)  # type: ignore[arg-type]
        return layers

    def forward(self, input: Tensor) -> Tensor:
        # the layers' tensors straight from the module dicts: at the sizes where the stack is
        # overhead-bound, a ``Module.__getattr__`` lookup per tensor adds up to an addmm's time
        weights: list[Tensor] = []
        biases: list[Tensor | None] = []
        activations: list[str | Activation] = []
        hooked = delta_hooked = False
        layers: Iterable[Dense] = self._modules["layers"]._modules.values()  # type: ignore[union-attr,assignment]
        for layer in layers:
            weights.append(layer._parameters["weight"])  # type: ignore[arg-type]
            biases.append(layer._parameters.get("bias"))
            activations.append(layer.activation)
            hooked = hooked or bool(layer._forward_hooks or layer._forward_pre_hooks)
            delta_hooked = delta_hooked or bool(layer._delta_hooks)
        if hooked:
            # hooks on a single layer need that layer's own call
            a = input
            for module in self.layers:
                a = module(a)
            return a
        on_delta = self._call_layer_delta_hooks if delta_hooked else None
        return F.mlp(input, weights, biases, activations, on_delta)

    def _call_layer_delta_hooks(self, index: int, delta: Tensor) -> None:
        self.dense_layers[index]._call_delta_hooks(delta)
