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
    labels = torch.tensor([3, 1, 4, 1, 0])
    suffix = ".gz" if compress else ""
    _write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", images, compress)
    _write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", labels, compress)
    data = mnist(tmp_path)
    assert data.inputs.shape == (5, 784)
    torch.testing.assert_close(data.inputs, images.reshape(5, -1).float() / 255)
    assert data.targets.tolist() == [3, 1, 4, 1, 0]


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


def test_csv_trailing_and_inner_blank_lines_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "blank.csv"
    path.write_text("a,b,y\n1,2,0\n\n3,4,1\n\n\n")
    data = csv_file(path)
    assert data.inputs.tolist() == [[1.0, 2.0], [3.0, 4.0]] and data.targets.tolist() == [0, 1]


@pytest.mark.parametrize("row, count", [("1,2", 2), ("1,2,0,9", 4), ("1", 1)], ids=["short", "long", "one field"])
def test_csv_rows_of_another_width_name_the_line_and_the_field_count(tmp_path: Path, row: str, count: int) -> None:
    path = tmp_path / "ragged.csv"
    path.write_text(f"a,b,y\n1,2,0\n\n{row}\n3,4,1\n")
    with pytest.raises(ValueError) as raised:
        csv_file(path)
    assert f"ragged.csv, line 4: expected 3 fields (as the header: a, b, y), got {count}" in str(raised.value)


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "NaN"])
@pytest.mark.parametrize("column", ["b", "y"])
def test_csv_non_finite_values_are_refused_naming_line_and_column(tmp_path: Path, text: str, column: str) -> None:
    path = tmp_path / "holes.csv"
    row = f"3,{text},0.5" if column == "b" else f"3,4,{text}"
    path.write_text(f"a,b,y\n1,2,1.5\n{row}\n")
    with pytest.raises(ValueError) as raised:
        csv_file(path)
    assert f"holes.csv, line 3, column '{column}': expected a finite number, got '{text}'" in str(raised.value)


def test_csv_non_numeric_fields_name_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "words.csv"
    path.write_text("a,b,y\n1,2,0\n1,two,1\n")
    with pytest.raises(ValueError, match=r"words.csv, line 3, column 'b': expected a number .* got 'two'"):
        csv_file(path)


def test_csv_a_directory_or_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(IsADirectoryError, match=f"--data-file: expected a CSV file, got the directory {tmp_path}"):
        csv_file(tmp_path)
    with pytest.raises(FileNotFoundError, match="--data-file: no file .*missing.csv"):
        csv_file(tmp_path / "missing.csv")


def test_csv_negative_integer_labels_are_renumbered_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("a,y\n1,-1\n2,1\n3,1\n4,-1\n")
    with pytest.warns(UserWarning) as record:
        data = csv_file(path)
    assert str(record[0].message) == (
        f"{path}, target 'y': class labels are not 0…K−1: found 2 distinct labels -1 (2×), 1 (2×); "
        "using them as classes 0…1 in sorted order (-1→0, 1→1), so the network gets 2 outputs"
    )
    assert data.targets.tolist() == [0, 1, 1, 0] and data.outputs == 2 and data.classes == 2


@pytest.mark.parametrize(
    "labels, found, outputs, unused",
    [([1, 2, 3, 2], "1 (1×), 2 (2×), 3 (1×)", 4, 1), ([0, 1, 200, 1], "0 (1×), 1 (2×), 200 (1×)", 201, 198)],
)
def test_csv_labels_with_gaps_say_how_many_outputs_go_unused(
    tmp_path: Path, labels: list[int], found: str, outputs: int, unused: int
) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("a,y\n" + "".join(f"{i},{label}\n" for i, label in enumerate(labels)))
    with pytest.warns(UserWarning) as record:
        data = csv_file(path)
    message = str(record[0].message)
    assert f"class labels are not 0…K−1: found {len(set(labels))} distinct labels {found}" in message
    assert f"the network gets {outputs} outputs, {unused} of them for labels no example has" in message
    assert data.targets.tolist() == labels and data.outputs == outputs


def test_mnist_a_stray_label_is_reported(tmp_path: Path) -> None:
    images = torch.randint(0, 256, (6, 4, 4))
    labels = torch.tensor([0, 1, 2, 200, 1, 0])
    _write_idx(tmp_path / "train-images-idx3-ubyte", images, False)
    _write_idx(tmp_path / "train-labels-idx1-ubyte", labels, False)
    with pytest.warns(UserWarning, match=r"idx1-ubyte: class labels are not 0…K−1: .* 200 \(1×\); .* 201 outputs"):
        data = mnist(tmp_path)
    assert data.targets.tolist() == [0, 1, 2, 200, 1, 0] and data.outputs == 201


def test_idx_gz_that_is_not_gzip_or_is_truncated_is_named(tmp_path: Path) -> None:
    plain = tmp_path / "plain-idx1-ubyte.gz"
    _write_idx(plain, torch.tensor([1, 2, 3]), False)
    with pytest.raises(ValueError, match="plain-idx1-ubyte.gz: not a gzip file.*remove the .gz"):
        read_idx(plain)
    truncated = tmp_path / "cut-idx1-ubyte.gz"
    _write_idx(truncated, torch.arange(200) % 10, True)
    truncated.write_bytes(truncated.read_bytes()[:-12])
    with pytest.raises(ValueError, match="cut-idx1-ubyte.gz: the gzip data is truncated or corrupt"):
        read_idx(truncated)
    with pytest.raises(IsADirectoryError, match="expected an IDX file, got a directory"):
        read_idx(tmp_path)


def test_idx_float_images_with_nan_are_refused_with_their_index(tmp_path: Path) -> None:
    images = torch.rand(3, 2, 2, dtype=torch.float32)
    images[1, 0, 1] = float("nan")
    header = struct.pack(">BBBB", 0, 0, 0x0D, 3) + b"".join(struct.pack(">I", s) for s in images.shape)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(header + images.numpy().astype(">f4").tobytes())
    _write_idx(tmp_path / "train-labels-idx1-ubyte", torch.tensor([0, 1, 0]), False)
    with pytest.raises(
        ValueError, match=r"train-images-idx3-ubyte: expected finite numbers, got nan at index \(1, 0, 1\)"
    ):
        mnist(tmp_path)
