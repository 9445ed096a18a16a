"""A cost that becomes NaN or ±inf: found at the step it happens, reported with its likely cause."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor


class NonFiniteCost(Exception):
    """Raised inside an epoch: the cost of ``step`` was ``value`` (NaN or ±inf)."""

    def __init__(self, step: int, value: float) -> None:
        super().__init__(f"the cost of step {step} was {value}")
        self.step = step
        self.value = value


class DivergenceError(FloatingPointError):
    """Training diverged: the cost became NaN or ±inf at ``epoch`` (from 1), ``step`` (from 1).

    The weights were not saved after that: a run directory keeps the checkpoint of the last
    epoch that ended with a finite cost (``checkpoint_epoch``, from 1; ``None`` if there is none).
    """

    def __init__(
        self,
        epoch: int,
        step: int,
        steps: int,
        value: float,
        lr: float,
        directory: Path | None,
        checkpoint_epoch: int | None,
    ) -> None:
        self.epoch, self.step, self.value = epoch, step, value
        self.directory, self.checkpoint_epoch = directory, checkpoint_epoch
        if directory is None:
            kept = "Nothing was saved (no logdir)."
        elif checkpoint_epoch is None:
            kept = f"No checkpoint was written: it diverged in its first epoch ({directory})."
        else:
            kept = f"The checkpoint of epoch {checkpoint_epoch}, the last with a finite cost, is kept in {directory}."
        super().__init__(
            f"training diverged: the cost became {value} at epoch {epoch}, step {step} of {steps}. "
            f"Likely cause: a learning rate too large for this model and cost (lr {lr:g}; try one 10× smaller), "
            f"or extreme values in the data or the initial weights. {kept}"
        )


def first_non_finite(values: list[Tensor]) -> int | None:
    """The index of the first of ``values`` (per-example costs of consecutive steps) that is not finite."""
    for index, value in enumerate(values):
        if not bool(torch.isfinite(value).all()):
            return index
    return None
