"""Train digits with each feedback rule and print the accuracy table of docs/feedback.md.

Per model and rule: the final validation accuracy, mean ± spread (half the range) over seeds.
The MLP is Nielsen's 64-30-10 sigmoid network with the quadratic cost, SGD η = 3, batch 10;
the LeNet is `torchbp train --model lenet`'s (cross-entropy, SGD with Nesterov momentum 0.9 and
weight decay 1e-3, lr 0.01, batch 16). Kolen–Pollack's B takes the run's lr and weight decay.
Usage: python scripts/feedback_table.py [--models mlp,lenet] [--seeds 0,1,2]
       [--mlp-epochs 30] [--lenet-epochs 40] [--rules backprop,fa,...]
"""

from __future__ import annotations

import argparse
import time

import torch

import torchbp
from torchbp.nn.models import lenet
from torchbp.training import load

RULES = ["backprop", "fa", "dfa", "usf", "brsf", "frsf", "kolen_pollack"]


def run(model_name: str, rule: str, seed: int, epochs: int) -> float:
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
    feedback_options = {}
    if rule == "kolen_pollack":
        feedback_options = {"lr": settings["lr"], "weight_decay": rule_options.get("weight_decay", 0.0)}
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
    return history[-1]["val_accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="mlp,lenet")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--rules", default=",".join(RULES))
    parser.add_argument("--mlp-epochs", type=int, default=30)
    parser.add_argument("--lenet-epochs", type=int, default=40)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"| model | rule | validation accuracy (%), mean ± spread over seeds {args.seeds} | vs backprop |")
    print("|---|---|---|---|")
    for model_name in args.models.split(","):
        epochs = args.mlp_epochs if model_name == "mlp" else args.lenet_epochs
        label = f"64-30-10 MLP, {epochs} epochs" if model_name == "mlp" else f"LeNet, {epochs} epochs"
        reference = None
        for rule in args.rules.split(","):
            started = time.perf_counter()
            accuracies = [100 * run(model_name, rule, seed, epochs) for seed in seeds]
            mean = sum(accuracies) / len(accuracies)
            spread = (max(accuracies) - min(accuracies)) / 2
            reference = mean if reference is None else reference
            seconds = time.perf_counter() - started
            print(f"| {label} | `{rule}` | {mean:.1f} ± {spread:.1f} | {mean - reference:+.1f} |", flush=True)
            print(f"<!-- {model_name} {rule}: {[round(a, 2) for a in accuracies]} in {seconds:.0f} s -->", flush=True)


if __name__ == "__main__":
    main()
