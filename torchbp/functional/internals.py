"""Every use of a private torch internal, in one place; ``tests/test_internals.py`` fails loudly
when torch changes one of them.

* ``torch.autograd.forward_ad._current_level`` and ``torch._C._are_functorch_transforms_active``:
  whether forward-mode AD may be running (a Function then needs its ``jvp`` twin).
* ``torch._C._FunctionBase.apply`` (reached as ``super(Function, cls).apply``) and
  ``torch._C._functorch.unwrap_if_dead``: ``Function.apply`` without binding the arguments to
  the signature on every call.
* ``torch._C._is_any_autocast_enabled``: a cheap test for autocast before asking per device.
* ``torch._C._autograd._top_saved_tensors_default_hooks``: whether saved-tensor hooks are active.
* ``Module._forward_hooks``, ``_forward_pre_hooks``, ``_backward_hooks``, ``_backward_pre_hooks``
  and ``torch.nn.modules.module._global_*_hooks``: the dicts ``Module.__call__`` reads to decide
  whether a module runs any hook; torchbp reads the same ones to decide whether a stack of layers
  may skip the layers' own calls (the fused MLP node, the graph-free step).
* ``Module._modules``, ``Module._parameters`` and ``Module._buffers``: the dicts behind
  ``module.name``, read straight by ``torchbp.nn.MLP.forward`` and the batch-norm twins, where an
  attribute lookup per tensor costs as much as a small matmul.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch._C._functorch import unwrap_if_dead
from torch.autograd import Function, forward_ad
from torch.nn.modules.module import (  # the very dicts Module.__call__ reads, registered into in place
    _global_backward_hooks,
    _global_backward_pre_hooks,
    _global_forward_hooks,
    _global_forward_pre_hooks,
)


def forward_mode() -> bool:
    """Whether forward-mode AD may be running: a ``forward_ad`` level or a torch.func transform."""
    return forward_ad._current_level >= 0 or torch._C._are_functorch_transforms_active()


def plain_apply(function: type[Function], args: tuple[Any, ...]) -> Any:
    """What ``function.apply(*args)`` does on the plain autograd path, without binding the arguments
    to ``forward``'s signature (they are all positional); a tensor left over from a finished
    torch.func transform is unwrapped, as ``Function.apply`` does."""
    return super(Function, function).apply(*[unwrap_if_dead(a) if isinstance(a, Tensor) else a for a in args])  # type: ignore[misc]


def module_apply(function: type[Function], constants: tuple[Any, ...], x: Tensor, params: Sequence[Any]) -> Any:
    """``plain_apply(function, (*constants, x, *params))`` for a call whose other arguments are
    constants and modules' own parameters, which are never left over from a torch.func transform:
    only ``x`` is unwrapped."""
    return super(Function, function).apply(*constants, unwrap_if_dead(x), *params)  # type: ignore[misc]


def saved_tensor_hooks() -> bool:
    """Whether default saved-tensor hooks are active (``torch.autograd.graph.saved_tensors_hooks``,
    ``save_on_cpu``, non-reentrant checkpointing)."""
    return torch._C._autograd._top_saved_tensors_default_hooks(False) is not None


def any_autocast() -> bool:
    """Whether autocast is on for any device."""
    return torch._C._is_any_autocast_enabled()


def has_hooks(*modules: torch.nn.Module) -> bool:
    """Whether calling any of ``modules`` would run a module hook: a forward, forward-pre,
    backward or backward-pre hook of its own, or a global one (``register_module_forward_hook``
    and its kin). The test ``Module.__call__`` makes before it skips straight to ``forward``.

    Examples:
        >>> layer = torch.nn.Linear(2, 2)
        >>> has_hooks(layer)
        False
        >>> handle = layer.register_forward_hook(lambda module, args, output: None)
        >>> has_hooks(layer)
        True
    """
    if _global_forward_hooks or _global_forward_pre_hooks or _global_backward_hooks or _global_backward_pre_hooks:
        return True
    for m in modules:  # a loop, not any(…): this runs on every MLP forward
        if m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks:
            return True
    return False
