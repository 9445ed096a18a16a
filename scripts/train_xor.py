"""Train a 2-4-1 sigmoid network on XOR with torchbp and print its falling loss.

The drop-in loop: rule.zero_grad(); cost(model(x), y).backward(); rule.step().
Usage: python scripts/train_xor.py [--steps 2000] [--lr 2.0] [--seed 0]
"""

from __future__ import annotations

import argparse

import torch

import torchbp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--lr", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    x = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    y = torch.tensor([[0.0], [1.0], [1.0], [0.0]])
    model = torchbp.nn.MLP([2, 4, 1], activation="sigmoid")
    cost = torchbp.get_cost("quadratic")
    rule = torchbp.create_rule("sgd", model, lr=args.lr, momentum=0.9)
    for step in range(args.steps + 1):
        rule.zero_grad()
        loss = cost(model(x), y)
        loss.backward()
        rule.step()
        if step % (args.steps // 10) == 0:
            print(f"step {step:5d}  quadratic cost {loss.item():.6f}")
    with torch.no_grad():
        outputs = model(x)
    for inputs, output, target in zip(x.tolist(), outputs[:, 0].tolist(), y[:, 0].tolist()):
        print(f"XOR{tuple(int(v) for v in inputs)} = {output:.3f}  (target {int(target)})")


if __name__ == "__main__":
    main()
