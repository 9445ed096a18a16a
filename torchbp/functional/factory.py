"""The one autograd.Function factory: a layer type's ``Derivatives``
becomes a ``torch.autograd.Function``.

The Function owns, in this one place, the chores every explicit-δ layer shares: saving what the
derivatives object asks for (only what ``needs_input_grad`` calls for), handing δ to the layer's
δ hooks, forward-mode AD (through a twin with a ``jvp``), ``torch.func`` (``generate_vmap_rule``)
and the plain-eager fast path of ``apply``. Its backward is the derivatives object's
equations, nothing else::

    δ = ∂C/∂z                              (arrives from the layer above)
    ∂C/∂x = derivatives.input_vjp(δ, …)    (BP2's analogue)
    ∂C/∂θ = derivatives.param_vjps(δ, …)   (BP3's and BP4's analogues)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.autograd import Function

from ..derivatives.base import Derivatives
from .internals import forward_mode, plain_apply
from .per_example_tap import record, recording

OnDelta = Callable[[Tensor], None]


class LayerFunction(Function):
    """``forward(derivatives, on_delta, x, *params)`` → z, or ``(z, *buffers)``; backward from δ = ∂C/∂z.

    ``on_delta``, if given, is called with δ (detached) in every backward pass. ``buffers`` are
    what the forward pass made for the backward (indices, masks, statistics): handed out as
    non-differentiable outputs, because a Function may only keep its inputs and outputs. A layer
    that makes none returns z alone, which keeps the node as lean as a hand-written one.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(derivatives: Derivatives, on_delta: OnDelta | None, x: Tensor, *params: Tensor | None) -> Any:
        z, buffers = derivatives.forward(x, *params)
        return (z, *buffers) if buffers else z

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor | tuple[Tensor, ...]) -> None:
        derivatives, on_delta, x = inputs[:3]
        params = inputs[3:]
        if isinstance(output, tuple):
            z, buffers = output[0], output[1:]
            ctx.mark_non_differentiable(*buffers)
        else:
            z, buffers = output, ()
        ctx.derivatives, ctx.on_delta, ctx.buffers = derivatives, on_delta, len(buffers)
        ctx.params = params  # which layer this is, to a per-example recorder (references, not saved tensors)
        ctx.set_materialize_grads(False)
        needs = ctx.needs_input_grad[2:]
        ctx.save_for_backward(*derivatives.save(x, params, z, buffers, needs))
        if forward_mode():
            ctx.save_for_forward(*derivatives.save(x, params, z, buffers, (True,) * len(needs)))

    @staticmethod
    def backward(ctx: Any, delta: Tensor | None, *_: Tensor | None) -> tuple[Tensor | None, ...]:
        derivatives: Derivatives = ctx.derivatives
        needs = ctx.needs_input_grad[2:]
        if delta is None:
            return (None,) * (2 + len(needs))
        if ctx.on_delta is not None:
            ctx.on_delta(delta.detach())
        saved = derivatives.Saved(*ctx.saved_tensors)
        # BP2's analogue, the error handed to the layer below, and BP3's and BP4's
        grads = derivatives.vjps(delta, saved, needs)
        if recording():
            record(derivatives, delta, saved, ctx.params, grads[1:])
        return None, None, *grads

    @staticmethod
    def tangent(ctx: Any, _: None, __: None, x_t: Tensor | None, *params_t: Tensor | None) -> Any:
        derivatives: Derivatives = ctx.derivatives
        z_t = derivatives.jvp(derivatives.Saved(*ctx.saved_tensors), x_t, *params_t)
        return (z_t, *([None] * ctx.buffers)) if ctx.buffers else z_t


_FUNCTIONS: dict[type[Derivatives], tuple[type[Function], type[Function]]] = {}


def twin_with_jvp(function: type[Function]) -> type[Function]:
    """The same Function with its forward-mode rule ``tangent`` exposed as ``jvp``.

    Dynamo refuses to trace a Function that defines ``jvp`` (it breaks the graph there), so the
    Functions themselves define none and this twin is used only where forward-mode AD runs.
    """
    return type(function.__name__, (function,), {"jvp": staticmethod(function.tangent), "__doc__": function.__doc__})  # type: ignore[attr-defined]


def function_for(derivatives: type[Derivatives]) -> tuple[type[Function], type[Function]]:
    """The Function of a layer type (named ``<Kind>Function``, so its graph node reads
    ``<Kind>FunctionBackward``) and its forward-mode twin, made once per type: the class that
    names the ``kind`` (an ``Elementwise`` activation's Function is the ``Activation`` one).

    Made in eager code before first use, for the type and every subclass defined by then
    (``torchbp.nn.convert`` makes those of every registered layer): torch.compile breaks its
    graph where a class is made, and traces a plain dict lookup by exact type.
    """
    functions = _FUNCTIONS.get(derivatives)
    if functions is None:
        owner: type[Derivatives] = next(c for c in derivatives.__mro__ if "kind" in c.__dict__)  # type: ignore[assignment]
        functions = _FUNCTIONS.get(owner)
        if functions is None:
            name = "".join(part.capitalize() for part in owner.kind.split("_")) + "Function"
            function = type(name, (LayerFunction,), {"__doc__": owner.__doc__, "__module__": __name__})
            functions = _FUNCTIONS[owner] = (function, twin_with_jvp(function))
        _FUNCTIONS[derivatives] = functions
        for subclass in derivatives.__subclasses__():
            function_for(subclass)
    return functions


def apply(function: type[Function], jvp_twin: type[Function], *args: Any) -> Any:
    """``function.apply(*args)``, minus the per-call binding of the arguments to a signature.

    ``Function.apply`` binds its arguments to ``forward``'s signature on every call (some 30 µs,
    more than a small layer's arithmetic) only to fill in defaults; torchbp passes every argument
    positionally, so the plain autograd path skips it. Under forward-mode AD the call goes to
    the twin with a ``jvp``; under torch.compile it is the standard call, which Dynamo traces.
    """
    if torch.compiler.is_compiling():
        return function.apply(*args)
    if forward_mode():
        return jvp_twin.apply(*args)
    return plain_apply(function, args)


def traced_without_grad(*tensors: Tensor | None) -> bool:
    """Whether torch.compile is tracing a call that nothing will differentiate. Such a call runs its
    forward maths alone: where no input needs a gradient, Dynamo hands a Function whose forward
    takes ``*params`` its context as the first argument."""
    return torch.compiler.is_compiling() and not (
        torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    )


def _run_layer(derivatives: Derivatives, x: Tensor, params: tuple[Tensor | None, ...], on_delta: OnDelta | None) -> Any:
    if (not torch.is_grad_enabled() and not forward_mode()) or traced_without_grad(x, *params):
        # nothing will differentiate this call (no_grad, inference_mode): the forward maths alone
        z, buffers = derivatives.forward(x, *params)
        return (z, *buffers) if buffers else z
    function, jvp_twin = function_for(type(derivatives))
    return apply(function, jvp_twin, derivatives, on_delta, x, *params)


def apply_layer(
    derivatives: Derivatives, x: Tensor, params: tuple[Tensor | None, ...] = (), on_delta: OnDelta | None = None
) -> Tensor:
    """z = f(x; θ) of a layer type, through its Function; buffers are dropped."""
    output = _run_layer(derivatives, x, params, on_delta)
    return output[0] if type(output) is tuple else output  # type: ignore[no-any-return]


def apply_layer_with_buffers(
    derivatives: Derivatives, x: Tensor, params: tuple[Tensor | None, ...] = (), on_delta: OnDelta | None = None
) -> tuple[Tensor, ...]:
    """``(z, *buffers)`` of a layer type, for callers that read what the forward pass made (batch statistics)."""
    output = _run_layer(derivatives, x, params, on_delta)
    return output if type(output) is tuple else (output,)
