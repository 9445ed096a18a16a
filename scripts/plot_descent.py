"""Draw gradient descent: contour maps with descent paths, and the univariate picture.

Contours of a 2-D function (a bowl, Rosenbrock's valley, a function with two minima) with the
paths of one or several update rules from two starting points, side by side; and f(x) of one
variable with its tangent f(x) + ε f′(x) and the steps x′ = x − η f′(x). Needs matplotlib
(``pip install 'torchbp[plot]'``).

Usage: python scripts/plot_descent.py [--function bowl|rosenbrock|two_minima] [--rules sgd,adam]
       [--lr 0.1] [--steps 60] [--out descent.png] [--logdir runs]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from torchbp.descent import bowl, minimize, rosenbrock, two_minima

FUNCTIONS = {
    "bowl": (bowl, [(-2.5, 1.2), (2.0, -1.3)], (-3, 3, -2, 2)),
    "rosenbrock": (rosenbrock, [(-1.5, 2.0), (1.8, -0.5)], (-2, 2.2, -1, 3)),
    "two_minima": (two_minima, [(-0.3, 1.5), (0.3, -1.5)], (-2, 2, -2, 2)),
}


def contours(name: str, rules: list[str], lr: float, steps: int) -> plt.Figure:
    f, starts, (x_lo, x_hi, y_lo, y_hi) = FUNCTIONS[name]
    xs, ys = torch.meshgrid(torch.linspace(x_lo, x_hi, 200), torch.linspace(y_lo, y_hi, 200), indexing="xy")
    zs = torch.stack([f(p) for p in torch.stack([xs.flatten(), ys.flatten()], 1)]).reshape(xs.shape)
    figure, axes = plt.subplots(1, len(rules), figsize=(5 * len(rules), 4.2), squeeze=False)
    for ax, rule in zip(axes[0], rules):
        levels = torch.quantile(zs.flatten(), torch.linspace(0.0, 0.95, 25)).unique()
        ax.contour(xs, ys, zs, levels=levels.tolist(), cmap="viridis", linewidths=0.7)
        for start, colour in zip(starts, ("tab:red", "tab:orange")):
            path = minimize(f, list(start), rule=rule, lr=lr, steps=steps)
            points = path.points
            ax.plot(
                points[:, 0],
                points[:, 1],
                "o-",
                color=colour,
                markersize=2.5,
                linewidth=1,
                label=f"from {start}: f = {path.values[-1]:.3g}",
            )
        ax.set_title(f"{name}, {rule} (η = {lr}, {steps} steps)")
        ax.set_xlim(x_lo, x_hi)
        ax.set_ylim(y_lo, y_hi)
        ax.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    return figure


def univariate(lr: float, steps: int) -> plt.Figure:
    """f(x) = (x − 1)² + 0.5, its tangent at the start, and the steps of x′ = x − η f′(x)."""

    def f(x: torch.Tensor) -> torch.Tensor:
        return (x - 1) ** 2 + 0.5

    path = minimize(f, -1.5, lr=lr, steps=steps)
    xs = torch.linspace(-2.0, 3.0, 200)
    figure, ax = plt.subplots(figsize=(6, 4.2))
    ax.plot(xs, f(xs), color="tab:blue", label="f(x) = (x − 1)² + 0.5")
    x0 = path.points[0]
    slope = 2 * (x0 - 1)
    eps = torch.linspace(-0.8, 1.5, 20)
    ax.plot(x0 + eps, f(x0) + eps * slope, "--", color="tab:gray", label="f(x₀) + ε f′(x₀)")
    ax.plot(path.points, path.values, "o-", color="tab:red", markersize=4, label=f"x′ = x − η f′(x), η = {lr}")
    ax.set_xlabel("x")
    ax.set_ylabel("f(x)")
    ax.legend()
    figure.tight_layout()
    return figure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--function", choices=sorted(FUNCTIONS), default="two_minima")
    parser.add_argument("--rules", default="sgd", help="comma-separated registered update rules")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--out", default="descent.png", help="the contour figure; the univariate one goes beside it")
    parser.add_argument("--logdir", help="also log both figures to TensorBoard under this directory")
    args = parser.parse_args()

    out = Path(args.out)
    figures = {
        "descent/contours": contours(args.function, args.rules.split(","), args.lr, args.steps),
        "descent/univariate": univariate(0.3, 8),
    }
    figures["descent/contours"].savefig(out, dpi=110)
    figures["descent/univariate"].savefig(out.with_name(f"{out.stem}-univariate{out.suffix}"), dpi=110)
    if args.logdir:
        from torch.utils.tensorboard import SummaryWriter

        with SummaryWriter(args.logdir) as writer:
            for tag, figure in figures.items():
                writer.add_figure(tag, figure)
    print(f"wrote {out} and {out.with_name(f'{out.stem}-univariate{out.suffix}')}")


if __name__ == "__main__":
    main()
