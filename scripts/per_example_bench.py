"""What per-example quantities cost on top of a plain backward pass.

``python scripts/per_example_bench.py [--rounds R] [--steps S] [--threads T] [--batch N]``

A ``torch.nn`` 64-256-256-10 ReLU net converted with :func:`torchbp.nn.convert`, batch 64,
cross-entropy, one process. Each round times, in turn and from the same weights and batch:

- **baseline**: forward + loss + ``backward()`` outside any context (no optimiser step);
- **norm**: the same inside ``torchbp.per_example(model, "norm")``;
- **all four**: inside ``torchbp.per_example(model, "grad", "norm", "variance", "second_moment")``;

and, when they are installed (optional, never torchbp's dependencies), the same four quantities by
BackPACK's hooks and Opacus's ``GradSampleModule`` on the native model. The figures are medians of
per-round ratios to the baseline of that round, so a machine shared with other work moves both
sides of each ratio together.
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time
from collections.abc import Callable

import torch

import torchbp


def native_net() -> torch.nn.Sequential:
    """64-256-256-10 ReLU, ``torch.nn``."""
    return torch.nn.Sequential(
        torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10)
    )


def timed(step: Callable[[], None], steps: int) -> float:
    """Seconds per call of ``step``, over ``steps`` calls."""
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - started) / steps


def torchbp_steps(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, Callable[[], None]]:
    """The baseline and torchbp's per-example steps; each context is made once and entered per step,
    as a training loop would (its ``grad_sample`` buffers are reused from step to step)."""
    norm = torchbp.per_example(model, "norm")
    everything = torchbp.per_example(model, "grad", "norm", "variance", "second_moment")

    def baseline() -> None:
        model.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()

    def inside(context: torchbp.PerExample) -> Callable[[], None]:
        def step() -> None:
            model.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(x), y)
            with context:
                loss.backward()

        return step

    return {"baseline": baseline, "torchbp norm": inside(norm), "torchbp all four": inside(everything)}


def peer_steps(x: torch.Tensor, y: torch.Tensor) -> dict[str, Callable[[], None]]:
    """BackPACK's and Opacus's hook modes on the native net, where installed."""
    steps: dict[str, Callable[[], None]] = {}
    try:
        from backpack import backpack, extend, extensions
    except ImportError:
        pass
    else:
        net, loss = extend(native_net()), extend(torch.nn.CrossEntropyLoss())

        def backpack_step(quantities: tuple[object, ...]) -> Callable[[], None]:
            def step() -> None:
                net.zero_grad(set_to_none=True)
                with backpack(*quantities):
                    loss(net(x), y).backward()

            return step

        steps["BackPACK norm"] = backpack_step((extensions.BatchL2Grad(),))
        steps["BackPACK all four"] = backpack_step(
            (extensions.BatchGrad(), extensions.BatchL2Grad(), extensions.Variance(), extensions.SumGradSquared())
        )
    try:
        from opacus import GradSampleModule
    except ImportError:
        pass
    else:
        sampled = GradSampleModule(native_net())

        def opacus_step() -> None:
            sampled.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(sampled(x), y).backward()

        steps["Opacus grad_sample"] = opacus_step
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--steps", type=int, default=20, help="steps per timing")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = torchbp.nn.convert(copy.deepcopy(native_net()))
    x, y = torch.randn(args.batch, 64), torch.randint(0, 10, (args.batch,))
    steps = {**torchbp_steps(model, x, y), **peer_steps(x, y)}
    for step in steps.values():  # warm up
        timed(step, args.steps)
    ratios: dict[str, list[float]] = {name: [] for name in steps if name != "baseline"}
    baselines: list[float] = []
    for _ in range(args.rounds):
        seconds = {name: timed(step, args.steps) for name, step in steps.items()}
        baselines.append(seconds["baseline"])
        for name in ratios:
            ratios[name].append(seconds[name] / seconds["baseline"])
    print(
        f"torch {torch.__version__}, torchbp {torchbp.__version__}, {platform.processor() or platform.machine()}, "
        f"{args.threads} thread(s), batch {args.batch}, {args.rounds} rounds × {args.steps} steps"
    )
    print(f"baseline forward+loss+backward: median {statistics.median(baselines) * 1e6:.0f} µs")
    for name, values in ratios.items():
        quartiles = statistics.quantiles(values, n=4)
        print(f"{name:>20}: median {statistics.median(values):.2f}× (quartiles {quartiles[0]:.2f}–{quartiles[2]:.2f})")


if __name__ == "__main__":
    main()
