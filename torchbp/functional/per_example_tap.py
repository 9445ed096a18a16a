"""Where each backward pass hands its δ and saved tensors to the per-example recorders.

Every explicit-δ backward (a layer's Function, a chain node, the fused dense and MLP nodes, the
graph-free step) ends the same way for each layer: with δ = ∂C/∂z, the tensors the layer saved,
its parameters and the ∂C/∂θ it computed. While a ``torchbp.per_example`` context is open, it
calls ``record`` with them; otherwise ``recording`` is false and the backward pass does nothing more than look.
The per-example rows are built from that δ, whatever rule carried it down to the layer.

Recorders are kept innermost last; a parameter is recorded by the innermost recorder that tracks it.
The list is process-wide, like torch's own global hooks: open the context in the thread that runs
the backward pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch
from torch import Tensor

from ..derivatives.base import Derivatives


class Recorder(Protocol):
    """What ``torchbp.per_example`` opens: it takes each layer's δ while it is open."""

    def record(
        self,
        derivatives: Derivatives,
        delta: Tensor,
        saved: Any,
        params: tuple[Tensor | None, ...],
        grads: tuple[Tensor | None, ...],
        taken: set[int],
    ) -> None:
        """Take one layer's δ = ∂C/∂z, what it saved (its ``Saved``), its parameters and the ∂C/∂θ its
        backward pass computed from them, leaving the parameters whose ``id`` is in ``taken`` (an
        inner recorder has them) and adding those it takes."""


RECORDERS: list[Recorder] = []
"""The open recorders, innermost last."""


def recording() -> bool:
    """Whether any per-example context is open (the one check a backward pass makes otherwise)."""
    return bool(RECORDERS)


def record(
    derivatives: Derivatives,
    delta: Tensor,
    saved: Any,
    params: tuple[Tensor | None, ...],
    grads: Sequence[Tensor | None],
) -> None:
    """Hand one layer's δ, saved tensors, parameters and parameter gradients ∂C/∂θ (``None`` where
    not computed) to the open recorders, innermost first."""
    if not params:  # a layer without parameters (an activation, a pooling)
        return
    if torch.is_grad_enabled():  # a double backward: the quantities are constants to it
        with torch.no_grad():
            return record(derivatives, delta, saved, params, grads)
    delta, taken = delta.detach(), set[int]()
    for recorder in reversed(RECORDERS):
        recorder.record(derivatives, delta, saved, params, tuple(grads), taken)
