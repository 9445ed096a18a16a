"""The autograd Functions: each ``backward`` is the δ-recursion, written out.

All Functions use the ``setup_context`` form with ``generate_vmap_rule = True`` so that they
compose with :mod:`torch.func`. Their backward passes are made of differentiable torch ops, so
double backward (``gradgradcheck``, Hessian-vector products) works through them too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch._functorch.utils import unwrap_dead_wrappers
from torch.autograd import Function, forward_ad

from .activations import Activation
from .layers import (
    dense_backward,
    dense_forward,
    linear_backward,
    linear_forward,
    linear_jvp,
    mlp_backward,
    mlp_forward,
)


def forward_mode() -> bool:
    """Whether forward-mode AD may be running: a ``forward_ad`` level or a torch.func transform."""
    return forward_ad._current_level >= 0 or torch._C._are_functorch_transforms_active()


def apply(function: type[Function], *args: Any) -> Any:
    """``function.apply(*args)``, minus the per-call binding of the arguments to a signature.

    ``Function.apply`` runs ``inspect.signature(forward).bind(...)`` on every call of a
    ``setup_context``-style Function (some 30 µs, more than a small layer's arithmetic) only to
    fill in defaults. torchbp always passes every argument positionally, so the plain autograd
    path skips it. Under forward-mode AD (``torch.func.jvp``/``jacfwd``, ``forward_ad``) the
    call goes to the Function's twin with a ``jvp`` (see :func:`with_jvp`); under torch.compile
    it is the standard call of the Function itself, which Dynamo traces without a break.
    """
    if torch.compiler.is_compiling():
        return function.apply(*args)
    if forward_mode():
        return WITH_JVP[function].apply(*args)
    return super(Function, function).apply(*unwrap_dead_wrappers(args))  # type: ignore[misc]


class LinearFunction(Function):
    """z = x Wᵀ + b, whose backward is :func:`~torchbp.functional.layers.linear_backward`."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return linear_forward(x, weight, bias)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        x, weight, _ = inputs
        needs_x, needs_weight = ctx.needs_input_grad[:2]
        ctx.save_for_backward(x if needs_weight else None, weight if needs_x else None)
        if forward_mode():
            ctx.save_for_forward(x, weight)

    @staticmethod
    def backward(ctx: Any, delta: Tensor) -> tuple[Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        return linear_backward(delta, x, weight, ctx.needs_input_grad)

    @staticmethod
    def tangent(ctx: Any, x_t: Tensor | None, weight_t: Tensor | None, bias_t: Tensor | None) -> Tensor:
        x, weight = ctx.saved_tensors
        return linear_jvp(x, weight, x_t, weight_t, bias_t)


class ActivationFunction(Function):
    """a = σ(z), whose backward is δ = ∂C/∂a ⊙ σ′(z) (the JVP for softmax)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(z: Tensor, activation: Activation) -> Tensor:
        return activation(z)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        z, activation = inputs
        ctx.activation = activation
        saved = activation.save(z, output)
        ctx.save_for_backward(saved)
        if forward_mode():
            ctx.save_for_forward(saved)

    @staticmethod
    def backward(ctx: Any, grad_a: Tensor) -> tuple[Tensor | None, None]:
        (saved,) = ctx.saved_tensors
        return ctx.activation.delta(grad_a, saved), None

    @staticmethod
    def tangent(ctx: Any, z_t: Tensor, _: None) -> Tensor:
        (saved,) = ctx.saved_tensors
        # ȧ = σ′(z) ⊙ ż: the Jacobian is symmetric (diagonal, or softmax's diag(a) − a aᵀ),
        # so the forward product is the same rule as δ
        return ctx.activation.delta(z_t, saved)


class DenseFunction(Function):
    """a = σ(x Wᵀ + b) as one node; backward: δ = ∂C/∂a ⊙ σ′(z), then BP2, BP3, BP4.

    The forward pass returns ``(a, z)``. ``z`` is handed out only so that what σ′ reads stays
    inside the graph: in a double backward, a gradient reaching ``z`` comes back in as
    ``grad_z`` and joins δ, which makes the second derivative exact. ``on_delta``, if given, is
    called with δ (detached) during the backward pass.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(
        x: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        activation: Activation,
        on_delta: Callable[[Tensor], None] | None,
    ) -> tuple[Tensor, Tensor]:
        return dense_forward(x, weight, bias, activation)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, Tensor]) -> None:
        x, weight, _, activation, on_delta = inputs
        a, z = output
        needs_x, needs_weight = ctx.needs_input_grad[:2]
        ctx.activation = activation
        ctx.on_delta = on_delta
        ctx.set_materialize_grads(False)
        saved = activation.save(z, a)
        ctx.save_for_backward(x if needs_weight else None, weight if needs_x else None, saved)
        if forward_mode():
            ctx.save_for_forward(x, weight, saved)

    @staticmethod
    def backward(ctx: Any, grad_a: Tensor | None, grad_z: Tensor | None) -> tuple[Tensor | None, ...]:
        x, weight, saved = ctx.saved_tensors
        needs = ctx.needs_input_grad[:3]
        if grad_a is None:
            if grad_z is None:
                return None, None, None, None, None
            return *linear_backward(grad_z, x, weight, needs), None, None
        delta, grad_x, grad_weight, grad_bias = dense_backward(
            grad_a, x, weight, ctx.activation, saved, needs, extra_delta=grad_z
        )
        if ctx.on_delta is not None:
            ctx.on_delta(delta.detach())
        return grad_x, grad_weight, grad_bias, None, None

    @staticmethod
    def tangent(
        ctx: Any, x_t: Tensor | None, weight_t: Tensor | None, bias_t: Tensor | None, *_: None
    ) -> tuple[Tensor, Tensor]:
        x, weight, saved = ctx.saved_tensors
        z_t = linear_jvp(x, weight, x_t, weight_t, bias_t)
        # ȧ = σ′(z) ⊙ ż (the same symmetric Jacobian as δ)
        return ctx.activation.delta(z_t, saved), z_t


class MLPFunction(Function):
    """A whole stack of dense layers as one node; backward: the δ-recursion in a loop.

    ``forward(x, activations, on_delta, W¹, b¹, W², b², …)`` returns ``(a¹, …, aᴸ)`` and then the
    zˡ of the layers whose σ′ reads z. They are handed out, as in :class:`DenseFunction`, so
    that every saved tensor stays in the graph and a double backward is exact; callers keep aᴸ.
    Each tensor is saved once even where it plays two parts (aˡ is the input of layer l+1 and,
    for sigmoid, what σ′ reads).
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(
        x: Tensor,
        activations: list[Activation],
        on_delta: Callable[[int, Tensor], None] | None,
        *params: Tensor | None,
    ) -> tuple[Tensor, ...]:
        a, z = mlp_forward(x, list(params[0::2]), list(params[1::2]), activations)  # type: ignore[arg-type]
        return (*a[1:], *(z_l for z_l, act in zip(z, activations) if act.saves == "z"))

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, ...]) -> None:
        x, activations, on_delta, *params = inputs
        layers = len(activations)
        a, rest = [x, *output[:layers]], iter(output[layers:])
        z = [next(rest) if act.saves == "z" else None for act in activations]
        needs = ctx.needs_input_grad
        upstream = needs[0]  # does anything below layer l want a gradient?
        plan, slots = [], []
        unique: dict[int, tuple[int, Tensor]] = {}  # id(tensor) -> (slot, tensor)

        def keep(tensor: Tensor | None) -> int | None:
            if tensor is None:
                return None
            return unique.setdefault(id(tensor), (len(unique), tensor))[0]

        for l in range(layers):
            needs_weight, needs_bias = needs[3 + 2 * l], needs[4 + 2 * l]
            plan.append((upstream, needs_weight, needs_bias))
            upstream = upstream or needs_weight or needs_bias
        for l, (needs_input, needs_weight, _) in enumerate(plan):
            activation = activations[l]
            # a mask a > 0 can be read off aˡ itself: the next layer's input, or the output, which
            # the cost keeps anyway (and torch.nn.ReLU saves too)
            reuse_a = activation.saves == "mask" and (l + 1 == layers or plan[l + 1][1])
            slots.append(
                (
                    keep(a[l] if needs_weight else None),  # aˡ⁻¹ for BP4
                    keep(params[2 * l] if needs_input else None),  # Wˡ for BP2
                    keep(a[l + 1] if reuse_a else activation.save(z[l], a[l + 1])),  # what σ′ reads
                )
            )
        ctx.slots = slots
        if forward_mode():
            saved = (act.save(z_l, a_l) for act, z_l, a_l in zip(activations, z, a[1:]))
            ctx.save_for_forward(*a[:layers], *params[0::2], *saved)
        ctx.plan, ctx.activations, ctx.on_delta = plan, activations, on_delta
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(*(tensor for _, tensor in unique.values()))

    @staticmethod
    def backward(ctx: Any, *grads: Tensor | None) -> tuple[Tensor | None, ...]:
        layers = len(ctx.activations)
        tensors = ctx.saved_tensors

        def slot(i: int | None) -> Tensor | None:
            return None if i is None else tensors[i]

        inputs, weights, saved = ([slot(s[k]) for s in ctx.slots] for k in range(3))
        grad_a, rest = grads[:layers], iter(grads[layers:])
        grad_z = [next(rest) if act.saves == "z" else None for act in ctx.activations]
        deltas, grad_x, grad_weights, grad_biases = mlp_backward(
            grad_a[-1], inputs, weights, ctx.activations, saved, ctx.plan, [*grad_a[:-1], None], grad_z
        )
        if ctx.on_delta is not None:
            for l, delta in enumerate(deltas):
                if delta is not None:
                    ctx.on_delta(l, delta.detach())
        params = [g for pair in zip(grad_weights, grad_biases) for g in pair]
        return grad_x, None, None, *params

    @staticmethod
    def tangent(ctx: Any, x_t: Tensor | None, _: None, __: None, *param_t: Tensor | None) -> tuple[Tensor, ...]:
        layers = len(ctx.activations)
        saved = ctx.saved_tensors
        inputs, weights, sigma = saved[:layers], saved[layers : 2 * layers], saved[2 * layers :]
        a_t, outputs_t, z_ts = x_t, [], []
        for l, activation in enumerate(ctx.activations):
            z_t = linear_jvp(inputs[l], weights[l], a_t, param_t[2 * l], param_t[2 * l + 1])
            # ȧˡ = σ′(zˡ) ⊙ żˡ
            a_t = activation.delta(z_t, sigma[l])
            outputs_t.append(a_t)
            if activation.saves == "z":
                z_ts.append(z_t)
        return (*outputs_t, *z_ts)


def with_jvp(function: type[Function]) -> type[Function]:
    """The same Function with its forward-mode rule ``tangent`` exposed as ``jvp``.

    Dynamo refuses to trace a Function that defines ``jvp`` (it breaks the graph there), so the
    Functions themselves define none and this twin is used only where forward-mode AD runs.
    """
    return type(function.__name__, (function,), {"jvp": staticmethod(function.tangent), "__doc__": function.__doc__})  # type: ignore[attr-defined]


WITH_JVP: dict[type[Function], type[Function]] = {
    function: with_jvp(function) for function in (LinearFunction, ActivationFunction, DenseFunction, MLPFunction)
}
