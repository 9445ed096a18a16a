"""Train digits with each feedback rule and print the accuracy table of docs/feedback.md.

Per model and rule: the final validation accuracy, mean ± spread (half the range) over seeds.
The MLP is Nielsen's 64-30-10 sigmoid network with the quadratic cost, SGD η = 3, batch 10;
the LeNet is `torchbp.nn.models.lenet(8)` with cross-entropy, SGD with Nesterov momentum 0.9 and
weight decay 1e-3, lr 0.01, batch 16 (`torchbp train --model lenet`'s defaults when the table was made).
Kolen–Pollack's B takes the run's lr and weight decay.
A run whose cost becomes infinite (``torchbp.training.DivergenceError``) counts as diverged: it is
left out of the mean and named in the row.
Usage: python scripts/feedback_table.py [--models mlp,lenet] [--seeds 0,1,2]
       [--mlp-epochs 30] [--lenet-epochs 40] [--rules backprop,fa,...] [--feedback-option K=V ...]
"""

from __future__ import annotations

import argparse
import time

import torch

import torchbp
from torchbp.nn.models import lenet
from torchbp.training import DivergenceError, load

RULES = ["backprop", "fa", "dfa", "usf", "brsf", "frsf", "kolen_pollack"]


def run(model_name: str, rule: str, seed: int, epochs: int, options: dict[str, float]) -> float | None:
    """The final validation accuracy of one run, or ``None`` where training diverged."""
    data = load("digits", seed=seed)
    train, val = data.split(0.2, seed)
    torch.manual_seed(seed)
    if model_name == "mlp":
        model: torch.nn.Module = torchbp.nn.MLP([64, 30, 10])
        settings = {"cost": "quadratic", "lr": 3.0, "batch_size": 10}
        rule_options: dict[str, float] = {}
    else:
        model = lenet(8, 1, 10)
        settings = {"cost": "cross_entropy", "lr": 0.01, "batch_size": 16}
        rule_options = {"momentum": 0.9, "nesterov": True, "weight_decay": 1e-3}
    feedback_options = dict(options) if rule != "backprop" else {}
    if rule == "kolen_pollack":
        feedback_options = {"lr": settings["lr"], "weight_decay": rule_options.get("weight_decay", 0.0), **options}
    try:
        history = torchbp.fit(
            model,
            (train.inputs, train.targets),
            val_data=(val.inputs, val.targets),
            epochs=epochs,
            seed=seed,
            verbose=False,
            feedback=rule,
            feedback_options=feedback_options,
            **settings,
            **rule_options,
        )
    except DivergenceError:
        return None
    return float(history[-1]["val_accuracy"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="mlp,lenet")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--rules", default=",".join(RULES))
    parser.add_argument("--mlp-epochs", type=int, default=30)
    parser.add_argument("--lenet-epochs", type=int, default=40)
    parser.add_argument(
        "--feedback-option",
        action="append",
        default=[],
        metavar="K=V",
        help="an option of each rule but backprop (which has none), e.g. scale=0.1",
    )
    args = parser.parse_args()
    options = {}
    for option in args.feedback_option:
        key, sep, value = option.partition("=")
        if not sep:
            parser.error(f"--feedback-option: expected K=V, got {option!r}")
        options[key] = float(value)
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"| model | rule | validation accuracy (%), mean ± spread over seeds {args.seeds} | vs backprop |")
    print("|---|---|---|---|")
    for model_name in args.models.split(","):
        epochs = args.mlp_epochs if model_name == "mlp" else args.lenet_epochs
        label = f"64-30-10 MLP, {epochs} epochs" if model_name == "mlp" else f"LeNet, {epochs} epochs"
        reference = None
        for rule in args.rules.split(","):
            started = time.perf_counter()
            results = [run(model_name, rule, seed, epochs, options) for seed in seeds]
            accuracies = [100 * a for a in results if a is not None]
            diverged = [seed for seed, a in zip(seeds, results) if a is None]
            seconds = time.perf_counter() - started
            note = f" (diverged: seed {', '.join(map(str, diverged))})" if diverged else ""
            if not accuracies:
                print(f"| {label} | `{rule}` | diverged on every seed | — |", flush=True)
                continue
            mean = sum(accuracies) / len(accuracies)
            spread = (max(accuracies) - min(accuracies)) / 2
            reference = mean if reference is None else reference
            print(f"| {label} | `{rule}` | {mean:.1f} ± {spread:.1f}{note} | {mean - reference:+.1f} |", flush=True)
            print(f"<!-- {model_name} {rule}: {[round(a, 2) for a in accuracies]} in {seconds:.0f} s -->", flush=True)


if __name__ == "__main__":
    main()
