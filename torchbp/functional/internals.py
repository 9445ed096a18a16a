"""Every use of a private torch internal, in one place; ``tests/test_internals.py`` fails loudly
when torch changes one of them.

* ``torch.autograd.forward_ad._current_level`` and ``torch._C._are_functorch_transforms_active``:
  whether forward-mode AD may be running (a Function then needs its ``jvp`` twin).
* ``torch._C._FunctionBase.apply`` (reached as ``super(Function, cls).apply``) and
  ``torch._C._functorch.unwrap_if_dead``: ``Function.apply`` without binding the arguments to
  the signature on every call.
* ``torch._C._is_any_autocast_enabled``: a cheap test for autocast before asking per device.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch._C._functorch import unwrap_if_dead
from torch.autograd import Function, forward_ad


def forward_mode() -> bool:
    """Whether forward-mode AD may be running: a ``forward_ad`` level or a torch.func transform."""
    return forward_ad._current_level >= 0 or torch._C._are_functorch_transforms_active()


def plain_apply(function: type[Function], args: tuple[Any, ...]) -> Any:
    """What ``function.apply(*args)`` does on the plain autograd path, without binding the arguments
    to ``forward``'s signature (they are all positional); a tensor left over from a finished
    torch.func transform is unwrapped, as ``Function.apply`` does."""
    return super(Function, function).apply(*[unwrap_if_dead(a) if isinstance(a, Tensor) else a for a in args])  # type: ignore[misc]


def any_autocast() -> bool:
    """Whether autocast is on for any device."""
    return torch._C._is_any_autocast_enabled()
