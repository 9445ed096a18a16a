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
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import torch
from torch import Tensor

from ..derivatives.base import Derivatives, Sample
from ..derivatives.per_example import RULES, rows_for


class SavedTensors(tuple):  # type: ignore[type-arg]
    """The wrapped layer's saved tensors, as they came (its ``Saved`` is rebuilt from them)."""

    def __new__(cls, *tensors: Tensor | None) -> SavedTensors:
        return tuple.__new__(cls, tensors)


@dataclass(frozen=True, eq=False)
class WithFeedback(Derivatives):
    """``inner``'s equations, with BP2 through the feedback matrix ``matrix`` (this batch's B).

    Attributes:
        inner: the layer's own equations.
        matrix: B: shaped like W, or ``(outputs, inputs)`` where ``error`` is given.
        input_shape: the layer's input shape, for a direct rule's e B.
        error: a direct rule's e = ∂C/∂(network output) ``(examples, outputs)``, read in the
            backward pass; ``None`` for rules where B stands in for W.
        learn: called with this batch's ∂C/∂W (``None`` where W wants no gradient) after the
            backward pass: a rule that learns B, or one that writes the next B in place.
        version: B's version when this batch's B was made: a rule that writes B in place must not
            have overwritten it before a backward pass (one through a retained graph) reads it.
    """

    kind: ClassVar[str] = "feedback"
    Saved: ClassVar[type[Any]] = SavedTensors

    inner: Derivatives
    matrix: Tensor
    input_shape: tuple[int, ...]
    error: Callable[[], Tensor] | None = None
    learn: Callable[[Tensor | None], None] | None = None
    version: int | None = None

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
        if self.error is not None:
            return tuple(self.inner.save(x, params, z, buffers, (False, *needs[1:])))
        # the wrapped layer keeps B where it would keep W for its BP2
        return tuple(self.inner.save(x, (self.matrix, *params[1:]), z, buffers, needs))

    def input_vjp(self, delta: Tensor, saved: Any) -> Tensor:
        grad_x = self.vjps(delta, saved, (True, *(False,) * len(self.inner.params)))[0]
        assert grad_x is not None
        return grad_x

    def param_vjps(self, delta: Tensor, saved: Any, needs: tuple[bool, ...]) -> tuple[Tensor | None, ...]:
        return self.vjps(delta, saved, (False, *needs))[1:]

    def vjps(self, delta: Tensor, saved: Any, needs: tuple[bool, ...]) -> tuple[Tensor | None, ...]:
        if self.version is not None and self.matrix._version != self.version:
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
                # direct feedback: ∂C/∂x = e B, reshaped like x
                grad_x = (self.error() @ self.matrix).reshape(self.input_shape)
        if self.learn is not None:
            with torch.no_grad():
                self.learn(grads[0] if grads else None)
        return grad_x, *grads

    def jvp(self, saved: Any, x_t: Tensor | None, *params_t: Tensor | None) -> Tensor:
        raise NotImplementedError(
            "a feedback rule changes the backward pass only, so forward-mode AD has no meaning for it; "
            "run forward-mode AD on a model with the 'backprop' feedback"
        )

    def replay(self) -> Derivatives:
        return replace(self, inner=self.inner.replay())

    @classmethod
    def samples(cls, dtype: torch.dtype, device: torch.device | str) -> list[Sample]:
        return []


def _rows_of_the_wrapped_layer(derivatives: WithFeedback, delta: Tensor, saved: Any, params: Any) -> Any:
    # per-example rows are δₖ with the layer's own input: BP3 and BP4, which no feedback rule changes
    return rows_for(derivatives.inner, delta, derivatives.inner.Saved(*saved), params)


RULES[WithFeedback] = _rows_of_the_wrapped_layer
