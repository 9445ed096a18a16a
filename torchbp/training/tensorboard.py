"""TensorBoard logging as a built-in plugin on the training hooks.

Logged per epoch: ``loss/train``, ``loss/val``, ``accuracy/val``, ``lr``; per layer with parameters
(every torchbp layer that has ``register_delta_hook``), histograms ``weights/…``, ``gradients/…``
and ``delta/…`` (δˡ = ∂C/∂zˡ, the gradient reaching the layer's output), and two scalars, each the
epoch's mean over its steps: ``delta_norm/…``, ‖δˡ‖ over the batch, and ``delta_rms/…``, the
root-mean-square of the examples' own error signals n·δˡₖ (C is the batch mean, so each row of δˡ
carries a factor 1/n): a size that does not grow with the batch or the layer's width, so runs of
different shapes compare on one chart. The error signal at each depth is the vanishing-gradient
view that explicit backprop hands over for free. Per step: ``loss/train_step``. At the end:
hyperparameters with the final metrics. A custom-scalars layout groups the curves; its charts are
anchored regular expressions, so one layout serves every run, whatever its depth.
When ``fit`` was asked for per-example norms (``per_example=("norm",)``), each layer's histogram
``per_example_norm/…`` of ‖gₖ‖ over its parameters, for the examples of the epoch's last batch.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ..hookspecs import hookimpl
from ..nn import DeltaHooks
from ..plugins import listen

_STEPS = "torchbp.training.tensorboard.steps"


def _layers(model: torch.nn.Module) -> list[tuple[str, Any]]:
    """The layers whose δ can be read: every torchbp layer with parameters (``Linear``, ``Dense``,
    ``Conv2d``, ``BatchNorm2d``, a plugin's …), and a native ``torch.nn.Linear`` through its output."""
    return [
        (name or type(module).__name__, module)
        for name, module in model.named_modules()
        if isinstance(module, DeltaHooks | torch.nn.Linear)
    ]


class _Deltas:
    """Per layer: the sums of ‖δ‖ and of the per-example RMS over the epoch's steps, their count, and the
    last δ."""

    def __init__(self) -> None:
        self.norm_sum: dict[str, Tensor] = {}
        self.rms_sum: dict[str, Tensor] = {}
        self.count: dict[str, int] = {}
        self.last: dict[str, Tensor] = {}

    def record(self, name: str, delta: Tensor) -> None:
        delta = delta.detach()
        norm = torch.linalg.vector_norm(delta)
        n = delta.shape[0] if delta.dim() else 1
        # RMS of the examples' own n·δₖ: √(Σ (n δ)² / numel) = n ‖δ‖ / √numel
        rms = norm * (n / math.sqrt(max(delta.numel(), 1)))
        self.norm_sum[name] = self.norm_sum.get(name, 0) + norm
        self.rms_sum[name] = self.rms_sum.get(name, 0) + rms
        self.count[name] = self.count.get(name, 0) + 1
        self.last[name] = delta

    def clear(self) -> None:
        self.norm_sum.clear()
        self.rms_sum.clear()
        self.count.clear()


def _watch(layers: list[tuple[str, torch.nn.Module]], deltas: _Deltas) -> list[Any]:
    handles = []
    for name, layer in layers:
        if isinstance(layer, DeltaHooks):

            def watch_delta(module: Any, delta: Tensor, name: str = name) -> None:
                deltas.record(name, delta)

            handles.append(layer.register_delta_hook(watch_delta))
        else:
            # a Linear's output gradient is its δ = ∂C/∂z
            def watch_output(module: Any, inputs: Any, output: Tensor, name: str = name) -> None:
                if output.requires_grad:
                    output.register_hook(lambda delta: deltas.record(name, delta))

            handles.append(layer.register_forward_hook(watch_output))
    return handles


LAYOUT: dict[str, Any] = {
    "torchbp": {
        "loss": ["Multiline", [r"^loss/(train|val)$"]],
        "accuracy": ["Multiline", [r"^accuracy/val$"]],
        "δ RMS per example, per layer": ["Multiline", [r"^delta_rms/"]],
        "δ-norm per layer": ["Multiline", [r"^delta_norm/"]],
    }
}
"""The custom-scalars layout: each chart is a list of regular expressions that TensorBoard *searches*
tags with, so each is anchored (``loss/train`` alone would also match ``loss/train_step``); the δ
charts match every layer's tag, so the same layout serves nets of any depth and merges into one chart
per kind when runs of different depths share a log directory."""


@hookimpl
def torchbp_train_start(run: Any) -> None:
    listen(_STEPS, _StepLoss() if run.directory is not None else None)
    if run.directory is None:
        return
    from torch.utils.tensorboard import SummaryWriter

    # on resume, drop what the earlier run logged after its checkpoint: step losses from step
    # start_epoch · steps_per_epoch, epoch scalars from step start_epoch + 1 (epochs count from 1, so
    # with one step per epoch the checkpointed epoch's scalars sit at step start_epoch, and stay)
    purge = max(run.start_epoch * run.steps_per_epoch, run.start_epoch + 1) if run.start_epoch else None
    writer = SummaryWriter(str(run.directory), purge_step=purge)
    layers = _layers(run.model)
    deltas = _Deltas()
    writer.add_custom_scalars(LAYOUT)
    run.state["tensorboard"] = {
        "writer": writer,
        "layers": layers,
        "deltas": deltas,
        "handles": _watch(layers, deltas),
    }


class _StepLoss:
    """``loss/train_step``: listens to steps only while a run is logged."""

    @hookimpl
    def torchbp_step_end(self, run: Any, epoch: int, step: int, loss: Tensor) -> None:
        writer = run.state["tensorboard"]["writer"]
        writer.add_scalar("loss/train_step", loss.item(), epoch * run.steps_per_epoch + step)


@hookimpl
def torchbp_epoch_end(run: Any, epoch: int, metrics: dict[str, float]) -> None:
    if "tensorboard" not in run.state:
        return
    state = run.state["tensorboard"]
    writer, deltas = state["writer"], state["deltas"]
    step = epoch + 1
    writer.add_scalar("loss/train", metrics["train_loss"], step)
    if "val_loss" in metrics:
        writer.add_scalar("loss/val", metrics["val_loss"], step)
    if "val_accuracy" in metrics:
        writer.add_scalar("accuracy/val", metrics["val_accuracy"], step)
    writer.add_scalar("lr", metrics["lr"], step)
    for name, layer in state["layers"]:
        for kind, parameter in layer.named_parameters(recurse=False):
            if parameter is None:
                continue
            writer.add_histogram(f"weights/{name}.{kind}", parameter.detach(), step)
            if parameter.grad is not None:
                writer.add_histogram(f"gradients/{name}.{kind}", parameter.grad, step)
        if "norm" in run.config.get("per_example", ()):
            norms = [p.grad_sample_norm for p in layer.parameters(recurse=False) if hasattr(p, "grad_sample_norm")]
            if norms:
                # ‖gₖ‖ over the layer's parameters: √(Σₚ ‖gₖ,ₚ‖²)
                writer.add_histogram(f"per_example_norm/{name}", torch.stack(norms).norm(dim=0), step)
        if name in deltas.count:
            writer.add_histogram(f"delta/{name}", deltas.last[name], step)
            count = deltas.count[name]
            writer.add_scalar(f"delta_norm/{name}", (deltas.norm_sum[name] / count).item(), step)
            writer.add_scalar(f"delta_rms/{name}", (deltas.rms_sum[name] / count).item(), step)
    deltas.clear()
    writer.flush()


def _hparam(value: Any) -> Any:
    return value if isinstance(value, bool | int | float | str) else str(value)


@hookimpl
def torchbp_train_end(run: Any, history: list[dict[str, float]]) -> None:
    listen(_STEPS, None)
    state = run.state.pop("tensorboard", None)
    if state is None:
        return
    from torch.utils.tensorboard.summary import hparams

    writer = state["writer"]
    for handle in state["handles"]:
        handle.remove()
    if history:
        final = history[-1]
        metric_dict = {
            f"hparam/{key}": value for key, value in final.items() if key in ("train_loss", "val_loss", "val_accuracy")
        }
        # settings left empty ("" for no data file, no target, no name…) would only add empty columns
        hparam_dict = {
            key: _hparam(value)
            for key, value in run.config.items()
            if not isinstance(value, dict | list) and value not in ("", None)
        }
        if run.config.get("layers"):
            hparam_dict["layers"] = str(run.config["layers"])
        hparam_dict["status"] = run.status  # finished, stopped early, interrupted or failed
        for summary in hparams(hparam_dict, metric_dict):
            writer.file_writer.add_summary(summary)
        for key, value in metric_dict.items():
            writer.add_scalar(key, value, int(final["epoch"]))
    writer.close()
