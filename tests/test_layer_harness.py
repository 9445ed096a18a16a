"""Every registered explicit-δ layer, torchbp's and any installed plugin's, through one harness.

Over each derivatives object's ``samples()``: gradcheck (reverse, forward and batched through
vmap), gradgradcheck, in float64; and, for layer types with a per-example rule, each example's
gradient and what follows from it against ``vmap(grad(…))``. Over each layer's ``examples``: the
converted module against its ``torch.nn`` original (outputs, input and parameter gradients,
buffers), and an autograd graph with no native backward node left for a converted op.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck
from torch.func import grad, vmap

import torchbp
from torchbp.derivatives import Derivatives, Sample
from torchbp.derivatives.per_example import ParameterRows, PerExampleError, rows_for, rule_for
from torchbp.functional import apply_layer
from torchbp.functional.per_example_tap import RECORDERS
from torchbp.specs import LayerSpec

SPECS: list[LayerSpec] = [entry.spec for entry in torchbp.list_layers()]  # type: ignore[misc]
DERIVATIVES: list[type[Derivatives]] = list(dict.fromkeys(s.derivatives for s in SPECS if s.derivatives is not None))
EXAMPLES = [
    (spec, index) for spec in SPECS if spec.examples is not None for index in range(len(spec.examples(torch.float64)))
]

# graph nodes that may stay native after convert: reshapes, views, copies, layout moves (an
# attention's heads split and joined) and residual additions
NATIVE_ALLOWED = {
    "AccumulateGrad",
    "ViewBackward0",
    "UnsafeViewBackward0",
    "ReshapeAliasBackward0",
    "AddBackward0",
    "CloneBackward0",
    "ToCopyBackward0",
    "TransposeBackward0",
    "PermuteBackward0",
    "SplitBackward0",
}


def _deterministic(function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` with torch's RNG reset on every call, so a random layer (dropout) draws one mask."""

    def call(*args: Any) -> Any:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return function(*args)

    return call


def _leaf(t: torch.Tensor) -> torch.Tensor:
    """A detached copy that requires grad, for a floating-point tensor; integer indices as they are."""
    return t.detach().requires_grad_() if t.is_floating_point() else t


def _samples(derivatives: type[Derivatives], device: str) -> list[Sample]:
    torch.manual_seed(0)
    return derivatives.samples(torch.float64, device)


@pytest.mark.parametrize("derivatives", DERIVATIVES, ids=lambda d: d.__qualname__)
def test_gradcheck_gradgradcheck_and_forward_ad_over_samples(derivatives: type[Derivatives], device: str) -> None:
    check_samples(derivatives, device)


def check_samples(derivatives: type[Derivatives], device: str) -> None:
    """gradcheck (reverse, forward, batched) and gradgradcheck over ``derivatives.samples()``."""
    samples = _samples(derivatives, device)
    assert samples, f"{derivatives.__qualname__}.samples() gave no case"
    for sample in samples:
        x = _leaf(sample.x)
        params = [_leaf(p) if p is not None else None for p in sample.params]
        tensors = [t for t in (x, *params) if t is not None and t.requires_grad]

        def layer(*given: torch.Tensor, sample: Sample = sample, x: torch.Tensor = x) -> torch.Tensor:
            it = iter(given)
            x = next(it) if x.requires_grad else x
            full = tuple(next(it) if p is not None else None for p in sample.params)
            return apply_layer(sample.derivatives, x, full)

        function = _deterministic(layer)
        assert gradcheck(
            function, tensors, check_forward_ad=True, check_batched_grad=True, check_batched_forward_grad=True
        ), sample.label
        assert gradgradcheck(function, tensors), sample.label


def graph_node_names(output: torch.Tensor) -> set[str]:
    """The class names of every node in ``output``'s autograd graph."""
    names, seen, stack = set(), set(), [output.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return names


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize(("spec", "index"), EXAMPLES, ids=lambda v: v.name if isinstance(v, LayerSpec) else str(v))
def test_converted_layer_equals_its_torch_original(spec: LayerSpec, index: int, dtype: torch.dtype) -> None:
    check_against_torch(spec, index, dtype)


def check_against_torch(spec: LayerSpec, index: int, dtype: torch.dtype) -> None:
    """Example ``index`` of ``spec``, converted, against its torch.nn original; no native node left."""
    assert spec.examples is not None
    torch.manual_seed(0)
    theirs, x = spec.examples(dtype)[index]
    ours = torchbp.nn.convert(copy.deepcopy(theirs))
    assert type(ours) is spec.twin and isinstance(ours, spec.module)
    assert repr(ours) == repr(theirs)
    tolerance = {"rtol": 1e-10, "atol": 1e-10} if dtype == torch.float64 else {}
    for training in (True, False):
        ours.train(training)
        theirs.train(training)
        x_ours, x_theirs = _leaf(x.clone()), _leaf(x.clone())
        with torch.random.fork_rng(devices=[]):
            out_ours = ours(x_ours)
        out_theirs = theirs(x_theirs)
        torch.testing.assert_close(out_ours, out_theirs, **tolerance)
        grad = torch.randn_like(out_theirs)
        out_ours.backward(grad)
        out_theirs.backward(grad)
        if x.is_floating_point():
            torch.testing.assert_close(x_ours.grad, x_theirs.grad, **tolerance)
        for (name, p_ours), p_theirs in zip(ours.named_parameters(), theirs.parameters()):
            torch.testing.assert_close(p_ours.grad, p_theirs.grad, **tolerance, msg=lambda m, n=name: f"{n}: {m}")
        for (name, b_ours), b_theirs in zip(ours.named_buffers(), theirs.buffers()):
            torch.testing.assert_close(b_ours, b_theirs, **tolerance, msg=lambda m, n=name: f"{n}: {m}")
        if training:
            left = graph_node_names(out_ours) - NATIVE_ALLOWED
            assert all(name.endswith("FunctionBackward") for name in left), left
        ours.zero_grad()
        theirs.zero_grad()


@pytest.mark.parametrize("spec", [s for s in SPECS if s.examples is not None], ids=lambda s: s.name)
def test_torch_compile_traces_each_layer_without_graph_breaks(spec: LayerSpec) -> None:
    import torch._dynamo as dynamo

    assert spec.examples is not None
    module, x = spec.examples(torch.float32)[0]
    model = torchbp.nn.convert(module)
    dynamo.reset()
    explanation = dynamo.explain(lambda x: model(x).sum())(_leaf(x))
    assert explanation.graph_break_count == 0, explanation.break_reasons


PER_EXAMPLE = [d for d in DERIVATIVES if rule_for(d) is not None]


class RowsRecorder:
    """Keeps the per-example rows of every layer its backward passes hand it."""

    def __init__(self) -> None:
        self.rows: list[list[ParameterRows | None]] = []

    def record(self, d: Any, delta: Any, saved: Any, params: Any, grads: Any, taken: Any) -> None:
        self.rows.append(rows_for(d, delta, saved, params))


@pytest.mark.parametrize("derivatives", PER_EXAMPLE, ids=lambda d: d.__qualname__)
def test_per_example_rows_equal_vmap_of_grad_over_samples(derivatives: type[Derivatives], device: str) -> None:
    check_per_example_rows(derivatives, device)


def check_per_example_rows(derivatives: type[Derivatives], device: str) -> None:
    """Over ``derivatives.samples()``: each example's gradient, its norm, the second moment and the
    variance built from the δ and saved tensors of the layer's own backward pass equal
    ``vmap(grad(Cₖ))`` to 1e-10 (C = (1/N) Σₖ Cₖ). A sample without a batch dimension, or batch norm
    in training mode, must refuse with a :class:`PerExampleError` instead."""
    checked = 0
    for sample in _samples(derivatives, device):
        trainable = [i for i, p in enumerate(sample.params) if p is not None and i < 2]
        if not trainable:
            continue
        target = torch.randn_like(apply_layer(sample.derivatives, sample.x, sample.params))

        def cost_k(
            given: list[torch.Tensor],
            x_k: torch.Tensor,
            y_k: torch.Tensor,
            sample: Sample = sample,
            trainable: list[int] = trainable,
        ) -> Any:
            params = list(sample.params)
            for i, p in zip(trainable, given):
                params[i] = p
            z = apply_layer(sample.derivatives, x_k.unsqueeze(0), tuple(params))
            return (z * y_k.unsqueeze(0)).sum() + 0.5 * z.square().sum()  # Cₖ, not linear in z

        params = [p.detach().requires_grad_() if p is not None and i < 2 else p for i, p in enumerate(sample.params)]
        recorder = RowsRecorder()
        try:
            RECORDERS.append(recorder)
            z = apply_layer(sample.derivatives, sample.x, tuple(params))
            ((z * target).sum() + 0.5 * z.square().sum()).div(sample.x.shape[0]).backward()
        except PerExampleError as error:
            assert sample.x.dim() < 2 or "training mode" in str(error) or "batch dimension" in str(error), sample.label
            continue
        finally:
            RECORDERS.pop()
        reference = vmap(grad(cost_k), in_dims=(None, 0, 0))([params[i] for i in trainable], sample.x, target)
        (rows,) = recorder.rows
        for i, g in zip(trainable, reference):
            row = rows[i]
            assert row is not None, sample.label
            tolerance = {"rtol": 0, "atol": 1e-10, "msg": lambda m, s=sample.label, i=i: f"{s}, param {i}: {m}"}
            torch.testing.assert_close(row.grad_sample(), g, **tolerance)
            torch.testing.assert_close(row.norm(), g.flatten(1).norm(dim=1), **tolerance)
            torch.testing.assert_close(row.second_moment(), g.square().mean(0), **tolerance)
            torch.testing.assert_close(row.mean(), g.mean(0), **tolerance)
            torch.testing.assert_close(params[i].grad, g.mean(0), **tolerance)
        checked += 1
    assert checked, f"{derivatives.__qualname__}.samples() gave no batched case with parameters"
