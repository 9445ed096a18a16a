"""Time one training step under each feedback rule against the backprop rule on the same model.

The scenario users live in: a torch.nn model converted with ``torchbp.nn.convert(model,
feedback=…)``, their own loss (``torch.nn.functional.cross_entropy``) and ``torch.optim.SGD``;
only the layers are torchbp's. Every round times each rule once, in turn (interleaved, so a
shared machine's load hits all alike); the figure is the median over rounds of each rule's time
divided by backprop's in the same round. ``--clock cpu`` times the process's own CPU time on one
thread (``time.process_time``): on a machine shared with other jobs, wall time mostly measures
them.

Where BioTorch (``pip install biotorch``; an optional extra, never a dependency) is importable,
its modes (``backpropagation``, ``fa``, ``dfa``, ``usf``, ``brsf``, ``frsf``; it has no
Kolen–Pollack) run on the same nets in the same rounds, ``biotorch.module.biomodule.BioModule``
around a copy of the torch.nn model, DFA through its ``model(x, targets, loss_function)`` call;
their ratios are to torchbp's ``backprop`` too.
Usage: python scripts/feedback_bench.py [--rounds 30] [--steps 20] [--models mlp,lenet] [--clock wall|cpu]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.util
import io
import platform
import statistics
import time
from collections.abc import Callable

import torch

import torchbp
from torchbp.nn.models import lenet

RULES = ["backprop", "fa", "dfa", "usf", "brsf", "frsf", "kolen_pollack"]
BIOTORCH_MODES = ["backpropagation", "fa", "dfa", "usf", "brsf", "frsf"]
Forward = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _models(name: str) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    if name == "mlp":
        model = torch.nn.Sequential(
            torch.nn.Linear(784, 256),
            torch.nn.ReLU(),
            torch.nn.Linear(256, 256),
            torch.nn.ReLU(),
            torch.nn.Linear(256, 10),
        )
        x = torch.randn(64, 784)
    else:
        torchbp.nn.revert(model := lenet(28, 1, 10))
        x = torch.randn(64, 784)  # lenet flattens its input first
    return model, x, torch.randint(0, 10, (64,))


def _torchbp(model: torch.nn.Module) -> Forward:
    return lambda x, y: model(x)


def _biotorch(native: torch.nn.Module, mode: str) -> tuple[torch.nn.Module, Forward]:
    from biotorch.module.biomodule import BioModule

    with contextlib.redirect_stdout(io.StringIO()):  # it prints a conversion report
        model = BioModule(copy.deepcopy(native), mode=mode, output_dim=10)
    if mode == "dfa":  # BioTorch's DFA needs the targets and the loss in its forward call
        return model, lambda x, y: model(x, y, torch.nn.functional.cross_entropy)
    return model, lambda x, y: model(x)


def _step_time(
    model: torch.nn.Module, forward: Forward, x: torch.Tensor, y: torch.Tensor, steps: int, clock=time.perf_counter
) -> float:
    rule = torch.optim.SGD(model.parameters(), lr=0.01)
    started = clock()
    for _ in range(steps):
        rule.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(forward(x, y), y).backward()
        rule.step()
    return (clock() - started) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--models", default="mlp,lenet")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    args = parser.parse_args()
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    if args.clock == "cpu":
        torch.set_num_threads(1)
    biotorch = importlib.util.find_spec("biotorch") is not None
    print(
        f"torch {torch.__version__}, torchbp {torchbp.__version__}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, {args.clock} clock; BioTorch installed: {biotorch}"
    )
    print("| model (batch 64) | rule | step (ms, median) | ÷ backprop (median of per-round ratios) |")
    print("|---|---|---|---|")
    for name in args.models.split(","):
        native, x, y = _models(name)
        contenders: dict[str, tuple[torch.nn.Module, Forward]] = {}
        for rule in RULES:
            model = torchbp.nn.convert(copy.deepcopy(native), feedback=rule, seed=0)
            contenders[f"`{rule}`"] = model, _torchbp(model)
        if biotorch:
            for mode in BIOTORCH_MODES:
                contenders[f"BioTorch `{mode}`"] = _biotorch(native, mode)
        for model, forward in contenders.values():
            _step_time(model, forward, x, y, 3)  # warm up (and draw a direct rule's convolution B)
        times: dict[str, list[float]] = {label: [] for label in contenders}
        for _ in range(args.rounds):
            for label, (model, forward) in contenders.items():
                times[label].append(_step_time(model, forward, x, y, args.steps, clock))
        for label in contenders:
            ratios = [t / b for t, b in zip(times[label], times["`backprop`"])]
            step = 1000 * statistics.median(times[label])
            print(f"| {name} | {label} | {step:.2f} | {statistics.median(ratios):.3f} |", flush=True)


if __name__ == "__main__":
    main()
