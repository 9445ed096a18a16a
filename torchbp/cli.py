"""The ``torchbp`` command: argument parsing only; the work lives in the library."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .benchmark import END_TO_END, OPTIMIZERS
from .nn import MLP
from .nn.models import lenet
from .plugins import PluginEntry, PluginError
from .predict import predict_csv
from .registry import (
    cost_options,
    feedback_options,
    list_costs,
    list_feedback,
    list_layers,
    list_rules,
    rule_hyperparameters,
    rule_options,
)
from .specs import CostSpec, FeedbackSpec, LayerSpec, RuleSpec
from .training import DATASETS, fit, load
from .training.checkpoints import CheckpointError
from .training.config import CONFIG, DEFAULTS, MODEL_DEFAULTS, MODELS, load_config
from .training.divergence import DivergenceError
from .training.precision import PRECISIONS, autocast
from .training.schedules import SCHEDULES, named_schedule, schedule_options
from .training.signals import TrainingInterrupted


def _options(entry: PluginEntry) -> str:
    spec = entry.spec
    if isinstance(spec, LayerSpec):
        return f"replaces torch.nn.{spec.module.__name__}"
    if isinstance(spec, CostSpec):
        options = dict(spec.options)
    elif isinstance(spec, FeedbackSpec):
        options = feedback_options(spec)
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
    if args.kind in (None, "layer"):
        entries += list_layers(args.pattern)
    if args.kind in (None, "feedback"):
        entries += list_feedback(args.pattern)
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


_RECORDED_BY_FIT = ("rule_options", "cost_options", "feedback_options")  # fit writes these, parsed


def _option(text: str) -> tuple[str, str]:
    """``key=value``, the value kept as text: the cost or rule reads it by the option's declared type
    (``amsgrad=no`` → ``False``, ``betas=[0.9,0.99]`` → a pair) and refuses what does not parse."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value


def _layers(text: str) -> list[int]:
    try:
        layers = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated widths like 64,30,10, got {text!r}") from None
    if len(layers) < 2 or min(layers) < 1:
        raise argparse.ArgumentTypeError(f"expected at least two positive widths, got {text!r}")
    return layers


def _names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"expected comma-separated parts of case names like 784,lenet, got {text!r}")
    return names


def _optimizers(text: str) -> list[str]:
    keys = [key.strip().lower() for key in text.split(",")]
    unknown = [key for key in keys if key not in OPTIMIZERS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"expected some of {', '.join(OPTIMIZERS)} (comma-separated), got {', '.join(map(repr, unknown))}"
        )
    return keys


def resolve_config(args: argparse.Namespace) -> dict[str, Any]:
    """Defaults, then the ``--config`` file, then the options given on the command line."""
    if args.resume is not None:
        saved = Path(args.resume) / CONFIG
        if not saved.is_file():
            raise ValueError(f"--resume {args.resume}: no {CONFIG} there; expected a run directory from torchbp train")
        changed = [key for key in DEFAULTS if getattr(args, key, None) is not None and key not in ("epochs", "device")]
        if args.config is not None or changed:
            given = ", ".join(f"--{key.replace('_', '-')}" for key in changed) or "--config"
            raise ValueError(
                f"--resume continues a run with its saved settings; only --epochs and --device may change, got {given}"
            )
        config = {**DEFAULTS, **load_config(saved)}
        if args.epochs is not None:
            config["epochs"] = args.epochs
        return config
    from_file = load_config(args.config) if args.config is not None else {}
    model = args.model or from_file.get("model", DEFAULTS["model"])
    if model not in MODELS:
        raise ValueError(f"model: expected one of {', '.join(MODELS)}, got {model!r}")
    config = {**DEFAULTS, **MODEL_DEFAULTS[model], **from_file}
    for key in DEFAULTS:
        value = getattr(args, key, None)
        if value is not None:
            config[key] = {**config[key], **dict(value)} if key.endswith("_options") else value
    return config


def typed_options(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with its cost and rule options read by their declared types (``--rule-option
    amsgrad=no`` → ``False``), so that the run's ``config.toml`` records typed values; an unknown
    option, or a value that does not parse or is out of range, is an error naming it."""
    return {
        **config,
        "cost_options": cost_options(config["cost"], dict(config["cost_options"])),
        "rule_options": rule_options(config["rule"], dict(config["rule_options"])),
    }


def check_new_run(config: dict[str, Any]) -> None:
    """Refuse settings of a new run that would be ignored or fail later (a resumed run keeps what it
    was saved with, as earlier versions accepted it)."""
    if "lr" in config["rule_options"]:
        raise ValueError(
            f"rule option lr={config['rule_options']['lr']}: the learning rate is set with --lr (the lr key of a "
            "config file), not as a rule option"
        )
    if config["lr_schedule_options"] and not config["lr_schedule"]:
        given = ", ".join(f"{k}={v}" for k, v in config["lr_schedule_options"].items())
        raise ValueError(
            f"lr-schedule options ({given}) without a schedule: choose one with --lr-schedule ({', '.join(SCHEDULES)})"
        )


def _train(args: argparse.Namespace) -> int:
    try:
        config = resolve_config(args)
        if args.resume is None:
            check_new_run(config)
        config = typed_options(config)
        data = load(
            config["dataset"],
            config["data_dir"] or None,
            config["data_file"] or None,
            config["target"] or None,
            config["seed"],
        )
        train_data, val_data = data.split(config["val_fraction"], config["seed"])
        config["name"] = config["name"] or config["dataset"]
        torch.manual_seed(config["seed"])
        config["inputs"], config["classes"] = data.inputs.shape[1], data.classes or 0
        model = _model(config, data.inputs.shape[1], data.outputs)
        schedule = config["lr_schedule"]
        if schedule:  # recorded in config.toml by type, as fit records the rule's options
            config["lr_schedule_options"] = schedule_options(schedule, config["lr_schedule_options"])
        device = args.device or config["device"]
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        with autocast(config["precision"], device):
            fit(
                model,
                (train_data.inputs, train_data.targets),
                val_data=(val_data.inputs, val_data.targets) if len(val_data.inputs) else None,
                cost=config["cost"],
                cost_options=config["cost_options"],
                rule=config["rule"],
                lr=config["lr"],
                epochs=config["epochs"],
                batch_size=config["batch_size"],
                seed=config["seed"],
                device=device,
                logdir=None if args.no_log else config["logdir"],
                name=config["name"],
                resume=args.resume,
                feedback=config["feedback"],
                feedback_options=config["feedback_options"],
                alignment_every=config["alignment_every"],
                config={k: v for k, v in config.items() if k not in _RECORDED_BY_FIT},
                scheduler=named_schedule(schedule, config["lr_schedule_options"], config["epochs"])
                if schedule
                else None,
                patience=config["patience"] or None,
                monitor=config["monitor"],
                restore_best=config["restore_best"],
                **config["rule_options"],
            )
    except TrainingInterrupted as stop:
        command = f"torchbp train --resume {shlex.quote(str(stop.directory))}"
        print(f"torchbp train: {stop.describe(command)}", file=sys.stderr)
        return stop.exit_code
    except DivergenceError as error:
        print(f"torchbp train: error: {error}", file=sys.stderr)
        return 1
    except (ValueError, TypeError, OSError, CheckpointError, PluginError) as error:
        print(f"torchbp train: error: {error}", file=sys.stderr)
        return 2
    return 0


def _predict(args: argparse.Namespace) -> int:
    try:
        text = predict_csv(args.run_dir, args.data_file)
    except (ValueError, TypeError, OSError, CheckpointError) as error:
        print(f"torchbp predict: error: {error}", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    return 0


def _model(config: dict[str, Any], features: int, outputs: int) -> torch.nn.Module:
    """The model the config names, shaped for data of ``features`` inputs and ``outputs`` outputs."""
    if config["model"] == "lenet":
        for key in ("layers", "activation", "output_activation"):
            if config.pop(key) != DEFAULTS[key]:  # not recorded for a lenet run: they do not apply
                option = "--" + key.replace("_", "-")
                raise ValueError(f"{option}: sets the MLP of --model mlp; lenet's layers and activations are fixed")
        side = round(features**0.5)
        if side * side != features or side < 4:
            raise ValueError(
                f"--model lenet: needs square one-channel images of at least 4×4 pixels, but the "
                f"{config['dataset']} data has {features} inputs per example"
            )
        return lenet(side, 1, outputs)
    layers = config["layers"] or [features, 30, outputs]
    if layers[0] != features or layers[-1] != outputs:
        raise ValueError(
            f"--layers: the {config['dataset']} data needs {features} inputs and {outputs} outputs, "
            f"got {','.join(map(str, layers))}"
        )
    config["layers"] = layers
    return MLP(layers, config["activation"], config["output_activation"] or None)


def _bench(args: argparse.Namespace) -> int:
    from .benchmark import benchmark, format_report, write_json

    try:
        report = benchmark(
            args.device,
            args.repeats,
            args.quick,
            not args.no_end_to_end,
            cases=args.cases,
            optimizers=args.optimizers,
            compile=args.compile,
        )
    except ValueError as error:
        print(f"torchbp bench: error: {error}", file=sys.stderr)
        return 2
    print(format_report(report))
    if args.json:
        write_json(report, args.json)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="torchbp", description="Explicit backpropagation in PyTorch: plugins, training, benchmarks."
    )
    parser.add_argument("--version", action="version", version=f"torchbp {__version__} (torch {torch.__version__})")
    commands = parser.add_subparsers(dest="command", required=True)
    plugins = commands.add_parser(
        "plugins", help="list registered costs, update rules, layers and feedback rules with their providers"
    )
    plugins.add_argument("--kind", choices=["cost", "rule", "layer", "feedback"], help="only this kind")
    plugins.add_argument("--pattern", default="*", help="shell-style name filter, e.g. 'adam*'")
    plugins.add_argument("-v", "--verbose", action="store_true", help="also print each description")
    plugins.set_defaults(run=_plugins)

    train = commands.add_parser(
        "train",
        help="train an MLP or a LeNet and log it to TensorBoard",
        description="Train an MLP or a LeNet; with no options: 64-30-10 sigmoid, quadratic cost, SGD η=3 on digits.",
    )
    train.add_argument("--config", help="a TOML file of settings (the keys of a run's config.toml)")
    train.add_argument(
        "--model",
        choices=MODELS,
        help="mlp (default: --layers, --activation) or lenet (a LeNet-5 CNN; defaults: cross_entropy, SGD "
        "with Nesterov momentum 0.9 and weight decay 1e-3, lr 0.005, batch 16, 60 epochs)",
    )
    train.add_argument("--dataset", choices=DATASETS, help="default: digits")
    train.add_argument("--data-dir", help="mnist: the directory of its IDX files")
    train.add_argument("--data-file", help="csv: the file")
    train.add_argument("--target", help="csv: the target column (default: the last)")
    train.add_argument("--val-fraction", type=float, help="share held out for validation (default 0.2)")
    train.add_argument("--layers", type=_layers, help="widths, e.g. 64,30,10 (default: inputs,30,outputs)")
    train.add_argument("--activation", help="hidden activation (default sigmoid)")
    train.add_argument("--output-activation", help="output activation (default: the hidden one)")
    train.add_argument("--cost", help="a registered cost (default quadratic; see torchbp plugins)")
    train.add_argument("--cost-option", dest="cost_options", type=_option, action="append", metavar="KEY=VALUE")
    train.add_argument("--rule", help="a registered update rule (default sgd)")
    train.add_argument("--rule-option", dest="rule_options", type=_option, action="append", metavar="KEY=VALUE")
    train.add_argument(
        "--feedback", help="how δ travels down: a registered feedback rule (default backprop; fa, dfa, usf, …)"
    )
    train.add_argument("--feedback-option", dest="feedback_options", type=_option, action="append", metavar="KEY=VALUE")
    train.add_argument(
        "--alignment-every", type=int, help="log the angle to the backprop gradient every K steps (default 100)"
    )
    train.add_argument("--lr", type=float, help="learning rate (default 3.0)")
    train.add_argument("--epochs", type=int, help="default 30")
    train.add_argument("--batch-size", type=int, help="default 10")
    train.add_argument("--seed", type=int, help="default 0")
    train.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default auto")
    train.add_argument("--logdir", help="where run directories go (default runs)")
    train.add_argument("--name", help="the run's name (default: the dataset)")
    train.add_argument("--no-log", action="store_true", help="write no run directory")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint")
    train.add_argument(
        "--lr-schedule",
        choices=list(SCHEDULES),
        help="; ".join(f"{name}: {what}" for name, (_, what, _) in SCHEDULES.items()) + " (default: none)",
    )
    train.add_argument(
        "--lr-schedule-option",
        dest="lr_schedule_options",
        type=_option,
        action="append",
        metavar="KEY=VALUE",
        help="e.g. step_size=10, gamma=0.5, T_max=30, factor=0.5, patience=3",
    )
    train.add_argument("--patience", type=int, help="stop after this many epochs without a better --monitor value")
    train.add_argument("--monitor", choices=["val_loss", "val_accuracy", "train_loss"], help="default val_loss")
    train.add_argument(
        "--restore-best", action="store_true", default=None, help="with --patience: end with the best epoch's weights"
    )
    train.add_argument("--precision", choices=PRECISIONS, help="bfloat16, float16: train under autocast")
    train.set_defaults(run=_train)

    predict = commands.add_parser(
        "predict",
        help="print a trained run's prediction for each row of a CSV file",
        description="Load RUN_DIR's model (config.toml and checkpoint.pt) and print one predicted class (or value) "
        "per data row of the CSV file, as CSV.",
    )
    predict.add_argument("run_dir", metavar="RUN_DIR", help="a run directory of torchbp train")
    predict.add_argument(
        "--data-file", required=True, help="CSV with a header row: the input columns (a target column is ignored)"
    )
    predict.set_defaults(run=_predict)

    bench = commands.add_parser(
        "bench",
        help="time torchbp against torch.nn + torch.optim and NumPy",
        description="Time torchbp against native PyTorch, contenders alternating in one process. First table: "
        "layers only (the model's layers converted, or torchbp.nn.MLP, with the user's own CrossEntropyLoss and "
        "torch.optim, eager and under torch.compile); then the full torchbp stack and the graph-free step; then "
        "the 30-epoch digits run end to end.",
    )
    bench.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    bench.add_argument("--repeats", type=int, default=10, help="alternating timings per contender (default 10)")
    bench.add_argument("--quick", action="store_true", help="tiny cases only (a smoke test)")
    bench.add_argument(
        "--cases",
        type=_names,
        metavar="PART[,PART…]",
        help="only the cases whose name contains one of these parts (any case, any table, e.g. '784,lenet'; "
        f"'{END_TO_END}' for the digits run); default: every case",
    )
    bench.add_argument(
        "--optimizers",
        type=_optimizers,
        default=list(OPTIMIZERS),
        metavar="NAME[,NAME…]",
        help=f"the layers-only table's torch.optim optimisers, some of {', '.join(OPTIMIZERS)} (default: all: "
        + "; ".join(f"{key} = {label}" for key, (label, _) in OPTIMIZERS.items())
        + ")",
    )
    compile_choice = bench.add_mutually_exclusive_group()
    compile_choice.add_argument(
        "--no-compile",
        dest="compile",
        action="store_const",
        const="none",
        default="default",
        help="no torch.compile rows (by default the MLP cases get them; the CNNs and the transformer do not, their "
        "compile warm-up being long on a small CPU)",
    )
    compile_choice.add_argument(
        "--compile-all", dest="compile", action="store_const", const="all", help="torch.compile rows for every case"
    )
    bench.add_argument("--no-end-to-end", action="store_true", help="skip the 30-epoch digits comparison")
    bench.add_argument("--json", help="also write the report as JSON to this file")
    bench.set_defaults(run=_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code = args.run(args)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # one of several torchrun processes, its work done and its files closed: it leaves without
        # the interpreter's teardown, where gloo's threads now and then abort the process (SIGABRT,
        # "terminate called without an active exception") and torchrun reports the run as failed
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
