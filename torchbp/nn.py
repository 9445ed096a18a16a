"""Drop-in ``nn.Module``s whose backward pass is torchbp's explicit δ-recursion.

Each module is a thin wrapper that holds parameters and calls one function of
:mod:`torchbp.functional`. The twins of ``torch.nn`` layers subclass them, so parameter names,
shapes, initialisation, ``state_dict`` and ``repr`` are exactly those of ``torch.nn``.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor
from torch.utils.hooks import RemovableHandle

from . import functional as F
from .functional.activations import Activation

__all__ = [
    "ELU",
    "GELU",
    "MLP",
    "Dense",
    "Identity",
    "LeakyReLU",
    "Linear",
    "ReLU",
    "SiLU",
    "Sigmoid",
    "Softmax",
    "Softplus",
    "Tanh",
    "convert",
    "revert",
]


class Linear(torch.nn.Linear):
    """z = x Wᵀ + b, like ``torch.nn.Linear``; input ``(*, in_features)``, output ``(*, out_features)``.

    Examples:
        >>> layer = Linear(3, 2)
        >>> sorted(layer.state_dict())
        ['bias', 'weight']
    """

    def forward(self, input: Tensor) -> Tensor:
        return F.linear(input, self.weight, self.bias)


class Sigmoid(torch.nn.Sigmoid):
    """a = sigmoid(z), like ``torch.nn.Sigmoid``; any shape."""

    def forward(self, input: Tensor) -> Tensor:
        return F.sigmoid(input)


class Tanh(torch.nn.Tanh):
    """a = tanh(z), like ``torch.nn.Tanh``; any shape."""

    def forward(self, input: Tensor) -> Tensor:
        return F.tanh(input)


class ReLU(torch.nn.ReLU):
    """a = max(z, 0), like ``torch.nn.ReLU``; ``inplace`` is accepted, the result is computed out of place."""

    def forward(self, input: Tensor) -> Tensor:
        return F.relu(input)


class LeakyReLU(torch.nn.LeakyReLU):
    """Like ``torch.nn.LeakyReLU(negative_slope, inplace)``; computed out of place."""

    def forward(self, input: Tensor) -> Tensor:
        return F.leaky_relu(input, self.negative_slope)


class ELU(torch.nn.ELU):
    """Like ``torch.nn.ELU(alpha, inplace)``; computed out of place."""

    def forward(self, input: Tensor) -> Tensor:
        return F.elu(input, self.alpha)


class Softplus(torch.nn.Softplus):
    """Like ``torch.nn.Softplus(beta, threshold)``."""

    def forward(self, input: Tensor) -> Tensor:
        return F.softplus(input, self.beta, self.threshold)


class GELU(torch.nn.GELU):
    """Like ``torch.nn.GELU(approximate)``, ``"none"`` (erf) or ``"tanh"``."""

    def forward(self, input: Tensor) -> Tensor:
        return F.gelu(input, self.approximate)


class SiLU(torch.nn.SiLU):
    """a = z sigmoid(z), like ``torch.nn.SiLU``; computed out of place."""

    def forward(self, input: Tensor) -> Tensor:
        return F.silu(input)


class Identity(torch.nn.Identity):
    """a = z, like ``torch.nn.Identity`` (its arguments are ignored too)."""

    def forward(self, input: Tensor) -> Tensor:
        return F.identity(input)


class Softmax(torch.nn.Softmax):
    """Like ``torch.nn.Softmax(dim)``; ``dim=None`` picks a dim as ``torch.nn.Softmax`` does, and warns."""

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


class Dense(torch.nn.Module):
    """The fused layer a = σ(x Wᵀ + b), one autograd node.

    ``weight`` ``(out_features, in_features)`` and ``bias`` ``(out_features,)`` are named, shaped
    and initialised like ``torch.nn.Linear``'s. Input ``(*, in_features)``, output ``(*, out_features)``.

    Args:
        activation: a name from :data:`torchbp.functional.ACTIVATIONS` or an
            :class:`~torchbp.functional.Activation`, e.g.
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
        self._delta_hooks: OrderedDict[int, Callable[[torch.nn.Module, Tensor], None]] = OrderedDict()
        self.reset_parameters()

    def register_delta_hook(self, hook: Callable[[torch.nn.Module, Tensor], None]) -> RemovableHandle:
        """Call ``hook(layer, delta)`` with this layer's δ = ∂C/∂z ``(*, out_features)`` in every backward.

        Returns a handle whose ``remove()`` unregisters the hook.
        """
        handle = RemovableHandle(self._delta_hooks)
        self._delta_hooks[handle.id] = hook
        return handle

    def _call_delta_hooks(self, delta: Tensor) -> None:
        for hook in self._delta_hooks.values():
            hook(self, delta)

    def reset_parameters(self) -> None:
        """Initialise exactly as ``torch.nn.Linear`` does (Kaiming-uniform weight, uniform bias)."""
        torch.nn.Linear.reset_parameters(self)  # type: ignore[arg-type]

    def forward(self, input: Tensor) -> Tensor:
        on_delta = self._call_delta_hooks if self._delta_hooks else None
        return F.dense(input, self.weight, self.bias, self.activation, on_delta)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"activation={self.activation!r}, bias={self.bias is not None}"
        )


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


_TWINS: dict[type[torch.nn.Module], type[torch.nn.Module]] = {
    torch.nn.Linear: Linear,
    torch.nn.Sigmoid: Sigmoid,
    torch.nn.Tanh: Tanh,
    torch.nn.ReLU: ReLU,
    torch.nn.LeakyReLU: LeakyReLU,
    torch.nn.ELU: ELU,
    torch.nn.Softplus: Softplus,
    torch.nn.GELU: GELU,
    torch.nn.SiLU: SiLU,
    torch.nn.Identity: Identity,
    torch.nn.Softmax: Softmax,
}
_TORCH_TWINS = {twin: original for original, twin in _TWINS.items()}


def _as_class(module: torch.nn.Module, cls: type[torch.nn.Module]) -> torch.nn.Module:
    """A module of class ``cls`` holding ``module``'s very parameters, buffers, hooks and flags.

    Twins share one layout (torchbp's classes subclass torch's and add no state), so the new
    module is ``module``'s attributes under the other class; optimizers keep their parameters.
    """
    twin = cls.__new__(cls)
    twin.__dict__.update(
        {key: value.copy() if isinstance(value, dict) else value for key, value in module.__dict__.items()}
    )
    return twin


def _replace(
    module: torch.nn.Module,
    table: dict[type[torch.nn.Module], type[torch.nn.Module]],
    done: dict[int, torch.nn.Module],
) -> torch.nn.Module:
    if id(module) in done:
        return done[id(module)]
    cls = table.get(type(module))
    if cls is not None:
        new = _as_class(module, cls)
    else:
        new = module
        for name, child in module.named_children():
            replaced = _replace(child, table, done)
            if replaced is not child:
                setattr(module, name, replaced)
    done[id(module)] = new
    return new


def convert(model: torch.nn.Module) -> torch.nn.Module:
    """Replace, in place and recursively, each supported ``torch.nn`` layer with its torchbp twin.

    Supported: ``Linear`` and the activations ``Sigmoid``, ``Tanh``, ``ReLU``, ``LeakyReLU``,
    ``ELU``, ``Softplus``, ``GELU``, ``SiLU``, ``Identity``, ``Softmax`` (exact classes; user
    subclasses and everything else stay as they are). The twin keeps the same ``Parameter``
    objects, buffers and hooks, so outputs, gradients and ``state_dict`` are unchanged, and a
    layer shared between two places stays shared. Returns ``model`` (or its twin, if ``model``
    itself is a supported layer).

    Examples:
        >>> model = convert(torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Sigmoid()))
        >>> [type(m).__module__ for m in model]
        ['torchbp.nn', 'torchbp.nn']
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    return _replace(model, _TWINS, {})


def revert(model: torch.nn.Module) -> torch.nn.Module:
    """Undo :func:`convert`: each torchbp twin becomes its ``torch.nn`` layer again, in place.

    :class:`Dense` and :class:`MLP` have no single ``torch.nn`` twin and are left as they are.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    return _replace(model, _TORCH_TWINS, {})
