"""The link protocol of torchbp's twins: what a chain node (``torchbp.functional.chain_node``) asks of a layer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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

    def link_is_pure(self) -> bool:
        """Whether ``link`` depends on nothing but the layer's attributes and the shapes, dtypes and
        devices of its input and parameters (no batch count, no feedback matrix), so that
        ``linked`` may remember it."""
        return False

    def linked(self, x: Tensor, params: tuple[Tensor | None, ...]) -> Derivatives:
        """``link(x)``, remembered for the last input and parameter signature (shape, dtype, device)
        where ``link_is_pure``, until an attribute of the layer is set (``train()``, a new stride):
        a training loop checks a layer's arguments once, and a bad input still gets its error on the
        call that brings it. ``params`` are ``link_params()``."""
        if not self.link_is_pure():
            return self.link(x)
        key: tuple[object, ...] = (x.shape, x.dtype, x.device)
        for p in params:
            key += (None,) if p is None else (p.shape, p.dtype, p.device)
        memo = self.__dict__.get("_link_memo")
        if memo is not None and memo[0] == key:
            return memo[1]  # type: ignore[no-any-return]
        derivatives = self.link(x)
        self.__dict__["_link_memo"] = key, derivatives
        return derivatives

    def __setattr__(self, name: str, value: Any) -> None:
        self.__dict__.pop("_link_memo", None)
        super().__setattr__(name, value)

    def __getstate__(self) -> dict[str, Any]:
        state: dict[str, Any] = dict(super().__getstate__())  # type: ignore[call-overload]
        state.pop("_link_memo", None)
        return state

    def linkable(self) -> bool:
        """Whether the layer, as it is set up now, is one derivatives object a chain can run: not
        where its class has no ``link`` (``Dense`` hooks δ through this mixin but runs its own fused node)."""
        return type(self).link is not Linked.link

    def on_delta(self) -> Callable[[Tensor], None] | None:
        """What to call with δ in the backward pass (``DeltaHooks`` overrides it)."""
        return None
