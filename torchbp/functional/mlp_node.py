"""The fused nodes: a dense layer σ(x Wᵀ + b), and a whole stack of them, each as one autograd node.

These are torchbp's fast paths for MLPs, fenced off here: one node for many layers, and a layout
of saved tensors worked out once per pattern. Their maths is ``torchbp.derivatives.dense``'s;
both use the ``setup_context`` form with ``generate_vmap_rule = True`` so that they compose with
``torch.func``, and their backward passes are made of differentiable torch ops, so double
backward works through them too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from torch import Tensor
from torch.autograd import Function

from ..derivatives.activations import Activation
from ..derivatives.dense import StackFeedback, dense_backward, dense_forward, mlp_backward, mlp_forward
from ..derivatives.linear import Linear, LinearSaved, linear_backward, linear_jvp
from .factory import twin_with_jvp
from .internals import forward_mode
from .per_example_tap import record, recording

_LINEAR = Linear()  # δ = ∂C/∂z of a dense layer is its linear part's δ


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
        ctx.params = inputs[1:3]  # which layer this is, to a per-example recorder
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
        if recording():
            record(_LINEAR, delta, LinearSaved(x, weight), ctx.params, (grad_weight, grad_bias))
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
class Source:
    """Where one tensor that an ``MLPFunction`` node saves comes from.

    Layers are counted from 0 here, as in the code: ``Source("output", 0)`` is the first
    layer's output, a¹ in the maths.

    Attributes:
        kind: ``"input"``, the node's input x (a⁰); ``"weight"``, the layer's W; ``"output"``,
            its a; ``"z"``, its z (handed out by the node where σ′ reads z); ``"mask"``,
            ``σ.read(None, a)`` computed afresh (relu's boolean mask a > 0).
        layer: which layer (0 for ``"input"``).
    """

    kind: Literal["input", "weight", "output", "z", "mask"]
    layer: int


@dataclass(frozen=True)
class LayerSlots:
    """What layer l's backward pass reads: each tensor as its index among the node's saved
    tensors (``Layout.saved``), ``None`` where the backward pass needs none.

    Attributes:
        needs: whether ∂C/∂aˡ⁻¹, ∂C/∂Wˡ and ∂C/∂bˡ are wanted.
        input: aˡ⁻¹, for BP4 (∂C/∂Wˡ = δˡᵀ aˡ⁻¹).
        weight: Wˡ, for BP2 (δˡ Wˡ).
        read: what σˡ′ reads (zˡ, aˡ or the mask).
        z_output: the index of zˡ among the node's outputs, and so of zˡ's gradient among the
            backward's incoming gradients; ``None`` where σˡ′ does not read z.
    """

    needs: tuple[bool, bool, bool]
    input: int | None
    weight: int | None
    read: int | None
    z_output: int | None


@dataclass(frozen=True)
class Layout:
    """What an ``MLPFunction`` node keeps for its backward pass.

    It depends only on which inputs want a gradient and on what each σ′ reads, so a training
    loop, which repeats one pattern, works it out once (``mlp_layout``). A tensor that plays
    two parts (aˡ as layer l+1's input and as what σˡ′ reads) is saved once, and both slots
    point at it.

    Attributes:
        saved: the tensors to save, in order, each once.
        layers: per layer, where its backward pass finds what it reads.
        plan: per layer, ``layers[l].needs``, gathered for ``mlp_backward``.
        picks: per saved tensor, its index in ``(x, W¹, b¹, …, Wᴸ, bᴸ, a¹, …, aᴸ, z…)``, the node's
            input, parameters and outputs; −1 for a mask, computed afresh.
        inputs, weights, reads: per layer, the index of its ``input``, ``weight`` and ``read``
            among the saved tensors, −1 where there is none (``None`` is then read at −1 of
            the saved tensors with a ``None`` appended).
    """

    saved: tuple[Source, ...]
    layers: tuple[LayerSlots, ...]
    plan: tuple[tuple[bool, bool, bool], ...]
    picks: tuple[int, ...]
    inputs: tuple[int, ...]
    weights: tuple[int, ...]
    reads: tuple[int, ...]

    def gather(
        self, x: Tensor, params: tuple[Tensor | None, ...], output: tuple[Tensor, ...], activations: list[Activation]
    ) -> list[Tensor | None]:
        """The tensors of ``saved``, from the node's input ``x``, its ``params``
        ``(W¹, b¹, …)`` and its ``output`` ``(a¹, …, aᴸ, z…)``."""
        pool = (x, *params, *output)
        if -1 not in self.picks:
            return [pool[i] for i in self.picks]
        return [
            pool[i] if i >= 0 else activations[source.layer].read(None, output[source.layer])
            for i, source in zip(self.picks, self.saved)
        ]


_LAYOUTS: dict[tuple[tuple[bool, ...], tuple[str, ...]], Layout] = {}
_MAX_LAYOUTS = 256  # patterns kept at most


def mlp_layout(needs: tuple[bool, ...], saves: tuple[str, ...]) -> Layout:
    """The ``Layout`` of an L-layer node from its ``needs_input_grad`` and each σ's ``saves``.

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
    upstream = needs[0]  # does anything below layer l want a gradient?
    plan: list[tuple[bool, bool, bool]] = []
    for l in range(layers):
        needs_weight, needs_bias = needs[3 + 2 * l], needs[4 + 2 * l]
        plan.append((upstream, needs_weight, needs_bias))
        upstream = upstream or needs_weight or needs_bias
    saved: dict[Source, int] = {}

    def keep(source: Source) -> int:
        return saved.setdefault(source, len(saved))

    def layer_output(l: int) -> Source:  # what layer l hands on (aˡ⁺¹ counted from 1); layer −1's is x
        return Source("input", 0) if l < 0 else Source("output", l)

    slots = []
    zs = 0  # the zˡ handed out so far
    for l, ((needs_input, needs_weight, _), kind) in enumerate(zip(plan, saves)):
        input = keep(layer_output(l - 1)) if needs_weight else None
        weight = keep(Source("weight", l)) if needs_input else None
        z_output = None
        if kind == "z":
            z_output = layers + zs
            zs += 1
            read: int | None = keep(Source("z", l))
        elif kind == "a" or (kind == "mask" and (l + 1 == layers or plan[l + 1][1])):
            # a mask a > 0 is read off aˡ itself where aˡ is kept anyway: the next layer's input,
            # or the output, which the cost keeps (and torch.nn.ReLU saves too)
            read = keep(layer_output(l))
        else:
            read = keep(Source("mask", l)) if kind == "mask" else None
        slots.append(LayerSlots(plan[l], input, weight, read, z_output))
    outputs = 1 + 2 * layers  # where a¹ sits in (x, W¹, b¹, …, Wᴸ, bᴸ, a¹, …, aᴸ, z…)

    def pick(source: Source) -> int:
        if source.kind == "input":
            return 0
        if source.kind == "weight":
            return 1 + 2 * source.layer
        if source.kind == "output":
            return outputs + source.layer
        if source.kind == "mask":
            return -1  # computed afresh
        z_output = slots[source.layer].z_output
        assert z_output is not None
        return outputs + z_output

    def at(index: int | None) -> int:
        return -1 if index is None else index

    return Layout(
        tuple(saved),
        tuple(slots),
        tuple(plan),
        tuple(pick(source) for source in saved),
        tuple(at(s.input) for s in slots),
        tuple(at(s.weight) for s in slots),
        tuple(at(s.read) for s in slots),
    )


class MLPFunction(Function):
    """A whole stack of dense layers as one node; backward: the δ-recursion in a loop.

    ``forward(x, activations, on_delta, feedback, W¹, b¹, W², b², …)`` returns ``(a¹, …, aᴸ)`` and then the
    zˡ of the layers whose σ′ reads z. They are handed out, as in ``DenseFunction``, so
    that every saved tensor stays in the graph and a double backward is exact; callers keep aᴸ.
    Each tensor is saved once even where it plays two parts (aˡ is the input of layer l+1 and,
    for sigmoid, what σ′ reads); ``Layout`` says which. ``feedback`` (a
    ``StackFeedback``, or ``None`` for backprop) gives the Bˡ
    that BP2 reads in Wˡ's place.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(
        x: Tensor,
        activations: list[Activation],
        on_delta: Callable[[int, Tensor], None] | None,
        feedback: StackFeedback | None,
        *params: Tensor | None,
    ) -> tuple[Tensor, ...]:
        a, z = mlp_forward(x, params[0::2], params[1::2], activations)  # type: ignore[arg-type]
        return (*a[1:], *(z_l for z_l, act in zip(z, activations) if act.saves == "z"))

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, ...]) -> None:
        activations, on_delta = inputs[1], inputs[2]
        needs = ctx.needs_input_grad[:3] + ctx.needs_input_grad[4:]  # the feedback argument wants none
        layout = mlp_layout(needs, tuple([act.saves for act in activations]))
        ctx.layout, ctx.activations, ctx.on_delta, ctx.feedback = layout, activations, on_delta, inputs[3]
        ctx.params = inputs[4:]  # which layers these are, to a per-example recorder
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(*layout.gather(inputs[0], inputs[4:], output, activations))
        if forward_mode():
            layers = len(activations)
            z = iter(output[layers:])
            saved = (act.read(next(z) if act.saves == "z" else None, a_l) for act, a_l in zip(activations, output))
            ctx.save_for_forward(inputs[0], *output[: layers - 1], *inputs[4::2], *saved)

    @staticmethod
    def backward(ctx: Any, *grads: Tensor | None) -> tuple[Tensor | None, ...]:
        layout, activations = ctx.layout, ctx.activations
        layers, slots, saved = len(activations), layout.layers, (*ctx.saved_tensors, None)
        # gradients reaching a¹ … aᴸ⁻¹ or some zˡ directly: only in a double backward through what was saved
        reaching = grads if any(g is not None for g in grads[: layers - 1] + grads[layers:]) else None
        feedback: StackFeedback | None = ctx.feedback
        weights = [saved[i] for i in layout.weights]
        direct_error = None
        if feedback is not None:  # BP2 reads each Bˡ in Wˡ's place (torchbp.feedback)
            if feedback.check is not None:
                feedback.check()
            weights = [None if s.weight is None else b for s, b in zip(slots, feedback.matrices)]
            if feedback.direct:
                direct_error = grads[layers - 1] if feedback.error is None else feedback.error()
        deltas, grad_x, grad_weights, grad_biases = mlp_backward(
            grads[layers - 1],
            [saved[i] for i in layout.inputs],
            weights,
            activations,
            [saved[i] for i in layout.reads],
            layout.plan,
            None if reaching is None else [*reaching[: layers - 1], None],
            None if reaching is None else [None if s.z_output is None else reaching[s.z_output] for s in slots],
            direct_error,
        )
        if ctx.on_delta is not None:
            # from the top down, the order the δ-recursion (and a layer-by-layer backward) gives
            for l in reversed(range(layers)):
                delta = deltas[l]
                if delta is not None:
                    ctx.on_delta(l, delta.detach())
        if recording():
            inputs = [saved[i] for i in layout.inputs]
            record_layers(deltas, inputs, ctx.params, grad_weights, grad_biases)
        if feedback is not None and feedback.learn is not None:
            feedback.learn(grad_weights)
        return grad_x, None, None, None, *[g for pair in zip(grad_weights, grad_biases) for g in pair]

    @staticmethod
    def tangent(
        ctx: Any, x_t: Tensor | None, _: None, __: None, ___: None, *param_t: Tensor | None
    ) -> tuple[Tensor, ...]:
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


def record_layers(
    deltas: Sequence[Tensor | None],
    inputs: Sequence[Tensor | None],
    params: Sequence[Tensor | None],
    grad_weights: Sequence[Tensor | None],
    grad_biases: Sequence[Tensor | None],
) -> None:
    """Hand each dense layer's δˡ, input aˡ⁻¹, (Wˡ, bˡ) and (∂C/∂Wˡ, ∂C/∂bˡ) to the per-example recorders."""
    for l, delta in enumerate(deltas):
        if delta is not None:
            layer_params = tuple(params[2 * l : 2 * l + 2])
            record(_LINEAR, delta, LinearSaved(inputs[l], None), layer_params, (grad_weights[l], grad_biases[l]))


DENSE_WITH_JVP = twin_with_jvp(DenseFunction)
MLP_WITH_JVP = twin_with_jvp(MLPFunction)
