"""The gradients of a torchbp ``MLP`` without any autograd graph: the textbook algorithm.

Forward pass, ∇ₐC from the cost, the δ-recursion, the gradients: the very routines the autograd
Functions call (``mlp_forward``,
``mlp_backward``), so the numbers are those of the drop-in loop
``rule.zero_grad(); cost(model(x), y).backward(); rule.step()``, bit for bit, at a fraction of
the bookkeeping.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..derivatives.dense import mlp_backward, mlp_forward
from ..functional.checks import autocast_dtype, cast_floating
from ..functional.internals import has_hooks
from ..functional.mlp_node import record_layers
from ..functional.per_example_tap import recording
from ..nn import MLP
from ..registry import Cost


def supports(model: torch.nn.Module) -> bool:
    """Whether ``model`` can take the graph-free step: a plain torchbp ``MLP``, no module hooks on
    it or its layers and no global ones (``has_hooks``)."""
    return type(model) is MLP and not has_hooks(model, *model.layers)


class GraphFreeStep:
    """``step(inputs, targets)``: every parameter's ``.grad`` set to ∂C/∂θ for one batch.

    What ``zero_grad(set_to_none=True)`` then ``cost(model(inputs), targets).backward()`` would
    leave behind, layers' delta hooks included, but with no autograd graph: the forward pass keeps
    aˡ (and zˡ where σ′ reads it), and the backward pass is the δ-recursion. It needs ∇ₐC only,
    never the cost's value: it returns the output aᴸ, from which ``cost.mean(output, targets)``
    gives C when the caller wants it. The caller then steps its update rule. ``targets`` are
    already in the form the cost takes.

    The model's layout (its parameters, activations and which parameters want a gradient) is read
    once, here; build a new step if it changes. Runs under ``torch.no_grad()``.

    ``check_targets`` says whether each call runs the cost's check of the targets against the
    output; ``fit`` turns it off once every batch of tensor data has passed it.
    """

    def __init__(self, model: MLP, cost: Cost) -> None:
        if not supports(model):
            raise ValueError(f"graph-free steps need a torchbp.nn.MLP with no module hooks, got {type(model).__name__}")
        self.layers = model.dense_layers
        self.cost = cost
        self.weights: list[Tensor] = [layer.weight for layer in self.layers]
        self.biases: list[Tensor | None] = [layer.bias for layer in self.layers]
        self.activations = [layer.activation for layer in self.layers]
        self.needs = [
            (l > 0, w.requires_grad, b is not None and b.requires_grad)
            for l, (w, b) in enumerate(zip(self.weights, self.biases))
        ]
        # what σ′ reads: zˡ or aˡ (nothing is kept past the step, so a mask is read as aˡ > 0)
        self.reads = [{"z": "z", "a": "a", "mask": "a"}.get(act.saves) for act in self.activations]
        self.parameters = [*self.weights, *self.biases]
        self.layer_params = [p for pair in zip(self.weights, self.biases) for p in pair]
        self.check_targets = cost.spec.check is not None
        self.feedback = [layer._feedback for layer in self.layers if layer._feedback is not None]

    def __call__(self, inputs: Tensor, targets: Tensor) -> Tensor:
        """Forward and backward pass on a batch ``inputs (n, in)``; returns the output aᴸ ``(n, out)``."""
        if torch.is_grad_enabled():
            with torch.no_grad():
                return self(inputs, targets)
        weights, biases = self.weights, self.biases
        dtype = autocast_dtype(inputs)
        if dtype is not None:
            # cast here, as F.mlp does: autocast's own cast of a parameter is cached until the
            # autocast block ends, so after the first update every step would read stale weights
            inputs = cast_floating(inputs, dtype)
            weights = [cast_floating(w, dtype) for w in weights]
            biases = [cast_floating(b, dtype) for b in biases]
        a, z = mlp_forward(inputs, weights, biases, self.activations)
        output, cost = a[-1], self.cost
        if self.check_targets and cost.spec.check is not None:
            cost.spec.check(output, targets, **cost.options)
        # BP1's first factor: ∇ₐC = (1/n) ∇ₐCₖ
        grad_output = cost.gradient(output, targets) / output.shape[0]
        saved = [z_l if kind == "z" else a_l if kind == "a" else None for kind, z_l, a_l in zip(self.reads, z, a[1:])]
        # BP2 reads each Bˡ in Wˡ's place where a feedback rule is attached (e = ∇ₐC for a direct one)
        if self.feedback:
            # the first layer hands no error down to the data, so it reads no B
            weights = [feedback.matrix(inputs, used=l > 0) for l, feedback in enumerate(self.feedback)]
            if dtype is not None:
                weights = [cast_floating(b, dtype) for b in weights]
        direct = self.feedback[0].rule.direct if self.feedback else False
        deltas, _, grad_weights, grad_biases = mlp_backward(
            grad_output,
            a[:-1],
            weights,
            self.activations,
            saved,
            self.needs,
            direct_error=grad_output if direct else None,
        )
        for feedback, grad_weight in zip(self.feedback, grad_weights):
            feedback.learn(grad_weight)  # B learns (Kolen–Pollack), or may be overwritten next batch
        # from the top down, as the autograd backward hands them over
        for layer, delta in reversed(list(zip(self.layers, deltas))):
            if layer._delta_hooks and delta is not None:
                layer._call_delta_hooks(delta)
        if recording():
            record_layers(deltas, a[:-1], self.layer_params, grad_weights, grad_biases)
        for parameter, grad in zip(self.parameters, (*grad_weights, *grad_biases)):
            if parameter is not None:
                # under autocast the products ran in bf16/fp16: ∂C/∂θ in θ's own dtype, as autograd's cast gives it
                parameter.grad = grad if grad is None or grad.dtype == parameter.dtype else grad.to(parameter.dtype)
        return output
