"""Per-example gradients, their norms, variance and second moment, from the δ of each backward pass.

``with torchbp.per_example(model, "grad", "norm"): loss.backward()`` leaves, on every parameter of
the model's torchbp layers, each example's own gradient and what follows from it. The equations
(``torchbp.derivatives.per_example``): with C = (1/N) Σₖ Cₖ, the δ reaching a layer is
(1/N) ∂Cₖ/∂zₖ per example, and example k's gradient is gₖ = N Σₜ δₖₜ uₖₜᵀ (u the layer's input row,
or window; t its positions), so that ``p.grad == p.grad_sample.mean(0)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import torch
from torch import Tensor

from .derivatives.base import Derivatives
from .derivatives.linear import Linear as LinearDerivatives
from .derivatives.per_example import ParameterRows, PerExampleError, rows_for, rule_for
from .functional.checks import cast_from
from .functional.per_example_tap import RECORDERS
from .nn import DeltaHooks, Dense, MultiheadAttention
from .plugins import every_entry
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
    parts: set[tuple[int, tuple[int, ...], tuple[int, ...]] | None] = field(default_factory=set)  # None: whole


def _derivatives_of(module: torch.nn.Module) -> type[Derivatives] | None:
    """The layer type that computes a torchbp twin's own parameters' gradients (a fused ``Dense`` runs
    a linear layer's δ; ``MultiheadAttention``'s own parameters are its in-projection's, a linear layer's)."""
    if isinstance(module, Dense | MultiheadAttention):
        return LinearDerivatives
    for entry in every_entry("layer"):
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
    if isinstance(module, torch.nn.MultiheadAttention) and any(
        b is not None and b.requires_grad for b in (module.bias_k, module.bias_v)
    ):
        raise PerExampleError(
            f"layer {name!r} ({kind}): bias_k and bias_v (add_bias_kv=True) join K and V by a concatenation, outside "
            "any torchbp layer, so no δ of theirs reaches a per-example rule: freeze them (requires_grad_(False)) or "
            "build the layer without add_bias_kv"
        )
    if isinstance(module, torch.nn.Embedding) and module.scale_grad_by_freq:
        raise PerExampleError(
            f"layer {name!r} ({kind}): per-example gradients are not defined with scale_grad_by_freq: each δ is "
            "divided by how often its index occurs in the whole batch, so an example's share depends on the others. "
            "Build the layer without scale_grad_by_freq or freeze its weight"
        )
    if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and (module.training or module.running_mean is None):
        raise PerExampleError(
            f"layer {name!r} ({kind}): per-example gradients are not defined for batch norm in training mode: each "
            "example's output depends on the whole batch through the batch's mean and variance. Put the layer in "
            "eval mode (it then normalises with its running statistics) or freeze its parameters"
        )


def _check_batch_first(name: str, module: torch.nn.Module) -> None:
    """Raise ``PerExampleError`` for a transformer layer with trainable parameters that takes ``(T, N, E)``."""
    if not isinstance(module, torch.nn.TransformerEncoderLayer | torch.nn.TransformerDecoderLayer):
        return
    attention = module.self_attn
    assert isinstance(attention, torch.nn.MultiheadAttention)
    if not attention.batch_first and any(p.requires_grad for p in module.parameters()):
        raise PerExampleError(
            f"layer {name!r} ({type(module).__name__}) takes (T, N, E) inputs (batch_first=False): its linear and "
            "norm layers would see the batch in dimension 1, but per-example quantities read each layer's examples "
            "from dimension 0. Build it with batch_first=True and give it (N, T, E)"
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
                f"reduction: expected 'mean', got {reduction!r}: per-example quantities follow the mean convention "
                "C = (1/N) Σₖ Cₖ (so that p.grad == p.grad_sample.mean(0)); average the loss over the batch "
                "(torchbp's costs and torch's losses do by default)"
            )
        self.model = model
        self.quantities = tuple(dict.fromkeys(quantities))
        self._attributes = tuple(QUANTITIES[q] for q in self.quantities)
        self._names: dict[int, str] = {}
        layers = 0
        for module_name, module in model.named_modules():
            own = [(n, p) for n, p in module.named_parameters(recurse=False) if p.requires_grad]
            if isinstance(module, DeltaHooks):
                layers += 1
            _check_batch_first(module_name or type(module).__name__, module)
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
        self.examples: int | None = None  # N, from the first layer recorded
        self.tracked: dict[int, _Tracked] = {}
        busy: set[int] = set()  # the gradient buffers of the openings still open (nested contexts)
        for recording in RECORDERS:
            if isinstance(recording, _Recording):
                for t in recording.tracked.values():
                    busy.update((id(t.buffer), id(t.parameter.__dict__.get("grad_sample"))))
        reuse, attributes, names = "grad" in self.quantities, context._attributes, context._names
        for key, parameter in context._parameters.items():
            own = parameter.__dict__
            previous = own.get("grad_sample")
            for attribute in attributes:
                own.pop(attribute, None)  # no stale values from an earlier step
            reusable = reuse and isinstance(previous, Tensor) and id(previous) not in busy
            self.tracked[key] = _Tracked(parameter, names[key], previous if reusable else None)

    def record(
        self,
        derivatives: Derivatives,
        delta: Tensor,
        saved: Any,
        params: tuple[Tensor | None, ...],
        grads: tuple[Tensor | None, ...],
        taken: set[int],
    ) -> None:
        # under autocast a layer computes with cast copies of its parameters: find the parameters
        origins = [None if p is None else cast_from(p) for p in params]
        entries = [None if p is None else self._entry_of(p, taken) for p in origins]
        if not any(entries):
            return
        try:
            rows = rows_for(derivatives, delta, saved, params)
        except PerExampleError as error:
            name = next(e for e in entries if e is not None).name.rpartition(".")[0] or "the model"
            raise PerExampleError(f"layer {name!r}: {error}") from None
        for entry, part, parameter_rows, grad in zip(entries, origins, rows, grads):
            if entry is None:
                continue
            taken.add(id(entry.parameter))
            if parameter_rows is None:
                raise PerExampleError(
                    f"{entry.name}: its layer kept no input for the backward pass, so its per-example gradients "
                    "cannot be formed (was it frozen during the forward pass?)"
                )
            self._add(entry, parameter_rows, grad, None if part is entry.parameter else part)

    def _entry_of(self, p: Tensor, taken: set[int]) -> _Tracked | None:
        """The tracked parameter ``p`` is, or is a view of (``MultiheadAttention`` hands its projections
        the thirds of ``in_proj_weight`` and ``in_proj_bias``), unless an inner recorder took it."""
        entry = self.tracked.get(id(p))
        if entry is None and p._base is not None:
            entry = self.tracked.get(id(p._base))
        return None if entry is None or id(entry.parameter) in taken else entry

    def _add(self, entry: _Tracked, rows: ParameterRows, grad: Tensor | None, part: Tensor | None) -> None:
        """Leave ``rows``' quantities on ``entry``'s parameter, or on the ``part`` of it (a view) they are for."""
        parameter, quantities = entry.parameter, self.quantities
        key = None if part is None else (int(part.storage_offset()), tuple(part.shape), part.stride())
        again = bool(entry.parts) and (key is None or None in entry.parts or key in entry.parts)
        if self.examples is None:
            self.examples = rows.examples
        elif rows.examples != self.examples and again:
            raise PerExampleError(
                f"{entry.name} received a second gradient in one per_example context, with {rows.examples} rows in "
                f"dimension 0 after one with {self.examples}: either a second backward pass of another batch (open a "
                "new context for each backward pass) or the layer used again on a tensor whose dimension 0 is not the "
                "batch (per-example quantities read each layer's examples from dimension 0)"
            )
        elif rows.examples != self.examples:
            raise PerExampleError(
                f"{entry.name}: its layer's input has {rows.examples} rows in dimension 0 where the other layers have "
                f"{self.examples} examples: per-example quantities read the batch from dimension 0 of every layer's "
                "input (a tensor shared by the whole batch, such as positions looked up without a batch dimension, "
                "must be expanded over the batch; transformer layers must be batch_first)"
            )
        first = not entry.parts
        entry.parts.add(key)
        if again and quantities != {"grad"}:
            raise PerExampleError(
                f"{entry.name} received a second gradient in one per_example context (a layer used twice in "
                f"the forward pass, or a second backward pass): {sorted(quantities - {'grad'})} need each "
                "parameter's whole per-example gradient at once; open a new context for each backward pass"
            )
        if again or part is not None:
            self._add_part(entry, rows, grad, part, first)
            return
        grad_sample = None
        if not rows.factored and quantities & {"grad", "variance", "second_moment"}:
            grad_sample = rows.grad_sample(entry.buffer if _fits(entry.buffer, rows, rows.shape) else None)
        # the factored forms first, while δ and u are in cache: writing gₖ out evicts them
        if "norm" in quantities:
            parameter.grad_sample_norm = _like(parameter, rows.norm(grad_sample))  # type: ignore[attr-defined]
        if quantities & {"variance", "second_moment"}:
            # E[g²] = (1/N) Σₖ gₖ²
            second_moment = _like(parameter, rows.second_moment(grad_sample))
            if "second_moment" in quantities:
                parameter.grad_second_moment = second_moment  # type: ignore[attr-defined]
            if "variance" in quantities:
                # Var[g] = E[g²] − (E[g])², E[g] = (1/N) Σₖ gₖ = ∂C/∂θ, which the backward pass computed
                mean = _like(parameter, rows.mean(grad_sample) if grad is None else grad)
                parameter.grad_variance = torch.addcmul(second_moment, mean, mean, value=-1).clamp_min_(0)  # type: ignore[attr-defined]
        if "grad" in quantities:
            if grad_sample is None:
                grad_sample = rows.grad_sample(entry.buffer if _fits(entry.buffer, rows, rows.shape) else None)
            parameter.grad_sample = _like(parameter, grad_sample)  # type: ignore[attr-defined]

    def _add_part(
        self, entry: _Tracked, rows: ParameterRows, grad: Tensor | None, part: Tensor | None, first: bool
    ) -> None:
        """Add ``rows``' gradients into the ``part`` of the parameter they are for (the whole of it when
        ``None``, a second time: only ``"grad"`` allows it); set the other quantities' part."""
        parameter, quantities, n = entry.parameter, self.quantities, rows.examples
        if part is not None and not parameter.is_contiguous():
            raise PerExampleError(f"{entry.name}: per-example quantities of its parts need a contiguous parameter")

        def place(whole: Tensor) -> Tensor:
            """The part of ``whole`` (the parameter's shape, after a batch dimension if it has one)."""
            if part is None:
                return whole
            offset = part.storage_offset() - parameter.storage_offset()
            batch = whole.dim() > parameter.dim()
            return whole.as_strided(
                ((n,) if batch else ()) + tuple(part.shape),
                ((whole.stride(0),) if batch else ()) + part.stride(),
                whole.storage_offset() + offset,
            )

        grad_sample = rows.grad_sample() if "grad" in quantities or not rows.factored else None
        if "grad" in quantities:
            if first:
                buffer = entry.buffer if _fits(entry.buffer, rows, parameter.shape, parameter.dtype) else None
                parameter.grad_sample = (  # type: ignore[attr-defined]
                    rows.delta.new_zeros(n, *parameter.shape, dtype=parameter.dtype)
                    if buffer is None
                    else buffer.zero_()
                )
            place(parameter.grad_sample).add_(grad_sample)  # type: ignore[attr-defined,arg-type]
        if "norm" in quantities:
            norm = _like(parameter, rows.norm(grad_sample))
            # ‖gₖ‖² = Σ over the parts ‖gₖ,part‖²
            parameter.grad_sample_norm = norm if first else torch.hypot(parameter.grad_sample_norm, norm)  # type: ignore[attr-defined]
        if quantities & {"variance", "second_moment"}:
            second_moment = rows.second_moment(grad_sample)
            for quantity, value in (
                ("second_moment", second_moment),
                ("variance", second_moment - (rows.mean(grad_sample) if grad is None else grad).square()),
            ):
                if quantity in quantities:
                    attribute = QUANTITIES[quantity]
                    if first:
                        setattr(parameter, attribute, rows.delta.new_zeros(parameter.shape, dtype=parameter.dtype))
                    place(getattr(parameter, attribute)).copy_(value.clamp_min(0) if quantity == "variance" else value)


def _fits(buffer: Tensor | None, rows: ParameterRows, shape: torch.Size, dtype: torch.dtype | None = None) -> bool:
    """Whether last step's ``grad_sample`` can be written over with ``(N, *shape)`` gradients like
    ``rows``' (in ``dtype``, the rows' own by default)."""
    return (
        buffer is not None
        and buffer.shape == (rows.examples, *shape)
        and buffer.dtype == (rows.delta.dtype if dtype is None else dtype)
        and buffer.device == rows.delta.device
    )


def _like(parameter: Tensor, quantity: Tensor) -> Tensor:
    """A quantity in its parameter's dtype: rows computed in another one (under autocast, or δ of a
    float16 layer for a float32 bias) are handed over as the parameter's ``grad`` is."""
    return quantity if quantity.dtype == parameter.dtype else quantity.to(parameter.dtype)


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
