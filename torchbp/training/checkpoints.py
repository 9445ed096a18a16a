"""Checkpoints written atomically and read back with ``torch.load(weights_only=True)``."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

CHECKPOINT = "checkpoint.pt"
_KEYS = {"epoch", "model", "rule", "history", "rng", "config"}


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or not torchbp's; nothing was changed."""


def save_checkpoint(directory: Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``directory/checkpoint.pt`` atomically: a temporary file, then a rename.

    A reader (or a crash) sees either the previous checkpoint or the new one, never half of one.
    """
    path = directory / CHECKPOINT
    temporary = directory / f".{CHECKPOINT}.{os.getpid()}.tmp"
    try:
        with open(temporary, "wb") as file:
            torch.save(payload, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def load_checkpoint(directory: Path) -> dict[str, Any]:
    """Read ``directory/checkpoint.pt`` without unpickling arbitrary objects (``weights_only=True``)."""
    path = Path(directory) / CHECKPOINT
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint there; expected a run directory written by torchbp")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{path}: not a readable checkpoint (it is corrupt, or holds objects other than tensors and "
            f"plain data, which torchbp never unpickles); it was left as it is"
        ) from None
    except Exception as error:
        reason = str(error).splitlines()[0] if str(error) else ""
        raise CheckpointError(
            f"{path}: not a readable checkpoint ({type(error).__name__}: {reason}); it was left as it is"
        ) from None
    if not isinstance(payload, dict) or not _KEYS <= payload.keys():
        found = sorted(payload) if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{path}: expected a torchbp checkpoint with keys {sorted(_KEYS)}, got {found}")
    return payload
