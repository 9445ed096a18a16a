"""Models back out of runs: ``load_model`` and the predictions of ``torchbp predict``."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .nn import MLP
from .nn.models import lenet
from .training.checkpoints import load_checkpoint
from .training.config import CONFIG
from .training.datasets import read_rows


def run_config(run_dir: str | Path) -> dict[str, Any]:
    """The settings a run recorded in its ``config.toml``."""
    path = Path(run_dir) / CONFIG
    try:
        with open(path, "rb") as file:
            return tomllib.load(file)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no {CONFIG} there; expected a run directory written by torchbp") from None
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{path}: cannot read it as TOML ({error})") from None


def _outputs(weights: dict[str, Tensor]) -> int:
    """The output width: the rows of the last layer's weight."""
    return int([tensor for key, tensor in weights.items() if key.endswith("weight")][-1].shape[0])


def _model_from_config(config: dict[str, Any], weights: dict[str, Tensor], run_dir: Path) -> torch.nn.Module:
    """The untrained model a ``torchbp train`` run's config describes."""
    kind = config.get("model")
    if kind == "mlp":
        return MLP(config["layers"], config.get("activation", "sigmoid"), config.get("output_activation") or None)
    if kind == "lenet":
        side = math.isqrt(int(config.get("inputs", 0)))
        if side < 4:
            raise ValueError(
                f"{run_dir / CONFIG}: a lenet run needs its input width (inputs = …), which runs of "
                f"torchbp train record; got {config.get('inputs')!r}"
            )
        return lenet(side, 1, _outputs(weights))
    raise ValueError(
        f"{run_dir / CONFIG}: it does not say which model was trained (model = mlp or lenet, as torchbp train "
        f"writes); for a run of torchbp.fit on your own module, pass one: load_model(run_dir, model=MyNet())"
    )


def load_model(run_dir: str | Path, model: torch.nn.Module | None = None) -> torch.nn.Module:
    """The trained model of a run, in eval mode, from its ``config.toml`` and last checkpoint.

    The checkpoint is read with ``torch.load(weights_only=True)``: nothing is unpickled but
    tensors and plain data. A run of ``torchbp train`` rebuilds its MLP or LeNet from the config;
    for a run of ``torchbp.fit`` on a module of your own, pass an instance as ``model`` and
    its weights are loaded into it.

    Args:
        run_dir: a run directory, ``runs/<name>/version_N``.
        model: the module to load the weights into; ``None`` builds the one the config names.

    Returns:
        The model, on the CPU, in eval mode, with the weights of the run's last checkpointed epoch.
    """
    run_dir = Path(run_dir)
    checkpoint = load_checkpoint(run_dir)
    weights = checkpoint["model"]
    if model is None:
        model = _model_from_config(run_config(run_dir), weights, run_dir)
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        raise ValueError(
            f"{run_dir}: the checkpoint's weights do not fit {type(model).__name__}: {str(error).splitlines()[0]}"
        ) from None
    return model.eval()


def read_inputs(path: str | Path, config: dict[str, Any]) -> Tensor:
    """The rows of a CSV file with a header row as a float tensor ``(N, inputs)``.

    A column named as the run's target (``config["target"]``) is left out; without one, a file
    with one column more than the model takes is read as training data, its last column the target.
    """
    path = Path(path)
    rows = read_rows(path)
    if len(rows) < 2:
        raise ValueError(f"{path}: expected a header row and at least one data row, got {len(rows)} rows")
    (_, header), body = rows[0], rows[1:]
    inputs = int(config.get("inputs", 0)) or len(header)
    keep = list(range(len(header)))
    if config.get("target") in header:
        keep.remove(header.index(config["target"]))
    elif len(header) == inputs + 1:
        keep.pop()
    if len(keep) != inputs:
        raise ValueError(f"{path}: the model takes {inputs} input columns, the file has {len(header)}")
    values = []
    for line, row in body:
        if len(row) != len(header):
            raise ValueError(f"{path}, line {line}: expected {len(header)} fields like the header, got {len(row)}")
        try:
            values.append([float(row[i]) for i in keep])
        except ValueError as error:
            raise ValueError(f"{path}, line {line}: every input column must be numeric ({error})") from None
    return torch.tensor(values)


@torch.no_grad()
def predictions(model: torch.nn.Module, inputs: Tensor, classes: bool, batch_size: int = 1024) -> Tensor:
    """The model's prediction per row: the class (argmax) ``(N,)``, or the output values ``(N, k)``."""
    outputs = torch.cat([model(batch) for batch in inputs.split(batch_size)]) if len(inputs) else inputs
    return outputs.argmax(-1) if classes else outputs


def predict_csv(run_dir: str | Path, data_file: str | Path) -> str:
    """``torchbp predict``: one prediction per data row of ``data_file``, as CSV text with a header."""
    config = run_config(run_dir)
    model = load_model(run_dir)
    classes = int(config.get("classes", 1)) > 0
    result = predictions(model, read_inputs(data_file, config), classes)
    if classes:
        return "prediction\n" + "".join(f"{int(c)}\n" for c in result)
    header = "prediction" if result.shape[1] == 1 else ",".join(f"prediction_{i}" for i in range(result.shape[1]))
    return header + "\n" + "".join(",".join(f"{v:.6g}" for v in row.tolist()) + "\n" for row in result)
