"""Early stopping: end a run once a metric has stopped improving, optionally keeping its best weights."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

THRESHOLD = 1e-4
"""The relative change that counts as an improvement."""


class EarlyStopping:
    """Stop after ``patience`` epochs in a row without a new best ``monitor`` value.

    A loss improves by going down, an accuracy (a metric whose name has ``accuracy`` in it) by
    going up, in either case by more than ``THRESHOLD`` (0.01%) of the best value, as in
    ``ReduceLROnPlateau``'s default: the rounding noise of a flat loss (summed in another order
    each epoch) is no improvement, so a flat loss stops the run ``patience`` epochs after its
    first. With ``restore_best`` it keeps a copy of the weights of the best epoch and puts them
    back in the model when training ends.

    Args:
        patience: epochs without improvement before stopping, at least 1.
        monitor: a key of the epoch's metrics: ``train_loss``, ``val_loss`` or ``val_accuracy``.
        restore_best: whether to load the best epoch's weights into the model at the end.
    """

    def __init__(self, patience: int, monitor: str = "val_loss", restore_best: bool = False) -> None:
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ValueError(f"patience: expected a positive int (epochs without improvement), got {patience!r}")
        self.patience = patience
        self.monitor = monitor
        self.restore_best = restore_best
        self.higher_is_better = "accuracy" in monitor
        self.best: float | None = None
        self.best_epoch = 0
        self.waited = 0
        self.best_weights: dict[str, Tensor] | None = None

    def check_monitor(self, has_val_data: bool) -> None:
        """Refuse a monitor that no epoch will report."""
        known = ["train_loss", *(["val_loss", "val_accuracy"] if has_val_data else [])]
        if self.monitor not in known:
            hint = "" if has_val_data or not self.monitor.startswith("val_") else " (pass val_data to monitor it)"
            raise ValueError(f"monitor: expected one of {', '.join(known)}, got {self.monitor!r}{hint}")

    def update(self, metrics: dict[str, float], model: torch.nn.Module) -> bool:
        """Record an epoch's metrics (``epoch`` counts from 1); ``True`` when training should stop."""
        if self.monitor not in metrics:
            raise ValueError(
                f"monitor: the epochs report {', '.join(k for k in metrics if k not in ('epoch', 'lr', 'seconds'))}, "
                f"not {self.monitor!r} (val_accuracy needs integer class targets)"
            )
        value = metrics[self.monitor]
        if self.best is None:
            better = True
        else:
            margin = THRESHOLD * abs(self.best)
            better = value > self.best + margin if self.higher_is_better else value < self.best - margin
        if better:
            self.best, self.best_epoch, self.waited = value, int(metrics["epoch"]), 0
            if self.restore_best:
                self.best_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
            return False
        self.waited += 1
        return self.waited >= self.patience

    def restore(self, model: torch.nn.Module) -> None:
        """Put the best epoch's weights back into ``model`` when asked to (``restore_best``)."""
        if self.restore_best and self.best_weights is not None:
            model.load_state_dict(self.best_weights)

    def reason(self) -> str:
        """Why the run stopped, for the console."""
        return (
            f"early stop: {self.monitor} has not improved for {self.patience} epoch(s); "
            f"best {self.best:.5g} at epoch {self.best_epoch}"
            + (" (its weights restored)" if self.restore_best and self.best_weights is not None else "")
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "best": self.best,
            "best_epoch": self.best_epoch,
            "waited": self.waited,
            "best_weights": self.best_weights,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch = state["best"], int(state["best_epoch"])
        self.waited, self.best_weights = int(state["waited"]), state["best_weights"]
