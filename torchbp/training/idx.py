"""Reading the IDX files MNIST is distributed in (gzipped or not)."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

# the third byte of the magic number names the element type; the fourth, the number of dims
_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | Path) -> Tensor:
    """The array stored in one IDX file (``.gz`` is decompressed), as a tensor.

    Raises ``ValueError`` naming the file when the header or the size does not fit the format.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path}: expected an IDX file, got a directory")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as file:
            data = file.read()
    except gzip.BadGzipFile:
        raise ValueError(
            f"{path}: not a gzip file, though its name ends in .gz; if it is an uncompressed IDX file, "
            "remove the .gz from its name"
        ) from None
    except (EOFError, zlib.error) as error:
        raise ValueError(f"{path}: the gzip data is truncated or corrupt ({error}); download the file again") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _TYPES:
        raise ValueError(f"{path}: not an IDX file (expected a magic number 0x0000TTDD, got {data[:4].hex()})")
    dtype = _TYPES[data[2]]
    dims = data[3]
    header = 4 + 4 * dims
    if len(data) < header:
        raise ValueError(f"{path}: IDX header promises {dims} dimensions but the file ends after {len(data)} bytes")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise ValueError(
            f"{path}: IDX header says shape {shape}, which needs {expected} bytes; the file has {len(data)}"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return torch.from_numpy(array.astype(dtype.newbyteorder("=")))


def find_idx(directory: Path, stem: str) -> Path:
    """``stem`` or ``stem.gz`` in ``directory`` (MNIST names like ``train-images-idx3-ubyte``)."""
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (directory / name).is_file():
            return directory / name
    raise FileNotFoundError(f"{directory}: expected an IDX file {stem} or {stem}.gz, found none")
