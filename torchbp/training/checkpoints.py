"""Checkpoints written atomically and read back with ``torch.load(weights_only=True)``."""

from __future__ import annotations

import errno
import os
import pickle
from pathlib import Path
from typing import Any

import torch

CHECKPOINT = "checkpoint.pt"
_KEYS = {"epoch", "model", "rule", "history", "rng", "config"}


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, not torchbp's, or could not be written; the one on disk stays."""


def save_checkpoint(directory: Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``directory/checkpoint.pt`` atomically: a temporary file, then a rename.

    A reader (or a crash) sees either the previous checkpoint or the new one, never half of one.
    A write that fails (a full disk, a quota) leaves the previous checkpoint and raises
    ``CheckpointError`` saying why.
    """
    path = directory / CHECKPOINT
    temporary = directory / f".{CHECKPOINT}.{os.getpid()}.tmp"
    try:
        with open(temporary, "wb") as file:
            torch.save(payload, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except OSError as error:
        kept = "the previous checkpoint is kept" if path.exists() else "no earlier checkpoint exists"
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            reason = f"the disk is full ({os.strerror(error.errno)})"
            advice = "free some space, then resume the run with --resume"
        else:
            reason = f"{type(error).__name__}: {error}"
            advice = "check the directory can be written, then resume the run"
        raise CheckpointError(f"{path}: cannot write the checkpoint: {reason}; {kept}; {advice}") from None
    finally:
        temporary.unlink(missing_ok=True)
    return path


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Remove the temporary checkpoint files that processes killed while writing left in ``directory``
    (those of processes still alive are theirs to finish); returns what was removed."""
    removed = []
    for temporary in Path(directory).glob(f".{CHECKPOINT}.*.tmp"):
        pid = temporary.name[len(CHECKPOINT) + 2 : -len(".tmp")]
        if pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid)):
            continue
        temporary.unlink(missing_ok=True)
        removed.append(temporary)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def load_checkpoint(directory: Path) -> dict[str, Any]:
    """Read ``directory/checkpoint.pt`` without unpickling arbitrary objects (``weights_only=True``)."""
    path = Path(directory) / CHECKPOINT
    if not path.is_file():
        if (path.parent / "config.toml").is_file():
            raise CheckpointError(
                f"{path}: no checkpoint there; the run in {path.parent} ended before its first epoch did (a run "
                "saves its checkpoint at the end of each epoch): start it again, with the command that made it "
                "(without --resume)"
            )
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
