"""Datasets: digits offline, MNIST from IDX files, CSV, synthetic sets, seeded splits."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import pytest
import torch

from torchbp.training import load
from torchbp.training.datasets import csv_file, mnist
from torchbp.training.idx import read_idx


def test_digits_is_offline_and_scaled() -> None:
    data = load("digits")
    assert data.inputs.shape == (1797, 64) and data.classes == 10
    assert 0 <= float(data.inputs.min()) and float(data.inputs.max()) <= 1


def test_split_is_seeded_and_disjoint() -> None:
    data = load("digits")
    train, val = data.split(0.2, seed=4)
    again, _ = data.split(0.2, seed=4)
    assert len(val.inputs) == 359 and len(train.inputs) == 1438
    assert torch.equal(train.inputs, again.inputs)
    with pytest.raises(ValueError, match="val_fraction: expected a value in \\[0, 1\\), got 1.5"):
        data.split(1.5, seed=0)


def _write_idx(path: Path, array: torch.Tensor, compress: bool) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.dim()) + b"".join(struct.pack(">I", s) for s in array.shape)
    payload = header + array.to(torch.uint8).numpy().tobytes()
    path.write_bytes(gzip.compress(payload) if compress else payload)


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_mnist_from_idx_files(tmp_path: Path, compress: bool) -> None:
    images = torch.randint(0, 256, (5, 28, 28))
    labels = torch.tensor([3, 1, 4, 1, 5])
    suffix = ".gz" if compress else ""
    _write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", images, compress)
    _write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", labels, compress)
    data = mnist(tmp_path)
    assert data.inputs.shape == (5, 784)
    torch.testing.assert_close(data.inputs, images.reshape(5, -1).float() / 255)
    assert data.targets.tolist() == [3, 1, 4, 1, 5]


def test_bad_idx_files_are_named(tmp_path: Path) -> None:
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="bad: not an IDX file"):
        read_idx(tmp_path / "bad")
    short = tmp_path / "short"
    short.write_bytes(struct.pack(">BBBBI", 0, 0, 8, 1, 10) + b"\x00" * 3)
    with pytest.raises(ValueError, match="short: IDX header says shape \\(10,\\)"):
        read_idx(short)
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        mnist(tmp_path)


def test_csv_with_a_target_column(tmp_path: Path) -> None:
    path = tmp_path / "flowers.csv"
    path.write_text("length,width,kind\n1.0,2.0,rose\n3.0,4.0,tulip\n5.0,6.5,rose\n")
    data = csv_file(path, "kind")
    assert data.inputs.tolist() == [[1.0, 2.0], [3.0, 4.0], [5.0, 6.5]]
    assert data.targets.tolist() == [0, 1, 0]
    with pytest.raises(ValueError, match="every column but the target must be numeric"):
        csv_file(path, "width")
    numbers = tmp_path / "numbers.csv"
    numbers.write_text("a,b,y\n1,2,0.5\n3,4,1.5\n")
    regression = csv_file(numbers)
    assert regression.targets.shape == (2, 1) and regression.classes is None
    with pytest.raises(ValueError, match="no column 'colour'.*columns: length, width, kind"):
        csv_file(path, "colour")


@pytest.mark.parametrize("name", ["xor", "moons", "spirals"])
def test_synthetic_sets_are_seeded_two_class_problems(name: str) -> None:
    first, second = load(name, seed=1), load(name, seed=1)
    assert first.inputs.shape == (800, 2) and first.classes == 2
    assert torch.equal(first.inputs, second.inputs)


def test_unknown_dataset_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown dataset 'cifar'; available: digits, mnist, csv"):
        load("cifar")
