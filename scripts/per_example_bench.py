"""What per-example quantities cost on top of a plain backward pass.

``python scripts/per_example_bench.py [--rounds R] [--steps S] [--threads T] [--batch N]
[--clock wall|cpu] [--device cpu|cuda]``

A ``torch.nn`` 64-256-256-10 ReLU net converted with :func:`torchbp.nn.convert`, batch 64,
cross-entropy, one process. Each round times, in turn and from the same weights and batch:

- **baseline**: forward + loss + ``backward()`` outside any context (no optimiser step);
- **norm**: the same inside ``torchbp.per_example(model, "norm")``;
- **grad**: inside ``torchbp.per_example(model, "grad")``;
- **all four**: inside ``torchbp.per_example(model, "grad", "norm", "variance", "second_moment")``;
- **write floor**: the baseline step, then a ``fill_`` of every ``grad_sample`` tensor the contexts
  left: the per-example gradients' bytes written over with no arithmetic, a floor under "grad";

and, when they are installed (optional, never torchbp's dependencies), the same on the native model by
BackPACK's hooks (``BatchL2Grad``; all four: ``BatchGrad``, ``BatchL2Grad``, ``Variance``,
``SumGradSquared``) and Opacus (``GradSampleModule`` in hooks mode for ``grad_sample``; the norms by
ghost clipping's first backward pass, ``GradSampleModuleFastGradientClipping``). The figures are
medians of per-round ratios to the baseline of that round, so a machine shared with other work
moves both sides of each ratio together; ``--clock cpu`` times this process's CPU time only.
``--device cuda`` runs the torchbp contenders on the GPU (a timing waits for the device before it
stops the clock); the peers stay on the CPU there, so their rows are left out.
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time
import warnings
from collections.abc import Callable

import torch

import torchbp


def native_net() -> torch.nn.Sequential:
    """64-256-256-10 ReLU, ``torch.nn``."""
    return torch.nn.Sequential(
        torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10)
    )


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
"""``wall``: elapsed time; ``cpu``: this process's CPU time, which time given to other processes on
a shared machine does not inflate (with one thread, the two agree on an idle machine)."""


def timed(
    step: Callable[[], None], steps: int, clock: Callable[[], float] = time.perf_counter, device: str = "cpu"
) -> float:
    """Seconds per call of ``step``, over ``steps`` calls, by ``clock``; on CUDA the device's queued
    work is waited for before the clock starts and before it stops."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    sync()
    started = clock()
    for _ in range(steps):
        step()
    sync()
    return (clock() - started) / steps


def torchbp_steps(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, Callable[[], None]]:
    """The baseline, torchbp's per-example steps and the write floor; each context is made once and
    entered per step, as a training loop would (its ``grad_sample`` buffers are reused from step to
    step). The write floor fills the ``grad_sample`` tensors a "grad" step has left."""
    norm = torchbp.per_example(model, "norm")
    grad = torchbp.per_example(model, "grad")
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

    def write_floor() -> None:
        baseline()
        for p in model.parameters():
            sample = p.__dict__.get("grad_sample")
            if sample is not None:
                sample.fill_(0.0)

    return {
        "baseline": baseline,
        "torchbp norm": inside(norm),
        "torchbp grad": inside(grad),
        "torchbp all four": inside(everything),
        "write floor": write_floor,
    }


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
        from opacus.grad_sample import GradSampleModuleFastGradientClipping
    except ImportError:
        pass
    else:
        sampled = GradSampleModule(native_net())  # hooks mode, Opacus's default
        ghost = GradSampleModuleFastGradientClipping(native_net(), max_grad_norm=1.0, use_ghost_clipping=True)

        def opacus_step() -> None:
            sampled.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(sampled(x), y).backward()

        def ghost_step() -> None:
            # the first of ghost clipping's two backward passes: the per-example norms, no gradients written out
            ghost.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(ghost(x), y).backward()
            ghost.get_norm_sample()

        steps["Opacus grad (hooks)"] = opacus_step
        steps["Opacus norm (ghost)"] = ghost_step
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--steps", type=int, default=20, help="steps per timing")
    parser.add_argument(
        "--threads", type=int, default=torch.get_num_threads(), help="intra-op threads (default: torch's own default)"
    )
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall", help="wall time or this process's CPU time")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device} was asked for, but torch sees no CUDA device")
    if args.device != "cpu" and args.clock == "cpu":
        parser.error(
            "--clock cpu times this process's CPU time and not the device's: "
            f"expected --clock wall with --device {args.device}"
        )
    clock = CLOCKS[args.clock]
    torch.set_num_threads(args.threads)
    # Opacus's hooks on a first layer whose input needs no gradient: torch warns on every step
    warnings.filterwarnings("ignore", "Full backward hook is firing")
    torch.manual_seed(0)
    model = torchbp.nn.convert(copy.deepcopy(native_net())).to(args.device)
    x, y = torch.randn(args.batch, 64), torch.randint(0, 10, (args.batch,))
    steps = torchbp_steps(model, x.to(args.device), y.to(args.device))
    if args.device == "cpu":
        steps.update(peer_steps(x, y))
    for step in steps.values():  # warm up
        timed(step, args.steps, device=args.device)
    ratios: dict[str, list[float]] = {name: [] for name in steps if name != "baseline"}
    baselines: list[float] = []
    for _ in range(args.rounds):
        seconds = {name: timed(step, args.steps, clock, args.device) for name, step in steps.items()}
        baselines.append(seconds["baseline"])
        for name in ratios:
            ratios[name].append(seconds[name] / seconds["baseline"])
    print(
        f"torch {torch.__version__}, torchbp {torchbp.__version__}, {platform.processor() or platform.machine()}, "
        f"{args.device}, {args.threads} thread(s), batch {args.batch}, "
        f"{args.rounds} rounds × {args.steps} steps, {args.clock} clock"
    )
    print(f"baseline forward+loss+backward: median {statistics.median(baselines) * 1e6:.0f} µs")
    for name, values in ratios.items():
        quartiles = statistics.quantiles(values, n=4)
        print(f"{name:>20}: median {statistics.median(values):.2f}× (quartiles {quartiles[0]:.2f}–{quartiles[2]:.2f})")


if __name__ == "__main__":
    main()
