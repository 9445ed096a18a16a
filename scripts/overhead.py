"""Where the drop-in step's time goes, on the overhead-bound 64-30-10 sigmoid net at batch 10.

``python scripts/overhead.py [--steps N] [--repeats R] [--threads T]``; a diagnostic, not a benchmark case.

Three training steps run in one process, alternating, from the same weights on the same batch:

- **native**: ``torch.nn`` layers, ``0.5 * F.mse_loss(…, reduction="sum") / n``, ``torch.optim.SGD``;
- **torchbp**: the drop-in loop ``rule.zero_grad(); cost(model(x), y).backward(); rule.step()``;
- **hand-specialised**: the same equations in two minimal autograd Functions written for exactly
  this net (no argument checks, no general layout, no hooks, no plugin dispatch), gradients reset
  to ``None`` and one ``torch._foreach_add_``: what two Python nodes cost in the engine when
  nothing else does.

Then each step is split into its phases (zero grads, forward, cost, backward, update), timed inside
the step as it runs, so that caches and branch predictors are as cold as in training.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.autograd import Function

from torchbp.benchmark import CASES, _batch, _native_twin
from torchbp.functional.internals import plain_apply
from torchbp.nn import MLP
from torchbp.registry import create_rule, get_cost


class TwoLayerSigmoid(Function):
    """a² = σ(σ(x W¹ᵀ + b¹) W²ᵀ + b²) for exactly two sigmoid layers, x needing no gradient."""

    @staticmethod
    def forward(x: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor) -> tuple[Tensor, Tensor]:
        a1 = torch.sigmoid(torch.nn.functional.linear(x, w1, b1))
        return a1, torch.sigmoid(torch.nn.functional.linear(a1, w2, b2))

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Tensor, ...], output: tuple[Tensor, Tensor]) -> None:
        ctx.save_for_backward(inputs[0], output[0], inputs[3], output[1])
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx: Any, _: Tensor | None, grad_a2: Tensor) -> tuple[Tensor | None, ...]:
        x, a1, w2, a2 = ctx.saved_tensors
        delta2 = torch.ops.aten.sigmoid_backward(grad_a2, a2)  # BP1
        delta1 = torch.ops.aten.sigmoid_backward(delta2 @ w2, a1)  # BP2
        return None, delta1.t() @ x, delta1.sum(0), delta2.t() @ a1, delta2.sum(0)  # BP4, BP3


class HalfSquaredError(Function):
    """C = ½ Σ ‖a − y‖² / n, whose backward is ∇ₐC = (a − y) / n."""

    @staticmethod
    def forward(a: Tensor, y: Tensor) -> Tensor:
        return (a - y).square().sum() / (2 * a.shape[0])

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Tensor, Tensor], output: Tensor) -> None:
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx: Any, grad_cost: Tensor) -> tuple[Tensor, None]:
        a, y = ctx.saved_tensors
        return grad_cost * (a - y) / a.shape[0], None


def steps(lr: float = 0.1) -> tuple[dict[str, list[Callable[[], Any]]], dict[str, torch.nn.Module]]:
    """Each contender's step as its phases (zero grads, forward, cost, backward, update), and its model."""
    case = CASES[1]
    torch.manual_seed(0)
    model = MLP(list(case.sizes), case.activation)
    native, hand = _native_twin(model), MLP(list(case.sizes), case.activation)
    hand.load_state_dict(model.state_dict())
    x, y = _batch(case, torch.device("cpu"))
    cost, rule = get_cost("quadratic"), create_rule("sgd", model.parameters(), lr=lr)
    native_rule = torch.optim.SGD(native.parameters(), lr=lr)
    params = list(hand.parameters())
    held: dict[str, Tensor] = {}

    def keep(name: str, value: Tensor) -> None:
        held[name] = value

    def hand_zero() -> None:
        for p in params:
            p.grad = None

    def hand_update() -> None:
        with torch.no_grad():
            torch._foreach_add_(params, [p.grad for p in params], alpha=-lr)

    contenders = {
        "native": [
            native_rule.zero_grad,
            lambda: keep("a", native(x)),
            lambda: keep("c", 0.5 * torch.nn.functional.mse_loss(held.pop("a"), y, reduction="sum") / len(x)),
            lambda: held.pop("c").backward(),
            native_rule.step,
        ],
        "torchbp": [
            rule.zero_grad,
            lambda: keep("a", model(x)),
            lambda: keep("c", cost(held.pop("a"), y)),
            lambda: held.pop("c").backward(),
            rule.step,
        ],
        "hand-specialised": [
            hand_zero,
            lambda: keep("a", plain_apply(TwoLayerSigmoid, (x, *params))[1]),
            lambda: keep("c", plain_apply(HalfSquaredError, (held.pop("a"), y))),
            lambda: held.pop("c").backward(),
            hand_update,
        ],
    }
    return contenders, {"native": native, "torchbp": model, "hand-specialised": hand}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000, help="steps per timing (default 2000)")
    parser.add_argument("--repeats", type=int, default=11, help="alternating timings per contender (default 11)")
    parser.add_argument("--threads", type=int, help="intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    contenders, _ = steps()
    phases = ["zero grads", "forward", "cost", "backward", "update"]
    whole: dict[str, list[float]] = {name: [] for name in contenders}
    split: dict[str, list[list[float]]] = {name: [[] for _ in phases] for name in contenders}
    for _ in range(args.repeats):
        for name, parts in contenders.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                for part in parts:
                    part()
            whole[name].append((time.perf_counter() - start) / args.steps * 1e6)
            for _ in range(args.steps // 4):
                for k, part in enumerate(parts):
                    began = time.perf_counter()
                    part()
                    split[name][k].append((time.perf_counter() - began) * 1e6)
    native = statistics.median(whole["native"])
    print(f"64-30-10 sigmoid, batch 10, {torch.get_num_threads()} thread(s); medians in µs per step")
    print(f"{'':18s}{'step':>8s}{'/native':>9s}" + "".join(f"{phase:>12s}" for phase in phases))
    for name in contenders:
        step = statistics.median(whole[name])
        cells = "".join(f"{statistics.median(times):12.1f}" for times in split[name])
        print(f"{name:18s}{step:8.1f}{step / native:9.2f}{cells}")


if __name__ == "__main__":
    main()
