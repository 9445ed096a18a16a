"""The fused nodes: a dense layer σ(x Wᵀ + b), and a whole stack of them, each as one autograd node.

These are torchbp's fast paths for MLPs, fenced off here: one node for many layers, and a layout
of saved tensors worked out once per pattern. Their maths is :mod:`torchbp.derivatives.dense`'s;
both use the ``setup_context`` form with ``generate_vmap_rule = True`` so that they compose with
:mod:`torch.func`, and their backward passes are made of differentiable torch ops, so double
backward works through them too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor
from torch.autograd import Function

from ..derivatives.activations import Activation
from ..derivatives.dense import dense_backward, dense_forward, mlp_backward, mlp_forward
from ..derivatives.linear import linear_backward, linear_jvp
from .factory import twin_with_jvp
from .internals import forward_mode


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
        saved = activation.read(z, a)
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


@dataclass(frozen=True)
class Layout:
    """What an :class:`MLPFunction` node keeps for its backward pass.

    It depends only on which inputs want a gradient and on what each σ′ reads, so a training
    loop, which repeats one pattern, works it out once (:func:`mlp_layout`).

    Attributes:
        plan: per layer, whether ∂C/∂aˡ⁻¹, ∂C/∂Wˡ and ∂C/∂bˡ are wanted.
        sources: the tensors to save, each once: ``i >= 0`` is entry ``i`` of
            ``(x, W¹, b¹, …, Wᴸ, bᴸ, a¹, …, aᴸ, z…)``; ``~l`` is ``σˡ.read(zˡ, aˡ)`` computed
            afresh (relu's mask).
        inputs, weights, reads: per layer, the position among the saved tensors, counted from 1,
            of aˡ⁻¹ (for BP4), Wˡ (for BP2) and what σ′ reads; 0 where the backward pass needs none.
        outputs: per layer, the position of aˡ in ``(x, W¹, b¹, …)`` above.
        z_grads: per layer, the position among the node's output gradients of zˡ's, or 0.
    """

    plan: tuple[tuple[bool, bool, bool], ...]
    sources: tuple[int, ...]
    inputs: tuple[int, ...]
    weights: tuple[int, ...]
    reads: tuple[int, ...]
    outputs: tuple[int, ...]
    z_grads: tuple[int, ...]


_LAYOUTS: dict[tuple[tuple[bool, ...], tuple[str, ...]], Layout] = {}
_MAX_LAYOUTS = 256  # patterns kept at most


def mlp_layout(needs: tuple[bool, ...], saves: tuple[str, ...]) -> Layout:
    """The :class:`Layout` of an L-layer node from its ``needs_input_grad`` and each σ's ``saves``.

    Worked out once per pattern and kept: the patterns are few (a model's own, with or without
    gradients for its input), and a plain dict, unlike ``functools.lru_cache``, is traced by
    ``torch.compile`` without a warning. A process that meets more than ``_MAX_LAYOUTS``
    patterns starts the cache afresh, so it never grows without bound.
    """
    layout = _LAYOUTS.get((needs, saves))
    if layout is None:
        if len(_LAYOUTS) >= _MAX_LAYOUTS:
            _LAYOUTS.clear()
        layout = _LAYOUTS[needs, saves] = _work_out_layout(needs, saves)
    return layout


def _work_out_layout(needs: tuple[bool, ...], saves: tuple[str, ...]) -> Layout:
    layers = len(saves)
    a_at = [0, *(1 + 2 * layers + l for l in range(layers))]  # a⁰ = x
    upstream = needs[0]  # does anything below layer l want a gradient?
    plan = []
    for l in range(layers):
        needs_weight, needs_bias = needs[3 + 2 * l], needs[4 + 2 * l]
        plan.append((upstream, needs_weight, needs_bias))
        upstream = upstream or needs_weight or needs_bias
    sources: dict[int, int] = {}

    def keep(source: int) -> int:
        return sources.setdefault(source, len(sources) + 1)

    inputs, weights, reads, z_grads = [], [], [], []
    zs = 0  # the zˡ handed out so far
    for l, ((needs_input, needs_weight, _), kind) in enumerate(zip(plan, saves)):
        inputs.append(keep(a_at[l]) if needs_weight else 0)  # aˡ⁻¹ for BP4
        weights.append(keep(1 + 2 * l) if needs_input else 0)  # Wˡ for BP2
        z_grads.append(layers + zs if kind == "z" else 0)
        if kind == "z":
            reads.append(keep(1 + 3 * layers + zs))
            zs += 1
        elif kind == "a" or (kind == "mask" and (l + 1 == layers or plan[l + 1][1])):
            # a mask a > 0 is read off aˡ itself where aˡ is kept anyway: the next layer's input,
            # or the output, which the cost keeps (and torch.nn.ReLU saves too)
            reads.append(keep(a_at[l + 1]))
        else:
            reads.append(keep(~l) if kind == "mask" else 0)
    return Layout(
        tuple(plan), tuple(sources), tuple(inputs), tuple(weights), tuple(reads), tuple(a_at[1:]), tuple(z_grads)
    )


class MLPFunction(Function):
    """A whole stack of dense layers as one node; backward: the δ-recursion in a loop.

    ``forward(x, activations, on_delta, W¹, b¹, W², b², …)`` returns ``(a¹, …, aᴸ)`` and then the
    zˡ of the layers whose σ′ reads z. They are handed out, as in :class:`DenseFunction`, so
    that every saved tensor stays in the graph and a double backward is exact; callers keep aᴸ.
    Each tensor is saved once even where it plays two parts (aˡ is the input of layer l+1 and,
    for sigmoid, what σ′ reads); :class:`Layout` says which.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(
        x: Tensor,
        activations: list[Activation],
        on_delta: Callable[[int, Tensor], None] | None,
        *params: Tensor | None,
    ) -> tuple[Tensor, ...]:
        a, z = mlp_forward(x, params[0::2], params[1::2], activations)  # type: ignore[arg-type]
        return (*a[1:], *(z_l for z_l, act in zip(z, activations) if act.saves == "z"))

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, ...]) -> None:
        activations, on_delta = inputs[1], inputs[2]
        layout = mlp_layout(ctx.needs_input_grad, tuple([act.saves for act in activations]))
        values = (inputs[0], *inputs[3:], *output)
        ctx.layout, ctx.activations, ctx.on_delta = layout, activations, on_delta
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(
            *[values[i] if i >= 0 else activations[~i].read(None, values[layout.outputs[~i]]) for i in layout.sources]
        )
        if forward_mode():
            layers = len(activations)
            z = iter(output[layers:])
            saved = (act.read(next(z) if act.saves == "z" else None, a_l) for act, a_l in zip(activations, output))
            ctx.save_for_forward(inputs[0], *output[: layers - 1], *inputs[3::2], *saved)

    @staticmethod
    def backward(ctx: Any, *grads: Tensor | None) -> tuple[Tensor | None, ...]:
        layout, activations = ctx.layout, ctx.activations
        layers = len(activations)
        tensors = (None, *ctx.saved_tensors)  # a layout's position 0 is "not saved"
        # gradients reaching a¹ … aᴸ⁻¹ or some zˡ directly: only in a double backward through what was saved
        reaching = grads if any(g is not None for g in grads[: layers - 1] + grads[layers:]) else None
        deltas, grad_x, grad_weights, grad_biases = mlp_backward(
            grads[layers - 1],
            [tensors[i] for i in layout.inputs],
            [tensors[i] for i in layout.weights],
            activations,
            [tensors[i] for i in layout.reads],
            layout.plan,
            None if reaching is None else [*reaching[: layers - 1], None],
            None if reaching is None else [reaching[i] if i else None for i in layout.z_grads],
        )
        if ctx.on_delta is not None:
            for l, delta in enumerate(deltas):
                if delta is not None:
                    ctx.on_delta(l, delta.detach())
        return grad_x, None, None, *[g for pair in zip(grad_weights, grad_biases) for g in pair]

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


DENSE_WITH_JVP = twin_with_jvp(DenseFunction)
MLP_WITH_JVP = twin_with_jvp(MLPFunction)
