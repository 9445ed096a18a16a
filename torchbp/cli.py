"""The ``torchbp`` command: argument parsing only; the work lives in the library."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .plugins import PluginEntry
from .registry import list_costs, list_rules, rule_hyperparameters
from .specs import CostSpec, RuleSpec


def _options(entry: PluginEntry) -> str:
    spec = entry.spec
    if isinstance(spec, CostSpec):
        options = dict(spec.options)
    else:
        assert isinstance(spec, RuleSpec)
        options = rule_hyperparameters(spec)
    return ", ".join(f"{name}={value!r}" for name, value in options.items())


def _plugins(args: argparse.Namespace) -> int:
    entries = []
    if args.kind in (None, "cost"):
        entries += list_costs(args.pattern)
    if args.kind in (None, "rule"):
        entries += list_rules(args.pattern)
    rows = [
        (
            entry.kind,
            entry.name,
            entry.plugin,
            f"{entry.distribution} {entry.version or ''}".strip() if entry.distribution else "(run time)",
            _options(entry),
        )
        for entry in entries
    ]
    header = ("kind", "name", "plugin", "distribution", "options")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]

    def line(row: tuple[str, ...]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1]

    print(line(header).rstrip())
    for entry, row in zip(entries, rows):
        print(line(row).rstrip())
        if args.verbose:
            print(f"    {entry.description}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="torchbp", description="Explicit backpropagation in PyTorch: plugins, training, benchmarks."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    plugins = commands.add_parser(
        "plugins", help="list registered costs and update rules with their providers"
    )
    plugins.add_argument("--kind", choices=["cost", "rule"], help="only this kind")
    plugins.add_argument("--pattern", default="*", help="shell-style name filter, e.g. 'adam*'")
    plugins.add_argument("-v", "--verbose", action="store_true", help="also print each description")
    plugins.set_defaults(run=_plugins)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
