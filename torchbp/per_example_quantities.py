"""Per-example gradients, their norms, variance and second moment, from the δ of each backward pass.

``with torchbp.per_example(model, "grad", "norm"): loss.backward()`` leaves, on every parameter of
the model's torchbp layers, each example's own gradient and what follows from it. The equations
(``torchbp.derivatives.per_example``): with C = (1/N) Σₖ Cₖ, the δ reaching a layer is
(1/N) ∂Cₖ/∂zₖ per example, and example k's gradient is gₖ = N Σₜ δₖₜ uₖₜᵀ (u the layer's input row,
or window; t its positions), so that ``p.grad == p.grad_sample.mean(0)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType
from typing import Any

import torch
from torch import Tensor

from .derivatives.base import Derivatives
from .derivatives.linear import Linear as LinearDerivatives
from .derivatives.per_example import PerExampleError, Rows, rows_for, rule_for
from .functional.per_example_tap import RECORDERS
from .nn import DeltaHooks, Dense
from .registry import list_layers
from .specs import LayerSpec

QUANTITIES = {
    "grad": "grad_sample",
    "norm": "grad_sample_norm",
    "variance": "grad_variance",
    "second_moment": "grad_second_moment",
}
"""Quantity → the attribute of each parameter it is left in."""

__all__ = ["QUANTITIES", "PerExample", "PerExampleError", "per_example", "per_example_norm"]


@dataclass
class _Tracked:
    """A parameter whose per-example quantities are wanted, and where it lives (for messages)."""

    parameter: Tensor
    name: str  # e.g. "layers.0.weight"
    buffer: Tensor | None = None  # the last step's grad_sample, to be written over
    contributions: int = 0


def _derivatives_of(module: torch.nn.Module) -> type[Derivatives] | None:
    """The layer type a torchbp twin runs (a fused ``Dense`` runs a linear layer's δ)."""
    if isinstance(module, Dense):
        return LinearDerivatives
    for entry in list_layers():
        spec = entry.spec
        if isinstance(spec, LayerSpec) and spec.twin is type(module):
            return spec.derivatives
    return None


def _check_layer(name: str, module: torch.nn.Module) -> None:
    """Raise ``PerExampleError`` unless ``module`` (with trainable parameters) can give per-example rows."""
    kind = type(module).__name__
    if not isinstance(module, DeltaHooks):
        raise PerExampleError(
            f"layer {name!r} ({type(module).__module__}.{kind}) is not a torchbp layer, so its backward pass has no δ "
            "to read per-example gradients from: convert the model with torchbp.nn.convert(model), or freeze the "
            "layer's parameters (requires_grad_(False))"
        )
    derivatives = _derivatives_of(module)
    if derivatives is None or rule_for(derivatives) is None:
        raise PerExampleError(
            f"layer {name!r} ({kind}) cannot give per-example quantities: its layer type has no per-example rule "
            "(torchbp.derivatives.per_example.RULES); freeze its parameters or add a rule"
        )
    if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and (module.training or module.running_mean is None):
        raise PerExampleError(
            f"layer {name!r} ({kind}): per-example gradients are not defined for batch norm in training mode: each "
            "example's output depends on the whole batch through the batch's mean and variance. Put the layer in "
            "eval mode (it then normalises with its running statistics) or freeze its parameters"
        )


class PerExample:
    """The context of ``per_example``: open around ``loss.backward()``; can be opened again
    (each opening is a new recording) and nested (a parameter goes to the innermost opening).

    Attributes:
        model: the model whose parameters receive the quantities.
        quantities: the quantities asked for, in ``QUANTITIES``' names.
    """

    def __init__(self, model: torch.nn.Module, *quantities: str, reduction: str = "mean") -> None:
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
        if not quantities:
            raise ValueError(f"per_example: name at least one quantity of {sorted(QUANTITIES)}")
        unknown = [q for q in quantities if q not in QUANTITIES]
        if unknown:
            raise ValueError(f"per_example: unknown quantities {unknown}; expected some of {sorted(QUANTITIES)}")
        if reduction != "mean":
            raise ValueError(
                f"reduction: per-example quantities follow the mean convention C = (1/N) Σₖ Cₖ (so that "
                f"p.grad == p.grad_sample.mean(0)), got {reduction!r}; average the loss over the batch "
                "(torchbp's costs and torch's losses do by default)"
            )
        self.model = model
        self.quantities = tuple(dict.fromkeys(quantities))
        self._names: dict[int, str] = {}
        layers = 0
        for module_name, module in model.named_modules():
            own = [(n, p) for n, p in module.named_parameters(recurse=False) if p.requires_grad]
            if isinstance(module, DeltaHooks):
                layers += 1
            if not own:
                continue
            _check_layer(module_name or type(module).__name__, module)
            for n, p in own:
                self._names[id(p)] = f"{module_name}.{n}" if module_name else n
        if not layers:
            raise PerExampleError(
                f"per_example: {type(model).__name__} has none of torchbp's layers; convert it first "
                "(torchbp.nn.convert(model)) so that its backward pass is torchbp's"
            )
        self._parameters = {id(p): p for p in model.parameters() if id(p) in self._names}
        self._open: list[_Recording] = []

    def __enter__(self) -> PerExample:
        recording = _Recording(self)
        self._open.append(recording)
        RECORDERS.append(recording)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        recording = self._open.pop()
        for i in reversed(range(len(RECORDERS))):
            if RECORDERS[i] is recording:
                del RECORDERS[i]
                break


class _Recording:
    """One opening of a ``PerExample``: takes each layer's δ and leaves the quantities on its parameters."""

    def __init__(self, context: PerExample) -> None:
        self.quantities = set(context.quantities)
        self.tracked: dict[int, _Tracked] = {}
        busy = {id(t.buffer) for r in RECORDERS if isinstance(r, _Recording) for t in r.tracked.values()}
        busy |= {
            id(getattr(t.parameter, "grad_sample", None))
            for r in RECORDERS
            if isinstance(r, _Recording)
            for t in r.tracked.values()
        }
        for key, parameter in context._parameters.items():
            previous = parameter.__dict__.get("grad_sample")
            for quantity in context.quantities:
                parameter.__dict__.pop(QUANTITIES[quantity], None)  # no stale values from an earlier step
            reusable = "grad" in self.quantities and isinstance(previous, Tensor) and id(previous) not in busy
            self.tracked[key] = _Tracked(parameter, context._names[key], previous if reusable else None)

    def record(
        self,
        derivatives: Derivatives,
        delta: Tensor,
        saved: Any,
        params: tuple[Tensor | None, ...],
        grads: tuple[Tensor | None, ...],
        taken: set[int],
    ) -> None:
        entries = [None if p is None or id(p) in taken else self.tracked.get(id(p)) for p in params]
        if not any(entries):
            return
        try:
            rows = rows_for(derivatives, delta, saved, params)
        except PerExampleError as error:
            name = next(e for e in entries if e is not None).name.rpartition(".")[0] or "the model"
            raise PerExampleError(f"layer {name!r}: {error}") from None
        for entry, parameter_rows, grad in zip(entries, rows, grads):
            if entry is None:
                continue
            taken.add(id(entry.parameter))
            if parameter_rows is None:
                raise PerExampleError(
                    f"{entry.name}: its layer kept no input for the backward pass, so its per-example gradients "
                    "cannot be formed (was it frozen during the forward pass?)"
                )
            self._add(entry, parameter_rows, grad)

    def _add(self, entry: _Tracked, rows: Rows, grad: Tensor | None) -> None:
        parameter, quantities = entry.parameter, self.quantities
        entry.contributions += 1
        if entry.contributions > 1:
            if quantities != {"grad"}:
                raise PerExampleError(
                    f"{entry.name} received a second gradient in one per_example context (a layer used twice in "
                    f"the forward pass, or a second backward pass): {sorted(quantities - {'grad'})} need each "
                    "parameter's whole per-example gradient at once; open a new context for each backward pass"
                )
            parameter.grad_sample.add_(rows.grad_sample())  # type: ignore[attr-defined]
            return
        one_row = rows.outer and rows.positions == 1  # the forms that need no gₖ written out
        grad_sample = None
        if "grad" in quantities or (not one_row and quantities & {"variance", "second_moment"}):
            buffer = entry.buffer
            fits = (
                buffer is not None and buffer.shape == (rows.examples, *rows.shape) and buffer.dtype == rows.delta.dtype
            )
            grad_sample = rows.grad_sample(buffer if fits and buffer.device == rows.delta.device else None)  # type: ignore[union-attr]
            if "grad" in quantities:
                parameter.grad_sample = grad_sample  # type: ignore[attr-defined]
        if "norm" in quantities:
            parameter.grad_sample_norm = rows.norm(None if one_row else grad_sample)  # type: ignore[attr-defined]
        if quantities & {"variance", "second_moment"}:
            # E[g²] = (1/N) Σₖ gₖ²
            second_moment = rows.second_moment(grad_sample)
            if "second_moment" in quantities:
                parameter.grad_second_moment = second_moment  # type: ignore[attr-defined]
            if "variance" in quantities:
                # Var[g] = E[g²] − (E[g])², E[g] = (1/N) Σₖ gₖ = ∂C/∂θ, which the backward pass computed
                mean = rows.mean(grad_sample) if grad is None else grad
                parameter.grad_variance = (second_moment - mean.square()).clamp_min_(0)  # type: ignore[attr-defined]


def per_example(model: torch.nn.Module, *quantities: str, reduction: str = "mean") -> PerExample:
    """A context in which each backward pass through ``model`` leaves per-example quantities on its parameters.

    Quantities (each parameter ``p`` of a torchbp layer, for a batch of N examples):

    * ``"grad"`` → ``p.grad_sample``, ``(N, *p.shape)``: example k's gradient of its own cost Cₖ, where
      the batch cost is the mean (1/N) Σₖ Cₖ, so ``p.grad == p.grad_sample.mean(0)``. A sequence's or an
      image's example sums over its positions. The tensor is reused (written over) by the next
      context that asks for ``"grad"`` on the same model: clone it to keep it.
    * ``"norm"`` → ``p.grad_sample_norm``, ``(N,)``: ‖gₖ‖, without writing gₖ out where the layer
      allows it (N ‖δₖ‖ ‖aₖ‖ for one row per example, the Gram form where it is cheaper);
      ``per_example_norm`` combines them over the model.
    * ``"variance"`` → ``p.grad_variance``, ``p.shape``: (1/N) Σₖ (gₖ − ḡ)², the population variance.
    * ``"second_moment"`` → ``p.grad_second_moment``, ``p.shape``: (1/N) Σₖ gₖ².

    Nothing is attached to the model: the context only listens to the backward passes run while it
    is open (works with the fused ``MLP``, chains of converted layers, every layer's own Function and
    ``torchbp.fit``'s graph-free step; under any rule that carries δ down, the rows are built
    from the δ each layer receives). The forward pass may run before the context is opened.

    Args:
        model: a model with torchbp layers; every trainable parameter must belong to one that can
            give per-example rows (batch norm only in eval mode).
        quantities: some of ``"grad"``, ``"norm"``, ``"variance"``, ``"second_moment"``.
        reduction: the batch cost's reduction: only ``"mean"``.

    Raises:
        PerExampleError: a layer that cannot give them (named), or a model without torchbp layers.

    Examples:
        >>> import torch, torchbp
        >>> model = torchbp.nn.MLP([3, 4, 2])
        >>> x = torch.randn(5, 3)
        >>> with torchbp.per_example(model, "grad"):
        ...     model(x).square().mean(0).sum().backward()
        >>> weight = model.layers[0].weight
        >>> weight.grad_sample.shape, torch.allclose(weight.grad_sample.mean(0), weight.grad)
        (torch.Size([5, 4, 3]), True)
    """
    return PerExample(model, *quantities, reduction=reduction)


def per_example_norm(model: torch.nn.Module) -> Tensor:
    """‖gₖ‖ over all of ``model``'s parameters, ``(N,)``: √(Σₚ ‖gₖ,ₚ‖²) from each ``p.grad_sample_norm``
    left by the last ``per_example(model, "norm")`` context (a parameter without one got no gradient).

    Examples:
        >>> import torch, torchbp
        >>> model = torchbp.nn.MLP([3, 2])
        >>> with torchbp.per_example(model, "norm"):
        ...     model(torch.randn(4, 3)).sum(1).mean().backward()
        >>> torchbp.per_example_norm(model).shape
        torch.Size([4])
    """
    norms = [norm for p in model.parameters() if isinstance(norm := p.__dict__.get("grad_sample_norm"), Tensor)]
    if not norms:
        raise ValueError(
            f"{type(model).__name__} has no per-example norms: run loss.backward() inside "
            "torchbp.per_example(model, 'norm') first"
        )
    sizes = {tuple(norm.shape) for norm in norms}
    if len(sizes) > 1:
        raise ValueError(f"per-example norms of different batch sizes {sorted(sizes)}: from different backward passes")
    return torch.linalg.vector_norm(torch.stack(norms), dim=0)
