"""The textbook's worked example: a 3-2-1 sigmoid network without biases, E = ½(y − ŷ)².

One forward and one backward pass, computed three ways and printed side by side:
  hand     — the text's formulas, in its [in, out] convention (v_in = Wᵀx, W⁽⁰→¹⁾ is 3×2);
  torchbp  — torchbp.nn.MLP([3, 2, 1]) whose backward is the explicit δ-recursion;
  autograd — the same network in plain torch ops, differentiated by PyTorch.
All in float64; the script fails if any two disagree by more than 1e-12.

Sign conventions: the text's error term δ = (y − ŷ) f′(v_in) goes with ΔW = +η δ x;
torchbp's δ = ∂E/∂z = (ŷ − y) f′(z) goes with ΔW = −η ∂E/∂W. They are the same step.

Usage: python scripts/worked_example.py [--x 0.5,0.3,0.8] [--w01 "0.2,-0.4;0.6,0.1;-0.3,0.5"]
       [--w12 "0.7;-0.2"] [--y 1] [--lr 0.5] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import torch

import torchbp

TOLERANCE = 1e-12


def matrix(text: str) -> list[list[float]]:
    return [[float(v) for v in row.split(",")] for row in text.split(";")]


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--x", default="0.5,0.3,0.8", help="the 3 inputs")
    parser.add_argument("--w01", default="0.2,-0.4;0.6,0.1;-0.3,0.5", help="W⁽⁰→¹⁾, 3 rows of 2 ([in, out])")
    parser.add_argument("--w12", default="0.7;-0.2", help="W⁽¹→²⁾, 2 rows of 1 ([in, out])")
    parser.add_argument("--y", type=float, default=1.0, help="the target")
    parser.add_argument("--lr", type=float, default=0.5, help="the learning rate η")
    parser.add_argument("--json", help="also write every quantity to this JSON file")
    return parser.parse_args()


def f(v: float) -> float:
    return 1 / (1 + math.exp(-v))


def by_hand(x: list[float], w01: list[list[float]], w12: list[list[float]], y: float, lr: float) -> dict:
    """The text's formulas, one scalar at a time, in its [in, out] convention."""
    v1 = [sum(x[i] * w01[i][j] for i in range(3)) for j in range(2)]  # v_in⁽¹⁾ = W⁽⁰→¹⁾ᵀ x
    a1 = [f(v) for v in v1]
    v2 = sum(a1[j] * w12[j][0] for j in range(2))  # v_in⁽²⁾ = W⁽¹→²⁾ᵀ a⁽¹⁾
    y_hat = f(v2)
    error = 0.5 * (y - y_hat) ** 2
    delta2 = (y - y_hat) * y_hat * (1 - y_hat)  # δ⁽²⁾ = (y − ŷ) f′(v_in⁽²⁾)
    delta1 = [w12[j][0] * delta2 * a1[j] * (1 - a1[j]) for j in range(2)]  # (W⁽¹→²⁾ δ⁽²⁾) ⊙ f′(v_in⁽¹⁾)
    dw12 = [[lr * delta2 * a1[j]] for j in range(2)]  # ΔW⁽¹→²⁾ = η a⁽¹⁾ δ⁽²⁾ᵀ = −η ∂E/∂W
    dw01 = [[lr * x[i] * delta1[j] for j in range(2)] for i in range(3)]  # ΔW⁽⁰→¹⁾ = η x δ⁽¹⁾ᵀ
    return {
        "v_in1": v1,
        "a1": a1,
        "v_in2": [v2],
        "y_hat": [y_hat],
        "E": [error],
        "delta2": [delta2],
        "delta1": delta1,
        "dW12": dw12,
        "dW01": dw01,
    }


def by_torchbp(x: list[float], w01: list[list[float]], w12: list[list[float]], y: float, lr: float) -> dict:
    """torchbp's MLP: weight = Wᵀ ([out, in]); δ read from its backward through delta hooks."""
    model = torchbp.nn.MLP([3, 2, 1], activation="sigmoid", bias=False, dtype=torch.float64)
    with torch.no_grad():
        model.layers[0].weight.copy_(torch.tensor(w01, dtype=torch.float64).T)
        model.layers[1].weight.copy_(torch.tensor(w12, dtype=torch.float64).T)
    deltas = {}
    for name, layer in zip(("delta1", "delta2"), model.layers):
        layer.register_delta_hook(lambda _, delta, name=name: deltas.__setitem__(name, delta))
    inputs = torch.tensor([x], dtype=torch.float64)
    error = torchbp.get_cost("quadratic")(model(inputs), torch.tensor([[y]], dtype=torch.float64))
    error.backward()
    hidden, output = model.layers
    with torch.no_grad():
        v1 = torchbp.functional.linear(inputs, hidden.weight)
        a1 = torchbp.functional.sigmoid(v1)
        v2 = torchbp.functional.linear(a1, output.weight)
    return {
        "v_in1": v1[0].tolist(),
        "a1": a1[0].tolist(),
        "v_in2": v2[0].tolist(),
        "y_hat": model(inputs)[0].tolist(),
        "E": [error.item()],
        # the text's δ is from (y − ŷ): the negative of torchbp's ∂E/∂z
        "delta2": (-deltas["delta2"][0]).tolist(),
        "delta1": (-deltas["delta1"][0]).tolist(),
        "dW12": (-lr * output.weight.grad.T).tolist(),
        "dW01": (-lr * hidden.weight.grad.T).tolist(),
    }


def by_autograd(x: list[float], w01: list[list[float]], w12: list[list[float]], y: float, lr: float) -> dict:
    """The same network in plain torch ops, differentiated by PyTorch's autograd."""
    W01 = torch.tensor(w01, dtype=torch.float64, requires_grad=True)
    W12 = torch.tensor(w12, dtype=torch.float64, requires_grad=True)
    inputs = torch.tensor(x, dtype=torch.float64)
    v1 = W01.T @ inputs
    v1.retain_grad()
    a1 = torch.sigmoid(v1)
    v2 = W12.T @ a1
    v2.retain_grad()
    y_hat = torch.sigmoid(v2)
    error = 0.5 * (y - y_hat[0]) ** 2
    error.backward()
    return {
        "v_in1": v1.tolist(),
        "a1": a1.tolist(),
        "v_in2": v2.tolist(),
        "y_hat": y_hat.tolist(),
        "E": [error.item()],
        "delta2": (-v2.grad).tolist(),
        "delta1": (-v1.grad).tolist(),
        "dW12": (-lr * W12.grad).tolist(),
        "dW01": (-lr * W01.grad).tolist(),
    }


def flat(value: list) -> list[float]:
    return [v for row in value for v in (row if isinstance(row, list) else [row])]


def main() -> int:
    args = parse()
    x, w01, w12 = [float(v) for v in args.x.split(",")], matrix(args.w01), matrix(args.w12)
    if len(x) != 3 or [len(r) for r in w01] != [2, 2, 2] or [len(r) for r in w12] != [1, 1]:
        sys.exit("expected --x with 3 values, --w01 with 3 rows of 2, --w12 with 2 rows of 1")
    results = {
        "hand": by_hand(x, w01, w12, args.y, args.lr),
        "torchbp": by_torchbp(x, w01, w12, args.y, args.lr),
        "autograd": by_autograd(x, w01, w12, args.y, args.lr),
    }
    print(f"3-2-1 sigmoid network, no biases, E = ½(y − ŷ)²;  x = {x}, y = {args.y}, η = {args.lr}")
    print(f"{'quantity':<9} {'by hand':>22} {'torchbp':>22} {'autograd':>22}")
    worst = 0.0
    for key, hand in results["hand"].items():
        columns = [flat(hand)] + [flat(results[who][key]) for who in ("torchbp", "autograd")]
        for index, values in enumerate(zip(*columns)):
            label = key if index == 0 else ""
            print(f"{label:<9} " + " ".join(f"{v:>22.15f}" for v in values))
            worst = max(worst, max(values) - min(values))
    print(f"largest disagreement: {worst:.3g} (tolerance {TOLERANCE:g})")
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"inputs": vars(args), "results": results, "largest_disagreement": worst}, file, indent=2)
    return 0 if worst <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
