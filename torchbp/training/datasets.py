"""The datasets ``torchbp train`` knows: digits (offline, the default), MNIST from IDX files, a CSV
file, and the synthetic ``xor``, ``moons`` and ``spirals``. Each gives float32 inputs ``(N, features)``
and integer class targets ``(N,)`` (or float targets ``(N, k)`` for a regression CSV).
"""

from __future__ import annotations

import csv
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from .idx import find_idx, read_idx
from .validate import check_finite

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
    images_file = find_idx(directory, f"{prefix}-images-idx3-ubyte")
    labels_file = find_idx(directory, f"{prefix}-labels-idx1-ubyte")
    images, labels = read_idx(images_file), read_idx(labels_file)
    if images.dim() != 3 or labels.dim() != 1 or len(images) != len(labels):
        raise ValueError(
            f"{directory}: expected images (N, rows, cols) and labels (N,), got {tuple(images.shape)} "
            f"and {tuple(labels.shape)}"
        )
    if images.is_floating_point():
        check_finite(str(images_file), images)
    return Data("mnist", images.reshape(len(images), -1).float() / 255.0, class_indices(labels, str(labels_file)))


def read_rows(path: Path) -> list[tuple[int, list[str]]]:
    """The CSV file's non-blank rows with their line numbers (blank lines, trailing ones too, are skipped)."""
    if path.is_dir():
        raise IsADirectoryError(f"--data-file: expected a CSV file, got the directory {path}")
    if not path.exists():
        raise FileNotFoundError(f"--data-file: no file {path}")
    try:
        with open(path, newline="") as file:
            reader = csv.reader(file)
            return [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not a text CSV file ({error.reason} at byte {error.start})") from None
    except csv.Error as error:
        raise ValueError(f"{path}: not a readable CSV file ({error})") from None


def _number(path: Path, line: int, column: str, text: str) -> float:
    """One CSV field as a finite number, or an error naming the line and the column."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(
            f"{path}, line {line}, column {column!r}: expected a number "
            f"(every column but the target must be numeric), got {text!r}"
        ) from None
    if not math.isfinite(value):
        raise ValueError(
            f"{path}, line {line}, column {column!r}: expected a finite number, got {text!r}; "
            "clean or impute the data before training"
        )
    return value


def class_indices(labels: list[int] | Tensor, source: str) -> Tensor:
    """Integer class labels as indices into the network's outputs, with a warning when they are not 0…K−1.

    Labels 0…K−1 are used as they are. Non-negative labels with gaps (1…10, 0…9 with a stray 200)
    are used as they are too — the network gets max + 1 outputs — and the warning says which
    outputs no example has. Negative labels (−1/1) cannot be indices: they are numbered 0…K−1 in
    sorted order, and the warning says how.
    """
    labels = torch.as_tensor(labels, dtype=torch.int64)
    found, counts = torch.unique(labels, return_counts=True)
    if len(found) == 0 or torch.equal(found, torch.arange(len(found))):
        return labels
    shown = ", ".join(f"{int(v)} ({int(c)}×)" for v, c in zip(found[:12], counts[:12]))
    shown += f", … {len(found) - 12} more" if len(found) > 12 else ""
    what = f"{source}: class labels are not 0…K−1: found {len(found)} distinct labels {shown}; "
    if int(found[0]) < 0:
        mapping = ", ".join(f"{int(v)}→{i}" for i, v in enumerate(found[:12].tolist()))
        warnings.warn(
            what + f"using them as classes 0…{len(found) - 1} in sorted order ({mapping}"
            f"{', …' if len(found) > 12 else ''}), so the network gets {len(found)} outputs",
            UserWarning,
            stacklevel=3,
        )
        return torch.searchsorted(found, labels)
    outputs = int(found[-1]) + 1
    warnings.warn(
        what + f"using them as they are, so the network gets {outputs} outputs, {outputs - len(found)} of them "
        "for labels no example has (renumber the labels 0…K−1 if that is not meant)",
        UserWarning,
        stacklevel=3,
    )
    return labels


def csv_file(path: str | Path, target: str | None = None) -> Data:
    """A CSV file with a header row; ``target`` names the target column (default: the last).

    Integer or text targets become class indices (text labels sorted, then numbered; integers
    as ``class_indices`` says); other numeric targets are regression values. Blank lines are
    skipped; a row with another number of fields than the header, a field that is not a number,
    NaN or ±inf are errors naming the line and the column.
    """
    path = Path(path)
    rows = read_rows(path)
    if len(rows) < 2:
        raise ValueError(f"{path}: expected a header row and at least one data row, got {len(rows)} rows")
    (_, header), body = rows[0], rows[1:]
    for line, row in body:
        if len(row) != len(header):
            raise ValueError(
                f"{path}, line {line}: expected {len(header)} fields (as the header: {', '.join(header)}), "
                f"got {len(row)}"
            )
    column = header[-1] if target is None else target
    if column not in header:
        raise ValueError(f"--target: no column {column!r} in {path}; columns: {', '.join(header)}")
    index = header.index(column)
    inputs = torch.tensor(
        [[_number(path, line, header[i], v) for i, v in enumerate(row) if i != index] for line, row in body]
    )
    labels = [row[index].strip() for _, row in body]
    try:
        values = [float(v) for v in labels]
    except ValueError:
        names = sorted(set(labels))
        targets = torch.tensor([names.index(v) for v in labels])
    else:
        values = [_number(path, line, column, row[index]) for line, row in body]
        if all(v.is_integer() for v in values):
            targets = class_indices([int(v) for v in values], f"{path}, target {column!r}")
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


def digit_strings(n: int = 4096, length: int = 6, task: str = "reverse", seed: int = 0) -> Data:
    """Strings of ``length`` random digits for a causal language model to copy or reverse.

    Each input is the digits, a separator (token 10), then the answer but its last digit:
    ``(N, 2·length)`` tokens; the targets ``(N, length)`` are the answer (the digits, or reversed),
    the next token at each of the last ``length`` positions.

    Examples:
        >>> data = digit_strings(1, 3, seed=1)
        >>> data.inputs.shape, data.targets.shape
        (torch.Size([1, 6]), torch.Size([1, 3]))
        >>> bool((data.inputs[0, 4:] == data.targets[0, :2]).all())
        True
    """
    if task not in ("copy", "reverse"):
        raise ValueError(f"task: expected 'copy' or 'reverse', got {task!r}")
    if n < 1 or length < 1:
        raise ValueError(f"n and length: expected positive ints, got {n} and {length}")
    digits = torch.randint(10, (n, length), generator=torch.Generator().manual_seed(seed))
    answer = digits.flip(1) if task == "reverse" else digits
    separator = torch.full((n, 1), 10)
    return Data(f"digits {task}", torch.cat([digits, separator, answer[:, :-1]], 1), answer)


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
