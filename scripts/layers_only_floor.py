"""How near native a layers-only step can come: the user's own loss and optimiser, a plain stack's
layers swapped for one bare autograd node.

``python scripts/layers_only_floor.py [--cases PART ...] [--quick] [--repeats R] [--threads T] [--json PATH]``;
a diagnostic beside ``torchbp bench``, not a benchmark case.

For each plain stack of the layers-only table (``torchbp.benchmark.LAYERS_ONLY_CASES``), four
contenders start from the same weights, see the same batch, and are trained with
``torch.nn.CrossEntropyLoss`` and ``torch.optim.SGD(lr=0.01, momentum=0.9)``, timed in alternation
in one process (as ``torchbp bench`` times them):

- **native**, **converted**, **MLP**: the layers-only table's three;
- **bare node**: the stack's equations in one autograd Function (``BareStack``) written for plain
  stacks of one σ, in the ``setup_context`` form that ``torch.func`` needs and called as torchbp
  calls its own nodes (``plain_apply``), but with nothing else: no argument checks, no hooks, no
  feedback rules, no per-example taps, no double backward, no forward-mode AD. What one Python
  node costs in the autograd engine when it does only the maths: the floor for any explicit-δ
  layer that keeps ``torch.func`` working.

The report gives each contender's median µs per step, the median of its per-round ratios to
native, and to the bare node.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch
from torch import Tensor
from torch.autograd import Function

from torchbp.benchmark import (
    LAYERS_ONLY_CASES,
    OPTIMIZERS,
    QUICK_LAYERS_ONLY_CASES,
    LayersOnlyCase,
    _layers_only_batch,
    _steps_for,
    _time,
    _user_step,
    interleave,
    layers_only_contenders,
    summarise,
)
from torchbp.derivatives.activations import Elementwise, get_activation
from torchbp.functional.internals import plain_apply


class BareStack(Function):
    """``forward(x, σ, W¹, b¹, …, Wᴸ, bᴸ)``: zᴸ of the stack aˡ = σ(aˡ⁻¹ Wˡᵀ + bˡ) with no σ after
    the last layer (logits), followed by a¹ … aᴸ⁻¹; backward: the δ-recursion and nothing else.
    σ is torchbp's own (an elementwise activation that reads a, or relu, whose fused σ′ kernel
    reads a as well as its mask); ``x`` gets no gradient."""

    @staticmethod
    def forward(x: Tensor, sigma: Elementwise, *params: Tensor) -> tuple[Tensor, ...]:
        hidden, a = [], x
        for l in range(len(params) // 2 - 1):
            a = sigma.sigma(torch.addmm(params[2 * l + 1], a, params[2 * l].t()))
            hidden.append(a)
        return torch.addmm(params[-1], a, params[-2].t()), *hidden

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, ...]) -> None:
        ctx.sigma = inputs[1]
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(inputs[0], *output[1:], *inputs[2::2])

    @staticmethod
    def backward(ctx: Any, delta: Tensor, *_: Tensor | None) -> tuple[Tensor | None, ...]:
        saved = ctx.saved_tensors
        layers = len(saved) // 2
        inputs, weights = saved[:layers], saved[layers:]
        grads: list[Tensor | None] = [None] * (2 * layers)
        for l in reversed(range(layers)):
            grads[2 * l], grads[2 * l + 1] = delta.t() @ inputs[l], delta.sum(0)  # BP4, BP3
            if l:
                delta = ctx.sigma.fused(delta @ weights[l], inputs[l])  # BP2
        return None, None, *grads


class BareNode(torch.nn.Module):
    """A plain stack's parameters, run as one ``BareStack`` node. Input ``(N, sizes[0])``, output
    logits ``(N, sizes[-1])``."""

    def __init__(self, native: torch.nn.Module, sigma: str) -> None:
        super().__init__()
        self.sigma = get_activation(sigma)
        self.params = torch.nn.ParameterList(torch.nn.Parameter(p.detach().clone()) for p in native.parameters())

    def forward(self, x: Tensor) -> Tensor:
        return plain_apply(BareStack, (x, self.sigma, *self.params))[0]  # type: ignore[no-any-return]


def contenders(case: LayersOnlyCase) -> dict[str, torch.nn.Module]:
    """native, converted, MLP (``layers_only_contenders``) and the bare node, with one set of weights."""
    assert case.mlp is not None, f"{case.name} is not a plain stack"
    models = layers_only_contenders(case, torch.device("cpu"))
    models["bare node"] = BareNode(models["native"], case.mlp[1])
    return models


def run(case: LayersOnlyCase, repeats: int, target_seconds: float) -> dict[str, Any]:
    """Every contender's training step timed in alternation: ``summarise``'s medians and ratios to
    native, and the medians of per-round ratios to the bare node."""
    models = contenders(case)
    x, y = _layers_only_batch(case, torch.device("cpu"))
    loss = torch.nn.CrossEntropyLoss()
    steps = {
        name: _user_step(model, OPTIMIZERS["sgd"][1](model.parameters()), loss, x, y) for name, model in models.items()
    }
    for step in steps.values():
        step()
    count = _steps_for(steps["native"], torch.device("cpu"), target_seconds)
    times = interleave(steps, count, repeats, lambda step, n: _time(step, n, torch.device("cpu")))
    return {
        "case": case.name,
        "steps_per_timing": count,
        "times_us": times,
        **summarise(times),
        "over_bare_node": summarise(times, baseline="bare node")["median_round_ratio"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="*", help="only the plain stacks whose names contain one of these")
    parser.add_argument("--quick", action="store_true", help="the quick cases (a small stack)")
    parser.add_argument("--repeats", type=int, default=21, help="alternating timings per contender (default 21)")
    parser.add_argument("--target-ms", type=float, default=50.0, help="native's time per timing (default 50 ms)")
    parser.add_argument("--threads", type=int, help="intra-op threads (default: torch's)")
    parser.add_argument("--json", help="write the report here too")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    cases = [
        case
        for case in (QUICK_LAYERS_ONLY_CASES if args.quick else LAYERS_ONLY_CASES)
        if case.mlp is not None and (not args.cases or any(part in case.name for part in args.cases))
    ]
    if not cases:
        parser.error(f"--cases {args.cases}: no plain stack's name contains any of them")
    reports = []
    print(f"{torch.get_num_threads()} thread(s); SGD(lr=0.01, momentum=0.9), CrossEntropyLoss; medians")
    print(f"{'case':28s}{'contender':>12s}{'µs/step':>10s}{'/native':>9s}{'/bare':>8s}")
    for case in cases:
        report = run(case, args.repeats, args.target_ms / 1000)
        reports.append(report)
        for name, median in report["median_us"].items():
            native, bare = report["median_round_ratio"][name], report["over_bare_node"][name]
            print(f"{case.name:28s}{name:>12s}{median:10.1f}{native:9.3f}{bare:8.3f}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"threads": torch.get_num_threads(), "cases": reports}, out, indent=1)


if __name__ == "__main__":
    main()
