"""A layer's equations with BP2 changed by a feedback rule: one ``Derivatives`` around another.

The layer's forward pass, its saved tensors and its parameter gradients (BP3 and BP4 analogues)
are the wrapped layer's own; only the error handed to the layer below changes::

    ∂C/∂x = inner.input_vjp(δ) with B in W's place     (B shaped like W: δ B, or Bᵀ ⋆ δ for a convolution)
    ∂C/∂x = (e B) reshaped like x                       (a direct rule: e = ∂C/∂(network output))

Because the wrapped layer's own input VJP runs with B where it would read W, one wrapper serves
every layer type whose BP2 reads its weight (linear, convolution) and no layer type changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import torch
from torch import Tensor

from ..derivatives.base import Derivatives, Sample
from ..derivatives.per_example import RULES, rows_for


class SavedTensors(tuple):  # type: ignore[type-arg]
    """The wrapped layer's saved tensors, as they came (its ``Saved`` is rebuilt from them)."""

    def __new__(cls, *tensors: Tensor | None) -> SavedTensors:
        return tuple.__new__(cls, tensors)


class Drawn:
    """The B one forward call drew (``None`` where BP2 does not run) and, for a rule that writes B
    in place, its version then."""

    __slots__ = ("matrix", "version")

    def __init__(self) -> None:
        self.matrix: Tensor | None = None
        self.version: int | None = None


@dataclass(frozen=True, eq=False)
class WithFeedback(Derivatives):
    """``inner``'s equations, with BP2 through the feedback matrix B of this batch.

    B is drawn (``draw``) when the forward pass saves what the backward pass reads, and only where
    BP2 runs: a layer whose input takes no gradient (the first layer, fed data) hands no error
    down, so it reads no B and a rule that derives B each batch (sign symmetry) skips the pass.
    One object serves one forward call (``drawn`` is that call's, shared with its replays).

    Attributes:
        inner: the layer's own equations.
        draw: ``draw(x, used)``: this batch's B for the input x, shaped like W, or ``(outputs,
            inputs)`` where ``error`` is given (``LayerFeedback.matrix``); called once per forward
            call, with ``used`` false where BP2 does not run (B is then neither derived nor read).
        input_shape: the layer's input shape, for a direct rule's e B.
        error: a direct rule's e = ∂C/∂(network output) ``(examples, outputs)``, read in the
            backward pass; ``None`` for rules where B stands in for W.
        learn: called with this batch's ∂C/∂W (``None`` where W wants no gradient) after the
            backward pass: a rule that learns B, or one that writes the next B in place.
        in_place: whether the rule writes B in place (then B must not have been overwritten
            before a backward pass, one through a retained graph too, reads it).
        drawn: the B drawn at the forward pass.
    """

    kind: ClassVar[str] = "feedback"
    Saved: ClassVar[type[Any]] = SavedTensors

    inner: Derivatives
    draw: Callable[[Tensor, bool], Tensor]
    input_shape: tuple[int, ...]
    error: Callable[[], Tensor] | None = None
    learn: Callable[[Tensor | None], None] | None = None
    in_place: bool = False
    drawn: Drawn = field(default_factory=Drawn)

    def forward(self, x: Tensor, *params: Tensor | None) -> tuple[Tensor, tuple[Tensor, ...]]:
        return self.inner.forward(x, *params)

    def save(
        self,
        x: Tensor,
        params: tuple[Tensor | None, ...],
        z: Tensor,
        buffers: tuple[Tensor, ...],
        needs: tuple[bool, ...],
    ) -> tuple[Tensor | None, ...]:
        drawn = self.drawn
        if drawn.matrix is None:  # a replay keeps the B drawn
            matrix = self.draw(x, needs[0])
            if needs[0]:  # BP2 runs: this batch's B
                drawn.matrix, drawn.version = matrix, matrix._version if self.in_place else None
        if self.error is not None:
            return tuple(self.inner.save(x, params, z, buffers, (False, *needs[1:])))
        # the wrapped layer keeps B where it would keep W for its BP2
        weight = params[0] if drawn.matrix is None else drawn.matrix
        return tuple(self.inner.save(x, (weight, *params[1:]), z, buffers, needs))

    def input_vjp(self, delta: Tensor, saved: Any) -> Tensor:
        grad_x = self.vjps(delta, saved, (True, *(False,) * len(self.inner.params)))[0]
        assert grad_x is not None
        return grad_x

    def param_vjps(self, delta: Tensor, saved: Any, needs: tuple[bool, ...]) -> tuple[Tensor | None, ...]:
        return self.vjps(delta, saved, (False, *needs))[1:]

    def vjps(self, delta: Tensor, saved: Any, needs: tuple[bool, ...]) -> tuple[Tensor | None, ...]:
        matrix, version = self.drawn.matrix, self.drawn.version
        if matrix is not None and version is not None and matrix._version != version:
            raise RuntimeError(
                "the feedback matrix B this backward pass reads was redrawn in place by a later forward pass; "
                "run the backward pass (through a retained graph too) before the next forward pass"
            )
        inner_saved = self.inner.Saved(*saved)
        if self.error is None:
            # BP2 with B for W: ∂C/∂x = δ B (the layer's own input VJP, reading B); BP3, BP4 exact
            grad_x, *grads = self.inner.vjps(delta, inner_saved, needs)
        else:
            grad_x = None
            _, *grads = self.inner.vjps(delta, inner_saved, (False, *needs[1:]))
            if needs[0]:
                assert matrix is not None
                # direct feedback: ∂C/∂x = e B, reshaped like x
                grad_x = (self.error() @ matrix).reshape(self.input_shape)
        if self.learn is not None:
            self.learn(grads[0] if grads else None)
        return grad_x, *grads

    def jvp(self, saved: Any, x_t: Tensor | None, *params_t: Tensor | None) -> Tensor:
        raise NotImplementedError(
            "a feedback rule changes the backward pass only, so forward-mode AD has no meaning for it; "
            "run forward-mode AD on a model with the 'backprop' feedback"
        )

    def replay(self) -> Derivatives:
        return replace(self, inner=self.inner.replay())  # sharing ``drawn``: the B this forward pass drew

    @classmethod
    def samples(cls, dtype: torch.dtype, device: torch.device | str) -> list[Sample]:
        return []


def _rows_of_the_wrapped_layer(derivatives: WithFeedback, delta: Tensor, saved: Any, params: Any) -> Any:
    # per-example rows are δₖ with the layer's own input: BP3 and BP4, which no feedback rule changes
    return rows_for(derivatives.inner, delta, derivatives.inner.Saved(*saved), params)


RULES[WithFeedback] = _rows_of_the_wrapped_layer
