"""The base class of update rules: a ``torch.optim.Optimizer`` whose step is written out.

A rule subclasses :class:`UpdateRule` and implements :meth:`UpdateRule.update`, which receives
one parameter group at a time: the parameters that have a gradient, their gradients and their
state dicts, as lists, so that the whole group moves together with ``torch._foreach_*`` ops.
Param groups, ``state_dict``/``load_state_dict``, ``zero_grad`` and learning-rate schedulers
are ``torch.optim.Optimizer``'s own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

Params = Iterable[Tensor] | Iterable[dict[str, Any]]
"""What an update rule's constructor takes, as ``torch.optim``: tensors or param-group dicts."""


class UpdateRule(torch.optim.Optimizer):
    """A gradient-descent step x′ = x − η ∇f and its descendants, one group at a time."""

    def init_state(self, group: dict[str, Any], param: Tensor) -> dict[str, Any]:
        """The state of a parameter before its first step (e.g. zeroed moment buffers)."""
        return {}

    def update(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        states: list[dict[str, Any]],
    ) -> None:
        """Move ``params`` (in place) using ``grads`` and ``states``; called under ``no_grad``."""
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Take one step for every parameter that has a gradient; returns ``closure()``'s loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            if any(g.is_sparse for g in grads):
                raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
            states = []
            for p in params:
                state = self.state[p]
                if not state:
                    state.update(self.init_state(group, p))
                states.append(state)
            self.update(group, params, grads, states)
        return loss


def with_weight_decay(grads: list[Tensor], params: list[Tensor], weight_decay: float) -> list[Tensor]:
    """The L2-penalised gradients ∇f + λx (``grads`` themselves when λ = 0)."""
    if weight_decay == 0:
        return grads
    return list(torch._foreach_add(grads, params, alpha=weight_decay))


def check_hyperparameter(name: str, value: float, low: float, high: float | None = None) -> None:
    """Raise ``ValueError`` unless low <= value (< high), naming the hyperparameter."""
    if not (low <= value and (high is None or value < high)):
        upper = f" and < {high}" if high is not None else ""
        raise ValueError(f"{name}: expected a value >= {low}{upper}, got {value}")
