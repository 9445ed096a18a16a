"""δ hooks: every torchbp layer with parameters hands its δ = ∂C/∂z to whoever asks."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from types import MappingProxyType

import torch
from torch import Tensor
from torch.utils.hooks import RemovableHandle

from .link import Linked

DeltaHook = Callable[[torch.nn.Module, Tensor], None]


class DeltaHooks(Linked):
    """Mixin of the twins with parameters: ``register_delta_hook``, and the callback their
    Function calls with δ in the backward pass.

    A module converted from ``torch.nn`` has no hooks of its own until one is registered (the
    class-level empty mapping stands in), so conversion adds no state to a layer.
    """

    _delta_hooks: Mapping[int, DeltaHook] = MappingProxyType({})

    def register_delta_hook(self, hook: DeltaHook) -> RemovableHandle:
        """Call ``hook(layer, delta)`` with this layer's δ = ∂C/∂z (the gradient reaching its
        output, shaped like the output) in every backward pass.

        Returns a handle whose ``remove()`` unregisters the hook.
        """
        if not callable(hook):
            raise TypeError(f"hook: expected a callable hook(layer, delta), got {type(hook).__name__}")
        if "_delta_hooks" not in self.__dict__:
            self.__dict__["_delta_hooks"] = OrderedDict()
        handle = RemovableHandle(self._delta_hooks)  # type: ignore[arg-type]
        self._delta_hooks[handle.id] = hook  # type: ignore[index]
        return handle

    def _call_delta_hooks(self, delta: Tensor) -> None:
        for hook in tuple(self._delta_hooks.values()):
            hook(self, delta)  # type: ignore[arg-type]

    def on_delta(self) -> Callable[[Tensor], None] | None:
        """What the layer's Function calls with δ: ``None`` while no hook is registered."""
        return self._call_delta_hooks if self._delta_hooks else None
