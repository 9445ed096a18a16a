"""Datasets: digits offline, MNIST from IDX files, CSV, synthetic sets, seeded splits."""

from __future__ import annotations

import gzip
import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from torchbp.training import load
from torchbp.training.datasets import Data, class_indices, csv_file, mnist, moons, spirals
from torchbp.training.idx import find_idx, read_idx


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


@pytest.mark.parametrize("n, fraction, n_val", [(7, 0.5, 4), (9, 0.3, 3), (10, 0.25, 2), (5, 0.0, 0)])
@pytest.mark.parametrize("seed", [0, 3])
def test_split_holds_out_the_rounded_fraction_in_the_seeded_order(
    n: int, fraction: float, n_val: int, seed: int
) -> None:
    data = Data("rows", torch.arange(n, dtype=torch.float32).unsqueeze(1), torch.arange(n) % 2)
    train, val = data.split(fraction, seed)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))  # the oracle: the documented order
    assert val.inputs.squeeze(1).long().tolist() == order[:n_val].tolist()
    assert train.inputs.squeeze(1).long().tolist() == order[n_val:].tolist()
    assert torch.equal(train.targets, train.inputs.squeeze(1).long() % 2)  # rows keep their targets


def test_splits_of_other_seeds_differ() -> None:
    data = Data("rows", torch.arange(50, dtype=torch.float32).unsqueeze(1), torch.zeros(50, dtype=torch.int64))
    assert not torch.equal(data.split(0.2, seed=0)[1].inputs, data.split(0.2, seed=1)[1].inputs)


def test_digits_are_sklearns_scaled_by_16_with_int64_labels() -> None:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    data = load("digits")
    assert torch.equal(data.inputs, torch.tensor(bunch.data, dtype=torch.float32) / 16)
    assert float(data.inputs.max()) == 1.0
    assert data.targets.dtype == torch.int64 and data.targets.tolist() == bunch.target.tolist()


def test_mnist_test_split_reads_the_t10k_files(tmp_path: Path) -> None:
    _write_idx(tmp_path / "train-images-idx3-ubyte", torch.zeros(2, 3, 3), False)
    _write_idx(tmp_path / "train-labels-idx1-ubyte", torch.tensor([0, 1]), False)
    images = torch.randint(0, 256, (3, 3, 3))
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", images, False)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", torch.tensor([1, 0, 1]), False)
    data = mnist(tmp_path, split="test")
    torch.testing.assert_close(data.inputs, images.reshape(3, 9).float() / 255)
    assert data.targets.tolist() == [1, 0, 1]


def test_mnist_images_and_labels_of_other_counts_are_refused(tmp_path: Path) -> None:
    _write_idx(tmp_path / "train-images-idx3-ubyte", torch.zeros(3, 2, 2), False)
    _write_idx(tmp_path / "train-labels-idx1-ubyte", torch.tensor([0, 1]), False)
    with pytest.raises(
        ValueError, match=r"expected images \(N, rows, cols\) and labels \(N,\), got \(3, 2, 2\) and \(2,\)"
    ):
        mnist(tmp_path)


@pytest.mark.parametrize("distinct, more", [(12, ""), (13, ", … 1 more"), (14, ", … 2 more")])
def test_a_long_list_of_labels_says_how_many_more(distinct: int, more: str) -> None:
    labels = list(range(1, distinct + 1))  # 1…K: not 0…K−1
    shown = ", ".join(f"{v} (1×)" for v in labels[:12])
    with pytest.warns(UserWarning) as record:
        class_indices(labels, "labels")
    assert f"found {distinct} distinct labels {shown}{more}; using them as they are" in str(record[0].message)


def test_csv_text_labels_are_numbered_in_sorted_order(tmp_path: Path) -> None:
    path = tmp_path / "flowers.csv"
    path.write_text("length,kind\n1,tulip\n2,rose\n3,iris\n4,tulip\n")
    assert csv_file(path).targets.tolist() == [2, 1, 0, 2]


@pytest.mark.parametrize("values", [["1", "2.5", "3"], ["1.5", "2", "3"], ["0.5", "1.5", "2.5"]])
def test_csv_targets_that_are_not_all_integers_are_regression_values(tmp_path: Path, values: list[str]) -> None:
    path = tmp_path / "values.csv"
    path.write_text("a,y\n" + "".join(f"{i},{v}\n" for i, v in enumerate(values)))
    data = csv_file(path)
    assert data.classes is None and data.targets.dtype == torch.float32
    assert data.targets.squeeze(1).tolist() == [float(v) for v in values]


def test_xor_labels_are_one_where_the_signs_differ() -> None:
    data = load("xor", seed=2)
    x, y = data.inputs[:, 0], data.inputs[:, 1]
    assert torch.equal(data.targets, (x * y < 0).long())
    assert bool((data.inputs.abs() <= 1).all())


def test_noiseless_moons_lie_on_their_half_circles() -> None:
    data = moons(400, noise=0.0, seed=1)
    upper, lower = data.inputs[data.targets == 0], data.inputs[data.targets == 1]
    torch.testing.assert_close(upper.norm(dim=1), torch.ones(len(upper)))
    assert bool((upper[:, 1] >= 0).all())
    torch.testing.assert_close((lower - torch.tensor([1.0, 0.5])).norm(dim=1), torch.ones(len(lower)))
    assert bool((lower[:, 1] <= 0.5).all())


def test_noiseless_spirals_are_the_same_spiral_turned_half_a_round() -> None:
    turns = 1.5
    data = spirals(400, turns=turns, noise=0.0, seed=1)
    radius = data.inputs.norm(dim=1)
    t = radius * turns * 2 * math.pi  # radius = t / (turns · 2π)
    angle = t + math.pi * data.targets
    expected = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], 1)
    torch.testing.assert_close(data.inputs, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "code, dtype, values",
    [
        (0x08, ">u1", [0, 7, 255]),
        (0x09, ">i1", [-128, -1, 127]),
        (0x0B, ">i2", [-300, 2, 30000]),
        (0x0C, ">i4", [-70000, 1, 2**31 - 1]),
        (0x0D, ">f4", [-1.5, 0.25, 3e8]),
        (0x0E, ">f8", [-1e-300, 0.1, 1e300]),
    ],
)
def test_idx_element_types_are_read_with_their_sign_and_byte_order(
    tmp_path: Path, code: int, dtype: str, values: list[float]
) -> None:
    path = tmp_path / "values-idx1-ubyte"
    path.write_bytes(struct.pack(">BBBBI", 0, 0, code, 1, len(values)) + np.array(values, dtype=dtype).tobytes())
    tensor = read_idx(path)
    assert tensor.tolist() == np.array(values, dtype=dtype).tolist()


def test_an_idx_file_of_an_unknown_element_type_is_named(tmp_path: Path) -> None:
    path = tmp_path / "odd-idx1-ubyte"
    path.write_bytes(struct.pack(">BBBBI", 0, 0, 0x0A, 1, 1) + b"\x00")
    with pytest.raises(ValueError, match="odd-idx1-ubyte: not an IDX file .*got 00000a01"):
        read_idx(path)


@pytest.mark.parametrize(
    "name",
    ["train-images-idx3-ubyte", "train-images-idx3-ubyte.gz", "train-images.idx3-ubyte", "train-images.idx3-ubyte.gz"],
)
def test_find_idx_knows_the_names_mnist_is_shipped_under(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_bytes(b"")
    assert find_idx(tmp_path, "train-images-idx3-ubyte") == tmp_path / name
