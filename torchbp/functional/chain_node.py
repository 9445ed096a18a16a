"""A run of explicit-δ layers as one autograd node: the δ-recursion through any chain of layer types.

What ``mlp_node`` does for dense layers, done for any layers that speak
the ``Link`` protocol (convolution → batch norm → activation → pooling → … → linear). Each
layer's own equations do the work, from its ``Derivatives``; the chain
only saves one autograd node per layer: Python and engine work, which dominates a small
network's step. Backward, from the last layer down::

    δᴸ = ∂C/∂zᴸ
    δˡ⁻¹, ∂C/∂θˡ = derivativesˡ.vjps(δˡ, …)    (BP2's analogue, and BP3's and BP4's)

A double backward through the chain replays its layers one by one (each through its own
Function, whose backward is differentiable), so second derivatives are exact. The chain is an
eager fast path: under torch.compile, forward-mode AD or torch.func, callers run the layers
one by one (``chain_applies``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol

import torch
from torch import Tensor
from torch.autograd import Function

from ..derivatives.base import Derivatives
from .factory import apply_layer
from .internals import any_autocast, forward_mode, module_apply, saved_tensor_hooks
from .per_example_tap import record, recording


class Link(Protocol):
    """A layer that can run inside a chain (torchbp's twins in ``torchbp.nn`` are links)."""

    def linked(self, x: Tensor, params: tuple[Tensor | None, ...]) -> Derivatives:
        """The layer's equations for input ``x`` and its ``params`` (``link_params()``): checks ``x``
        as the layer's own call would."""

    def link_params(self) -> tuple[Tensor | None, ...]:
        """The parameters, in the order of the derivatives' ``params``."""

    def on_delta(self) -> Callable[[Tensor], None] | None:
        """What to call with δ in the backward pass, or ``None``."""


def chain_applies() -> bool:
    """Whether a chain node may run: plain eager autograd recording a graph (not compiling, no
    forward-mode AD, no autocast, no saved-tensor hooks, which must see every tensor a layer keeps)."""
    return (
        torch.is_grad_enabled()
        and not torch.compiler.is_compiling()
        and not forward_mode()
        and not any_autocast()
        and not saved_tensor_hooks()
    )


class _Versioned(NamedTuple):
    """A tensor from outside the node that a layer keeps, with its version at the forward pass
    (``None`` for an inference tensor, which keeps none)."""

    tensor: Tensor
    version: int | None


_OUTPUT = object()
"""Where a layer keeps the node's output: it is kept by ``save_for_backward`` (a tensor the node
holds itself would hold the node, through its ``grad_fn``)."""


def _stash(saved: tuple[Tensor | None, ...], output: Tensor, versioned: bool) -> list[Any]:
    """What a layer's backward reads, as the node keeps it: the node's output as ``_OUTPUT``; any
    other tensor as it is, or, where ``versioned``, as ``_Versioned``, checked when it is read
    as ``save_for_backward`` would."""
    entries: list[Any] = []
    for t in saved:
        if t is output:
            entries.append(_OUTPUT)
        elif t is None or not versioned:
            entries.append(t)
        else:
            try:
                entries.append(_Versioned(t, t._version))
            except RuntimeError:  # an inference tensor keeps no version
                entries.append(_Versioned(t, None))
    return entries


def _restore(entries: list[Any], output: Tensor, derivatives: Derivatives) -> Any:
    """The layer's ``Saved`` from what ``_stash`` kept."""
    tensors: list[Tensor | None] = []
    for entry in entries:
        if type(entry) is _Versioned:
            tensor, version = entry
            if version is not None and tensor._version != version:
                raise RuntimeError(
                    f"a tensor the {derivatives.kind} layer saved for its backward pass was changed in place after "
                    "the forward pass; clone it before changing it"
                )
            tensors.append(tensor)
        else:
            tensors.append(output if entry is _OUTPUT else entry)
    return derivatives.Saved(*tensors)


class ChainFunction(Function):
    """``forward(ctx, links, counts, x, *params)`` → zᴸ; ``counts`` gives each link's number of
    parameters in ``params``.

    What each layer's backward reads is kept per layer and let go as soon as that layer's
    backward has run, as the autograd engine lets go of a node's saved tensors: one node for L
    layers must not hold every activation until the last layer is done (the allocations that
    would then miss the allocator's cache cost more than the node saves). The node's inputs, and
    its output where a layer reads it, are kept with ``save_for_backward``; what a layer makes and
    keeps itself (``Derivatives.saves_own``) as it is; a tensor from elsewhere with its version,
    checked when it is read.

    A second backward through the node (``retain_graph=True``) and a double backward
    (``create_graph=True``) replay the forward pass layer by layer, each layer through its own
    Function, and differentiate that: the same numbers, and exact second derivatives.
    """

    @staticmethod
    def forward(ctx: Any, links: Sequence[Link], counts: tuple[int, ...], x: Tensor, *params: Tensor | None) -> Any:
        needs_input_grad = ctx.needs_input_grad
        upstream = needs_input_grad[2]  # does anything below layer l want a gradient?
        layers: list[tuple[Derivatives, Link, tuple[bool, ...]]] = []
        kept: list[Any] = []
        a, start, made = x, 0, 0
        foreign: list[int] = []  # the layers that keep tensors from outside (not saves_own)
        for link, count in zip(links, counts):
            end = start + count
            p = params[start:end]
            derivatives = link.linked(a, p)
            z, buffers = derivatives.forward(a, *p)
            needs = (upstream, *needs_input_grad[3 + start : 3 + end])
            if not derivatives.saves_own:
                foreign.append(len(kept))
            kept.append(derivatives.save(a, p, z, buffers, needs))
            layers.append((derivatives, link, needs))
            upstream = upstream or True in needs
            if z is not a:
                made = len(layers)
            a, start = z, end
        # only the layers from the first whose output is the node's output on (made - 1: most
        # often the last alone) may keep that output, which the node keeps by save_for_backward
        tail = max(made - 1, 0)
        keeps_output = False  # else the output may go as soon as the caller is done with it
        for l in range(tail, len(kept)):
            if id(a) in map(id, kept[l]):
                keeps_output = True
                if l not in foreign:
                    kept[l] = _stash(kept[l], a, False)
        for l in foreign:
            kept[l] = _stash(kept[l], a, True)
        ctx.stash, ctx.layers, ctx.counts = kept, layers, counts
        ctx.save_for_backward(x, *params, a if keeps_output else None)
        return a

    @staticmethod
    def backward(ctx: Any, delta: Tensor) -> tuple[Tensor | None, ...]:
        own = ctx.saved_tensors
        stash, ctx.stash = ctx.stash, None  # a later backward replays
        if stash is None or torch.is_grad_enabled():
            return None, None, *_replay(ctx, own, delta)
        layers = ctx.layers
        grad_params: list[Tensor | None] = []
        grad: Tensor | None = delta
        record_rows = recording()
        first = len(own) - 1  # where layer l's parameters start in (x, *params, a)
        for l in reversed(range(len(layers))):
            derivatives, link, needs = layers[l]
            saved, stash[l] = stash[l], None  # let go of this layer's tensors once it is done
            count = len(needs) - 1
            first -= count
            if grad is None:
                grad_params[:0] = [None] * count
                continue
            on_delta = link.on_delta()
            if on_delta is not None:
                on_delta(grad.detach())
            if type(saved) is list:
                saved = _restore(saved, own[-1], derivatives)
            # BP2's analogue, δ for the layer below, and BP3's and BP4's
            grad_below, *grads_l = derivatives.vjps(grad, saved, needs)
            if record_rows:
                record(derivatives, grad, saved, own[first : first + count], grads_l)
            grad = grad_below
            grad_params[:0] = grads_l
        return None, None, grad, *grad_params


def _replay(ctx: Any, own: tuple[Tensor | None, ...], delta: Tensor) -> list[Tensor | None]:
    """The gradients by replaying the forward pass layer by layer and differentiating it."""
    needs = ctx.needs_input_grad[2:]
    create_graph = torch.is_grad_enabled()
    with torch.enable_grad():
        # one alias per slot: a layer used twice in the chain gets each use's gradient once
        slots = [t.view_as(t) if need and t is not None else t for t, need in zip(own[:-1], needs)]
        a, params, start = slots[0], tuple(slots[1:]), 0
        assert a is not None
        for (derivatives, link, _), count in zip(ctx.layers, ctx.counts):
            a = apply_layer(derivatives.replay(), a, params[start : start + count], link.on_delta())
            start += count
        wanted = [t for t, need in zip(slots, needs) if need and t is not None]
        grads = iter(torch.autograd.grad(a, wanted, delta, create_graph=create_graph, allow_unused=True))
    return [next(grads) if need and t is not None else None for t, need in zip(slots, needs)]


def chain(links: Sequence[Link], x: Tensor) -> Tensor:
    """Run ``links`` on ``x`` as one autograd node (see the module doc); returns the last output."""
    counts: list[int] = []
    params: list[Tensor | None] = []
    for link in links:
        p = link.link_params()
        counts.append(len(p))
        params += p
    return module_apply(ChainFunction, (tuple(links), tuple(counts)), x, params)  # type: ignore[no-any-return]
