"""The gradients of a torchbp ``MLP`` without any autograd graph: the textbook algorithm.

Forward pass, ∇ₐC from the cost, the δ-recursion, the update: the very routines the autograd
Functions call (:func:`~torchbp.functional.layers.mlp_forward`,
:func:`~torchbp.functional.layers.mlp_backward`), so the numbers are those of the drop-in loop
``rule.zero_grad(); cost(model(x), y).backward(); rule.step()``, bit for bit, at a fraction of
the bookkeeping.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..functional.layers import mlp_backward, mlp_forward
from ..nn import MLP
from ..registry import Cost


def _has_module_hooks(module: torch.nn.Module) -> bool:
    return bool(
        module._forward_hooks or module._forward_pre_hooks or module._backward_hooks or module._backward_pre_hooks
    )


def supports(model: torch.nn.Module) -> bool:
    """Whether ``model`` can take the graph-free step: a plain torchbp ``MLP`` without module hooks."""
    if type(model) is not MLP:
        return False
    modules = [model, *model.layers]
    global_hooks = (
        torch.nn.modules.module._global_forward_hooks,
        torch.nn.modules.module._global_forward_pre_hooks,
        torch.nn.modules.module._global_backward_hooks,
    )
    return not any(global_hooks) and not any(_has_module_hooks(m) for m in modules)


def graph_free_gradients(model: MLP, inputs: Tensor, targets: Tensor, cost: Cost) -> Tensor:
    """Forward and backward pass of ``model`` on a batch; returns the batch's cost C (a 0-d tensor).

    ``targets`` are already in the form the cost takes. Sets every parameter's ``.grad`` (as
    ``backward()`` would from ``None``) and calls the layers' delta hooks; the caller then
    steps the update rule. Call it under ``torch.no_grad()``: nothing here needs a graph.
    """
    layers = model.dense_layers
    weights = [layer.weight for layer in layers]
    biases = [layer.bias for layer in layers]
    activations = [layer.activation for layer in layers]
    a, z = mlp_forward(inputs, weights, biases, activations)
    output = a[-1]
    if cost.spec.check is not None:
        cost.spec.check(output, targets, **cost.options)
    # C = (1/n) Σₖ Cₖ
    loss = cost.value(output, targets).mean()
    # BP1's first factor: ∇ₐC = (1/n) ∇ₐCₖ
    grad_output = cost.gradient(output, targets) / output.shape[0]
    # nothing is kept past this step, so a mask activation reads a > 0 straight off aˡ
    saved = [a_l if act.saves == "mask" else act.save(z_l, a_l) for act, z_l, a_l in zip(activations, z, a[1:])]
    needs = [
        (l > 0, w.requires_grad, b is not None and b.requires_grad) for l, (w, b) in enumerate(zip(weights, biases))
    ]
    deltas, _, grad_weights, grad_biases = mlp_backward(grad_output, a[:-1], weights, activations, saved, needs)
    for layer, delta in zip(layers, deltas):
        if layer._delta_hooks and delta is not None:
            layer._call_delta_hooks(delta)
    for parameter, grad in zip((*weights, *biases), (*grad_weights, *grad_biases)):
        if parameter is not None and grad is not None:
            parameter.grad = grad if parameter.grad is None else parameter.grad + grad
    return loss
