"""The link protocol of torchbp's twins: what a chain node (``torchbp.functional.chain_node``) asks of a layer."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from ..derivatives.base import Derivatives


class Linked:
    """Mixin of every twin that can run inside a chain node.

    A twin says, for an input, which equations it runs (``link``, with the same checks as its
    own call) and on which parameters (``link_params``); the chain does the rest.
    """

    def link(self, x: Tensor) -> Derivatives:
        """The layer's equations for the input ``x`` (its settings, checked against ``x``)."""
        raise NotImplementedError

    def link_params(self) -> tuple[Tensor | None, ...]:
        """The parameters, in the order of the derivatives' ``params``."""
        return ()

    def linkable(self) -> bool:
        """Whether the layer, as it is set up now, is one derivatives object a chain can run."""
        return True

    def on_delta(self) -> Callable[[Tensor], None] | None:
        """What to call with δ in the backward pass (``DeltaHooks`` overrides it)."""
        return None
