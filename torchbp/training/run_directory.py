"""Run directories ``logdir/name/version_N``: made race-free, and removed again by a run that fails
before it has anything to keep."""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .checkpoints import CHECKPOINT
from .divergence import DivergenceError


def new_run_directory(logdir: str | Path, name: str) -> Path:
    """Create ``logdir/name/version_N`` with the next free N; an unwritable place is a clear error.

    Runs started at the same moment on one ``logdir`` each get their own N: ``mkdir`` either
    creates a directory or fails because another process just did, and then the next N is tried.
    """
    parent = Path(logdir) / name
    try:
        parent.mkdir(parents=True, exist_ok=True)
        versions = [int(p.name.split("_")[1]) for p in parent.glob("version_*") if p.name.split("_")[1].isdigit()]
        for number in itertools.count(max(versions, default=-1) + 1):
            directory = parent / f"version_{number}"
            try:
                directory.mkdir()
            except FileExistsError:
                continue
            break
        probe = directory / ".writable"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise PermissionError(f"logdir: cannot create a run directory under {parent} ({error})") from None
    return directory


@contextmanager
def removed_if_unstarted(directory: Path | None) -> Iterator[None]:
    """Inside the block, a new run directory that ends without a checkpoint (a setup error found
    only at the first step: targets that do not fit the outputs, a model that raises) is removed,
    so that no half-made run is left behind. A divergence keeps its directory: its TensorBoard
    events show how the cost blew up."""
    try:
        yield
    except DivergenceError:
        raise
    except Exception:
        if directory is not None and not (directory / CHECKPOINT).exists():
            shutil.rmtree(directory, ignore_errors=True)
        raise
