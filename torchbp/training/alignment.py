"""Feedback alignment in TensorBoard: how close a feedback rule comes to backprop, per layer.

A built-in plugin on the training hooks, active in runs with a directory whose model has a
feedback rule other than backprop (``torchbp.feedback``). It logs, in degrees:

- ``alignment/B_vs_W/<layer>`` after each epoch: the angle between vec(Bˡ) and vec(Wˡ) (under a
  rule that derives B each batch, usf, brsf and frsf, not for a layer that hands no error down,
  such as the first, fed the data: it derives no B, so its stored one is out of date). For a
  direct rule (dfa) Bˡ ``(outputs, inputs)`` stands in for the whole path above the layer, so
  its angle is taken with the product Wᴸ ⋯ Wˡ of the linear layers from the output down to
  layer l (σ′ left out), where those are all linear.
- ``alignment/update_vs_backprop/<layer>`` every ``alignment_every`` steps: the angle between the
  layer's weight gradient under the rule (what the update rule is handed) and the exact backprop
  gradient on the same batch: the quantity the feedback-alignment papers plot. Below 90° the
  rule's updates descend the true cost.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ..hookspecs import hookimpl
from ..nn.feedback import feedback_of
from ..plugins import listen

_MONITOR = "torchbp.training.alignment.monitor"


def angle(a: Tensor, b: Tensor) -> float:
    """The angle between vec(a) and vec(b) in degrees (NaN where one is zero)."""
    a, b = a.detach().flatten().double(), b.detach().flatten().double()
    norms = torch.linalg.vector_norm(a) * torch.linalg.vector_norm(b)
    if norms == 0:
        return math.nan
    return math.degrees(math.acos(max(-1.0, min(1.0, float(a @ b / norms)))))


def feedback_layers(model: torch.nn.Module) -> list[tuple[str, Any]]:
    """The layers holding a B, with their names, in ``model.modules()`` order."""
    return [(name or type(m).__name__, m) for name, m in model.named_modules() if "_feedback" in m.__dict__]


def b_vs_w(model: torch.nn.Module) -> dict[str, float]:
    """Per layer, the angle between B and W (for a direct rule, the product of the W above; see
    the module doc), for the layers where it is defined."""
    rule = feedback_of(model)
    layers = feedback_layers(model)
    if rule is None or rule.exact:
        return {}
    if not rule.direct:
        # a B the rule derives each batch is out of date in a layer that hands no error down
        current = [(name, layer) for name, layer in layers if not layer._feedback.stale]
        return {name: angle(layer.feedback_weight, layer.weight) for name, layer in current}
    angles: dict[str, float] = {}
    path: Tensor | None = None  # Wᴸ ⋯ Wˡ: (outputs, inputs of layer l)
    for name, layer in reversed(layers):
        weight = layer.weight.detach()
        if weight.dim() != 2 or (path is not None and path.shape[1] != weight.shape[0]):
            break
        path = weight if path is None else path @ weight
        if layer.feedback_weight.shape == path.shape:
            angles[name] = angle(layer.feedback_weight, path)
    return angles


def backprop_gradients(model: torch.nn.Module, cost: Any, inputs: Tensor, targets: Tensor) -> list[Tensor | None]:
    """The exact backprop ∂C/∂Wˡ of each layer with a B, on one batch, leaving the model (its B,
    buffers, ``.grad``) and torch's random state as they were."""
    layers = [layer for _, layer in feedback_layers(model)]
    rules = [layer.__dict__.pop("_feedback") for layer in layers]
    buffers = {name: buffer.clone() for name, buffer in model.named_buffers()}
    devices = [inputs.device] if inputs.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices), torch.enable_grad():
            loss = cost(model(inputs), targets)
            weights = [layer.weight for layer in layers]
            grads = torch.autograd.grad(loss, weights, allow_unused=True)
    finally:
        for layer, rule in zip(layers, rules):
            layer.__dict__["_feedback"] = rule
        with torch.no_grad():
            for name, buffer in model.named_buffers():
                buffer.copy_(buffers[name])
    return list(grads)


class _Monitor:
    """``alignment/update_vs_backprop/…`` every ``every`` steps."""

    def __init__(self, every: int) -> None:
        self.every = every

    @hookimpl
    def torchbp_before_update(self, run: Any, epoch: int, step: int, inputs: Tensor, targets: Tensor) -> None:
        global_step = epoch * run.steps_per_epoch + step
        if global_step % self.every or "tensorboard" not in run.state:
            return
        writer = run.state["tensorboard"]["writer"]
        layers = feedback_layers(run.model)
        exact = backprop_gradients(run.model, run.cost, inputs, targets)
        for (name, layer), true in zip(layers, exact):
            if layer.weight.grad is not None and true is not None:
                writer.add_scalar(f"alignment/update_vs_backprop/{name}", angle(layer.weight.grad, true), global_step)


@hookimpl
def torchbp_train_start(run: Any) -> None:
    rule = feedback_of(run.model)
    every = int(run.config.get("alignment_every", 0))
    active = run.directory is not None and rule is not None and not rule.exact and every > 0
    listen(_MONITOR, _Monitor(every) if active else None)


@hookimpl
def torchbp_epoch_end(run: Any, epoch: int, metrics: dict[str, float]) -> None:
    if "tensorboard" not in run.state:
        return
    writer = run.state["tensorboard"]["writer"]
    for name, value in b_vs_w(run.model).items():
        writer.add_scalar(f"alignment/B_vs_W/{name}", value, epoch + 1)


@hookimpl
def torchbp_train_end(run: Any) -> None:
    listen(_MONITOR, None)
