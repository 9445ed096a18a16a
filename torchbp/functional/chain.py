"""A run of explicit-δ layers as one autograd node: the δ-recursion through any chain of layer types.

What :mod:`~torchbp.functional.mlp_node` does for dense layers, done for any layers that speak
the :class:`Link` protocol (convolution → batch norm → activation → pooling → … → linear). Each
layer's own equations do the work, from its :class:`~torchbp.derivatives.Derivatives`; the chain
only saves one autograd node per layer, the Python and engine work that dominates a small
network's step. Backward, from the last layer down::

    δᴸ = ∂C/∂zᴸ
    ∂C/∂θˡ = derivativesˡ.param_vjps(δˡ, …)      (BP3's and BP4's analogues)
    δˡ⁻¹ = derivativesˡ.input_vjp(δˡ, …)          (BP2's analogue)

Every intermediate zˡ is handed out as an output of the node (callers keep the last), so what the
backward reads stays in the graph and a double backward through the chain is exact. The chain
is an eager fast path: under torch.compile, forward-mode AD or torch.func, callers run the layers
one by one (:func:`chain_applies`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch
from torch import Tensor
from torch.autograd import Function

from ..derivatives.base import Derivatives
from .internals import any_autocast, forward_mode, plain_apply


class Link(Protocol):
    """A layer that can run inside a chain (torchbp's twins in :mod:`torchbp.nn` are links)."""

    def link(self, x: Tensor) -> Derivatives:
        """The layer's equations for input ``x``: checks ``x`` as the layer's own call would."""

    def link_params(self) -> tuple[Tensor | None, ...]:
        """The parameters, in the order of the derivatives' ``params``."""

    def link_after(self, z: Tensor, buffers: tuple[Tensor, ...]) -> None:
        """What the layer's own call does after its Function (batch norm's running statistics)."""

    def on_delta(self) -> Callable[[Tensor], None] | None:
        """What to call with δ in the backward pass, or ``None``."""


def chain_applies() -> bool:
    """Whether a chain node may run: plain eager autograd (not compiling, no forward-mode AD, no autocast)."""
    return not torch.compiler.is_compiling() and not forward_mode() and not any_autocast()


class ChainFunction(Function):
    """``forward(ctx, links, counts, x, *params)`` → ``(z¹, …, zᴸ, *buffers)``.

    ``counts`` gives each link's number of parameters in ``params``.
    """

    @staticmethod
    def forward(ctx: Any, links: Sequence[Link], counts: tuple[int, ...], x: Tensor, *params: Tensor | None) -> Any:
        needs_params = ctx.needs_input_grad[3:]
        upstream = ctx.needs_input_grad[2]  # does anything below layer l want a gradient?
        layers: list[tuple[Derivatives, Link, tuple[bool, ...], int]] = []
        saved: list[Tensor | None] = []
        outputs: list[Tensor] = []
        buffers_out: list[Tensor] = []
        a, start = x, 0
        for link, count in zip(links, counts):
            derivatives = link.link(a)
            p = params[start : start + count]
            z, buffers = derivatives.forward(a, *p)
            link.link_after(z, buffers)
            needs = (upstream, *needs_params[start : start + count])
            kept = derivatives.save(a, p, z, buffers, needs)
            layers.append((derivatives, link, needs, len(kept)))
            saved += kept
            outputs.append(z)
            buffers_out += buffers
            upstream = upstream or True in needs[1:]
            a, start = z, start + count
        if buffers_out:
            ctx.mark_non_differentiable(*buffers_out)
        ctx.set_materialize_grads(False)
        ctx.layers = layers
        ctx.save_for_backward(*saved)
        return (*outputs, *buffers_out)

    @staticmethod
    def backward(ctx: Any, *grads: Tensor | None) -> tuple[Tensor | None, ...]:
        layers = ctx.layers
        saved = ctx.saved_tensors
        end = len(saved)
        grad_params: list[Tensor | None] = []
        delta: Tensor | None = None
        for l in reversed(range(len(layers))):
            derivatives, link, needs, kept = layers[l]
            reaching = grads[l]  # the gradient reaching zˡ directly (all but the last: a double backward)
            if reaching is not None:
                delta = reaching if delta is None else delta + reaching
            begin = end - kept
            end = begin
            if delta is None:
                grad_params[:0] = [None] * (len(needs) - 1)
                continue
            on_delta = link.on_delta()
            if on_delta is not None:
                on_delta(delta.detach())
            # BP2's analogue, δ for the layer below, and BP3's and BP4's
            delta, *grads_l = derivatives.vjps(delta, derivatives.Saved(*saved[begin : begin + kept]), needs)
            grad_params[:0] = grads_l
        return None, None, delta, *grad_params


def chain(links: Sequence[Link], x: Tensor) -> Tensor:
    """Run ``links`` on ``x`` as one autograd node (see the module doc); returns the last output."""
    counts: list[int] = []
    params: list[Tensor | None] = []
    for link in links:
        p = link.link_params()
        counts.append(len(p))
        params += p
    outputs = plain_apply(ChainFunction, (tuple(links), tuple(counts), x, *params))
    return outputs[len(links) - 1]  # type: ignore[no-any-return]
