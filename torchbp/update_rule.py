"""The base class of update rules: a ``torch.optim.Optimizer`` whose step is written out.

A rule subclasses ``UpdateRule`` and implements ``UpdateRule.update``, which receives
one parameter group at a time: the parameters that have a gradient, their gradients and their
state dicts, as lists, so that the whole group moves together with ``torch._foreach_*`` ops.
Param groups, ``state_dict``/``load_state_dict``, ``zero_grad`` and learning-rate schedulers
are ``torch.optim.Optimizer``'s own.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable
from itertools import chain
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.optim.optimizer import _global_optimizer_post_hooks, _global_optimizer_pre_hooks

Params = Iterable[Tensor] | Iterable[dict[str, Any]]
"""What an update rule's constructor takes, as ``torch.optim``: tensors or param-group dicts."""


class UpdateRule(torch.optim.Optimizer):
    """A gradient-descent step x′ = x − η ∇f and its descendants, one group at a time.

    ``step`` and ``zero_grad`` keep ``torch.optim``'s semantics (step pre/post hooks, global
    hooks, learning-rate schedulers) but open a profiler range only while the profiler runs:
    at small sizes that bookkeeping costs more than the update itself.

    Class attributes:
        per_example: the per-example quantities the step reads (names of ``torchbp.per_example``,
            e.g. ``("grad", "norm")``); ``torchbp.fit`` opens that context around each backward
            pass for a rule that names any. Empty for a rule that reads ``p.grad`` alone.
    """

    per_example: ClassVar[tuple[str, ...]] = ()

    @staticmethod
    def profile_hook_step(func: Callable[..., Any]) -> Callable[..., Any]:
        """Wrap ``step`` with the optimizer hooks, and a profiler range only when profiling."""

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            self = args[0]
            if torch.autograd.profiler._is_profiler_enabled:
                with torch.autograd.profiler.record_function(f"Optimizer.step#{type(self).__name__}.step"):
                    return _hooked_step(func, self, args, kwargs)
            if (
                _global_optimizer_pre_hooks
                or self._optimizer_step_pre_hooks
                or self._optimizer_step_post_hooks
                or _global_optimizer_post_hooks
            ):
                return _hooked_step(func, self, args, kwargs)
            out = func(*args, **kwargs)
            self._optimizer_step_code()
            return out

        return wrapper

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset every parameter's gradient: to ``None`` (the default), or to zeros in place."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    if p.grad.grad_fn is not None:
                        p.grad.detach_()
                    else:
                        p.grad.requires_grad_(False)
                    p.grad.zero_()

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

    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Take one step for every parameter that has a gradient; returns ``closure()``'s loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if torch.is_grad_enabled():
            # grad mode switched as a function, not as torch.no_grad()'s context: at small sizes
            # the context manager's Python costs a third of the update itself
            torch.set_grad_enabled(False)
            try:
                self._update_groups()
            finally:
                torch.set_grad_enabled(True)
        else:
            self._update_groups()
        return loss

    def _update_groups(self) -> None:
        """``update`` for each group, over its parameters that have a gradient."""
        for group in self.param_groups:
            params, grads = [], []
            for p in group["params"]:
                grad = p.grad
                if grad is not None:
                    if grad.is_sparse:
                        raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
                    params.append(p)
                    grads.append(grad)
            if not params:
                continue
            states = [self.state[p] for p in params]
            if type(self).init_state is not UpdateRule.init_state:  # a rule that keeps state
                for p, state in zip(params, states):
                    if not state:
                        state.update(self.init_state(group, p))
            self.update(group, params, grads, states)


def _hooked_step(func: Callable[..., Any], self: Any, args: Any, kwargs: Any) -> Any:
    """``func(*args, **kwargs)`` between the global and per-optimizer step hooks, as torch.optim does."""
    for pre_hook in chain(_global_optimizer_pre_hooks.values(), self._optimizer_step_pre_hooks.values()):
        result = pre_hook(self, args, kwargs)
        if result is not None:
            if not (isinstance(result, tuple) and len(result) == 2):
                raise RuntimeError(f"{func} must return None or a tuple of (new_args, new_kwargs), but got {result}.")
            args, kwargs = result
    out = func(*args, **kwargs)
    self._optimizer_step_code()
    for post_hook in chain(self._optimizer_step_post_hooks.values(), _global_optimizer_post_hooks.values()):
        post_hook(self, args, kwargs)
    return out


def with_weight_decay(grads: list[Tensor], params: list[Tensor], weight_decay: float) -> list[Tensor]:
    """The L2-penalised gradients ∇f + λx (``grads`` themselves when λ = 0)."""
    if weight_decay == 0:
        return grads
    return list(torch._foreach_add(grads, params, alpha=weight_decay))


def check_hyperparameter(name: str, value: float, low: float, high: float | None = None) -> None:
    """Raise unless ``value`` is a finite real number with low <= value (< high), naming the hyperparameter.

    ``TypeError`` for what is not a number (``"0.9"``), ``ValueError`` for a non-finite or
    out-of-range one, as ``torch.optim``'s constructors do.
    """
    if isinstance(value, Tensor) and value.numel() == 1:
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name}: expected a real number, got {value!r} ({type(value).__name__})")
    if not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite value, got {value}")
    if not (low <= value and (high is None or value < high)):
        upper = f" and < {high}" if high is not None else ""
        raise ValueError(f"{name}: expected a value >= {low}{upper}, got {value}")
