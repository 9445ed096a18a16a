"""Run directories ``logdir/name/version_N``: made race-free; a run that fails still ends (its loggers
close), and one that fails before it has anything to keep leaves no directory."""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..plugins import get_plugin_manager
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
def closed_on_failure(run: Any, history: list[dict[str, float]], fresh: bool) -> Iterator[None]:
    """Inside the block, a failing run still ends: ``torchbp_train_end`` runs with the history so far
    and ``run.status`` ``"failed"`` (loggers close their files, plugins remove their hooks from the
    model), then the error goes on.

    A ``fresh`` run directory that ends without a checkpoint (a setup error found only at the first
    step: targets that do not fit the outputs, a model that raises) is removed, so that no half-made
    run is left behind. A divergence keeps its directory: its TensorBoard events show how the cost
    blew up.
    """
    try:
        yield
    except Exception as error:
        directory = run.directory
        remove = (
            fresh
            and directory is not None
            and not (directory / CHECKPOINT).exists()
            and not isinstance(error, DivergenceError)
        )
        if remove:
            run.directory = None  # nothing to point the user at
        run.status = "failed"
        try:
            get_plugin_manager().hook.torchbp_train_end(run=run, history=history)
        except Exception:  # the first error is the one to report
            pass
        if remove:
            shutil.rmtree(directory, ignore_errors=True)
        raise
