"""Draw the worked example's 3-2-1 network as an SVG: the inputs, the hidden and output units and
every weight on its edge, in the text's [in, out] convention (W⁽⁰→¹⁾[i][j] joins input i to hidden j).

Usage: python scripts/draw_network.py [--x 0.5,0.3,0.8] [--w01 "0.2,-0.4;0.6,0.1;-0.3,0.5"]
       [--w12 "0.7;-0.2"] [--out docs/images/network-3-2-1.svg]
The defaults are those of scripts/worked_example.py; the docs' image is this script's output.
"""

from __future__ import annotations

import argparse
from pathlib import Path

WIDTH, HEIGHT, RADIUS = 600, 330, 24
COLUMNS = {"input": 90, "hidden": 300, "output": 510}
ROWS = {"input": [75, 165, 255], "hidden": [120, 210], "output": [165]}


def matrix(text: str) -> list[list[float]]:
    return [[float(v) for v in row.split(",")] for row in text.split(";")]


def _text(x: float, y: float, content: str, size: int = 14, anchor: str = "middle", halo: bool = False) -> str:
    extra = ' stroke="#fff" stroke-width="5" paint-order="stroke"' if halo else ""
    return f'  <text x="{x:g}" y="{y:g}" font-size="{size}" text-anchor="{anchor}"{extra}>{content}</text>'


def _edges(source: str, target: str, weights: list[list[float]]) -> list[str]:
    lines, labels = [], []
    for i, y0 in enumerate(ROWS[source]):
        for j, y1 in enumerate(ROWS[target]):
            x0, x1 = COLUMNS[source] + RADIUS, COLUMNS[target] - RADIUS
            lines.append(f'  <line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y1}" stroke="#777" stroke-width="1.5"/>')
            t = 0.3  # the label sits near the edge's source, where the edges from one unit fan out
            labels.append(_text(x0 + t * (x1 - x0), y0 + t * (y1 - y0) + 4, f"{weights[i][j]:g}", 12, halo=True))
    return lines + labels


def _units(column: str, names: list[str]) -> list[str]:
    out = []
    for y, name in zip(ROWS[column], names):
        out.append(f'  <circle cx="{COLUMNS[column]}" cy="{y}" r="{RADIUS}" fill="#e8f0fb" stroke="#335"/>')
        out.append(_text(COLUMNS[column], y + 5, name, 15))
    return out


def svg(x: list[float], w01: list[list[float]], w12: list[list[float]]) -> str:
    """The diagram as SVG text: 3 inputs with their values, 2 sigmoid hidden units, 1 sigmoid output."""
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" fill="#111">',
        "  <title>The worked example's 3-2-1 sigmoid network, no biases</title>",
        *_edges("input", "hidden", w01),
        *_edges("hidden", "output", w12),
        *_units("input", ["x₁", "x₂", "x₃"]),
        *_units("hidden", ["a₁⁽¹⁾", "a₂⁽¹⁾"]),
        *_units("output", ["ŷ"]),
        *(_text(COLUMNS["input"] - RADIUS - 8, y + 5, f"{v:g}", 13, "end") for y, v in zip(ROWS["input"], x)),
        _text(COLUMNS["input"], 30, "inputs x", 14),
        _text(COLUMNS["hidden"], 30, "hidden: a⁽¹⁾ = f(W⁽⁰→¹⁾ᵀ x)", 14),
        _text(COLUMNS["output"], 30, "output: ŷ = f(W⁽¹→²⁾ᵀ a⁽¹⁾)", 14),
        _text((COLUMNS["input"] + COLUMNS["hidden"]) / 2, 305, "W⁽⁰→¹⁾ (3 × 2)", 13),
        _text((COLUMNS["hidden"] + COLUMNS["output"]) / 2, 305, "W⁽¹→²⁾ (2 × 1)", 13),
        _text(WIDTH / 2, HEIGHT - 4, "f = sigmoid, no biases, E = ½(y − ŷ)²", 12),
        "</svg>",
    ]
    return "\n".join(parts) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--x", default="0.5,0.3,0.8", help="the 3 inputs")
    parser.add_argument("--w01", default="0.2,-0.4;0.6,0.1;-0.3,0.5", help="W⁽⁰→¹⁾, 3 rows of 2 ([in, out])")
    parser.add_argument("--w12", default="0.7;-0.2", help="W⁽¹→²⁾, 2 rows of 1 ([in, out])")
    parser.add_argument("--out", default="docs/images/network-3-2-1.svg", help="where to write the SVG")
    args = parser.parse_args()
    Path(args.out).write_text(svg([float(v) for v in args.x.split(",")], matrix(args.w01), matrix(args.w12)))


if __name__ == "__main__":
    main()
