"""The datasets ``torchbp train`` knows: digits (offline, the default), MNIST from IDX files, a CSV
file, and the synthetic ``xor``, ``moons`` and ``spirals``. Each gives float32 inputs ``(N, features)``
and integer class targets ``(N,)`` (or float targets ``(N, k)`` for a regression CSV).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from .idx import find_idx, read_idx

DATASETS = ("digits", "mnist", "csv", "xor", "moons", "spirals")


@dataclass(frozen=True)
class Data:
    """Inputs ``(N, features)``, targets ``(N,)`` class indices or ``(N, k)`` values, and a name."""

    name: str
    inputs: Tensor
    targets: Tensor

    @property
    def classes(self) -> int | None:
        """The number of classes, or ``None`` for float (regression) targets."""
        if self.targets.is_floating_point():
            return None
        return int(self.targets.max()) + 1

    @property
    def outputs(self) -> int:
        """How many outputs a model needs: the classes, or the target columns."""
        return self.classes if self.classes is not None else self.targets.shape[1]

    def split(self, val_fraction: float, seed: int) -> tuple[Data, Data]:
        """A seeded random split into (train, validation)."""
        if not 0 <= val_fraction < 1:
            raise ValueError(f"val_fraction: expected a value in [0, 1), got {val_fraction}")
        order = torch.randperm(len(self.inputs), generator=torch.Generator().manual_seed(seed))
        n_val = round(len(order) * val_fraction)
        val, train = order[:n_val], order[n_val:]
        return (
            Data(self.name, self.inputs[train], self.targets[train]),
            Data(self.name, self.inputs[val], self.targets[val]),
        )


def digits() -> Data:
    """scikit-learn's bundled 8×8 handwritten digits (1797 images, 10 classes), scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    inputs = torch.tensor(bunch.data, dtype=torch.float32) / 16.0
    return Data("digits", inputs, torch.tensor(bunch.target, dtype=torch.int64))


def mnist(data_dir: str | Path, split: str = "train") -> Data:
    """MNIST from the standard IDX files in ``data_dir`` (``train-…`` or ``t10k-…``), scaled to [0, 1]."""
    directory = Path(data_dir)
    if not directory.is_dir():
        raise FileNotFoundError(f"--data-dir: expected a directory holding the MNIST IDX files, got {directory}")
    prefix = {"train": "train", "test": "t10k"}[split]
    images = read_idx(find_idx(directory, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(find_idx(directory, f"{prefix}-labels-idx1-ubyte"))
    if images.dim() != 3 or labels.dim() != 1 or len(images) != len(labels):
        raise ValueError(
            f"{directory}: expected images (N, rows, cols) and labels (N,), got {tuple(images.shape)} "
            f"and {tuple(labels.shape)}"
        )
    return Data("mnist", images.reshape(len(images), -1).float() / 255.0, labels.long())


def csv_file(path: str | Path, target: str | None = None) -> Data:
    """A CSV file with a header row; ``target`` names the target column (default: the last).

    Integer or text targets become class indices (text labels sorted, then numbered);
    other numeric targets are regression values.
    """
    path = Path(path)
    with open(path, newline="") as file:
        rows = list(csv.reader(file))
    if len(rows) < 2:
        raise ValueError(f"{path}: expected a header row and at least one data row, got {len(rows)} rows")
    header, body = rows[0], rows[1:]
    column = header[-1] if target is None else target
    if column not in header:
        raise ValueError(f"--target: no column {column!r} in {path}; columns: {', '.join(header)}")
    index = header.index(column)
    try:
        inputs = torch.tensor([[float(v) for i, v in enumerate(row) if i != index] for row in body])
    except ValueError as error:
        raise ValueError(f"{path}: every column but the target must be numeric ({error})") from None
    labels = [row[index] for row in body]
    try:
        values = [float(v) for v in labels]
    except ValueError:
        names = sorted(set(labels))
        targets = torch.tensor([names.index(v) for v in labels])
    else:
        if all(v.is_integer() and v >= 0 for v in values):
            targets = torch.tensor([int(v) for v in values])
        else:
            targets = torch.tensor(values).unsqueeze(1)
    return Data(path.stem, inputs.float(), targets)


def xor(n: int = 800, seed: int = 0) -> Data:
    """Points in [−1, 1]², class 1 where the signs of the two coordinates differ (XOR)."""
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.rand(n, 2, generator=generator) * 2 - 1
    return Data("xor", inputs, ((inputs[:, 0] > 0) ^ (inputs[:, 1] > 0)).long())


def moons(n: int = 800, noise: float = 0.1, seed: int = 0) -> Data:
    """Two interleaving half circles with Gaussian noise."""
    generator = torch.Generator().manual_seed(seed)
    angle = torch.rand(n, generator=generator) * math.pi
    label = torch.arange(n) % 2
    upper = torch.stack([torch.cos(angle), torch.sin(angle)], 1)
    lower = torch.stack([1 - torch.cos(angle), 0.5 - torch.sin(angle)], 1)
    inputs = torch.where(label.unsqueeze(1) == 0, upper, lower)
    inputs = inputs + noise * torch.randn(n, 2, generator=generator)
    return Data("moons", inputs, label)


def spirals(n: int = 800, turns: float = 1.5, noise: float = 0.05, seed: int = 0) -> Data:
    """Two interleaved spirals, ``turns`` rounds each."""
    generator = torch.Generator().manual_seed(seed)
    t = torch.rand(n, generator=generator).sqrt() * turns * 2 * math.pi
    label = torch.arange(n) % 2
    radius = t / (turns * 2 * math.pi)
    angle = t + math.pi * label
    inputs = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], 1)
    return Data("spirals", inputs + noise * torch.randn(n, 2, generator=generator), label)


def load(
    name: str,
    data_dir: str | None = None,
    data_file: str | None = None,
    target: str | None = None,
    seed: int = 0,
) -> Data:
    """The dataset ``name`` (one of ``DATASETS``) with its options."""
    if name == "digits":
        return digits()
    if name == "mnist":
        if data_dir is None:
            raise ValueError(
                "--dataset mnist needs --data-dir DIR holding train-images-idx3-ubyte[.gz] "
                "and train-labels-idx1-ubyte[.gz]"
            )
        return mnist(data_dir)
    if name == "csv":
        if data_file is None:
            raise ValueError("--dataset csv needs --data-file FILE.csv (and --target COLUMN, default the last)")
        return csv_file(data_file, target)
    if name == "xor":
        return xor(seed=seed)
    if name == "moons":
        return moons(seed=seed)
    if name == "spirals":
        return spirals(seed=seed)
    raise ValueError(f"unknown dataset {name!r}; available: {', '.join(DATASETS)}")
