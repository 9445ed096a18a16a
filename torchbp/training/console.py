"""Console output as a built-in plugin: a progress bar with the running loss, one line per epoch."""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from torch import Tensor

from ..hookspecs import hookimpl
from ..plugins import listen

_BAR = 24
_PROGRESS = "torchbp.training.console.progress"


def _bar_wanted(run: Any) -> bool:
    return bool(run.verbose and sys.stderr.isatty())


@hookimpl
def torchbp_train_start(run: Any) -> None:
    listen(_PROGRESS, _ProgressBar() if _bar_wanted(run) else None)
    if not run.verbose:
        return
    size = sum(p.numel() for p in run.model.parameters())
    resumed = f", resuming at epoch {run.start_epoch + 1}" if run.start_epoch else ""
    print(
        f"training {type(run.model).__name__} ({size:,} parameters) on {run.device}: "
        f"{run.config['cost']} cost, {run.config['rule']} rule, lr {run.config['lr']:g}, "
        f"{run.epochs} epochs of {run.steps_per_epoch} steps{resumed}",
        flush=True,
    )
    run.state["console"] = {"loss": 0.0, "steps": 0, "shown": 0.0}


class _ProgressBar:
    """The bar with the running loss: listens to steps only while it is drawn (verbose, on a terminal)."""

    @hookimpl
    def torchbp_step_end(self, run: Any, epoch: int, step: int, loss: Tensor) -> None:
        state = run.state["console"]
        if step == 0:
            state.update(loss=0.0, steps=0)
        state["loss"] += loss.item()
        state["steps"] += 1
        now = time.monotonic()
        if now - state["shown"] < 0.1 and step + 1 < run.steps_per_epoch:
            return
        state["shown"] = now
        done = (step + 1) / run.steps_per_epoch
        filled = round(done * _BAR)
        sys.stderr.write(
            f"\repoch {epoch + 1}/{run.epochs} [{'#' * filled}{'.' * (_BAR - filled)}] "
            f"{step + 1}/{run.steps_per_epoch}  loss {state['loss'] / state['steps']:.4f}"
        )
        sys.stderr.flush()


@hookimpl
def torchbp_epoch_end(run: Any, epoch: int, metrics: dict[str, float]) -> None:
    if not run.verbose:
        return
    if _bar_wanted(run):
        sys.stderr.write("\r\033[K")
    line = f"epoch {epoch + 1:>3}/{run.epochs}  train loss {metrics['train_loss']:.5f}"
    if "val_loss" in metrics:
        line += f"  val loss {metrics['val_loss']:.5f}"
    if "val_accuracy" in metrics:
        line += f"  val acc {100 * metrics['val_accuracy']:6.2f}%"
    print(f"{line}  lr {metrics['lr']:g}  ({metrics['seconds']:.2f} s)", flush=True)


def _tensorboard_command() -> str:
    """``tensorboard``, or the path of the one beside this Python when its environment is not active."""
    beside = Path(sys.executable).parent / "tensorboard"
    active = os.environ.get("VIRTUAL_ENV") == sys.prefix or sys.prefix == sys.base_prefix
    on_path = shutil.which("tensorboard")
    if not beside.exists() or (active and on_path is not None and Path(on_path).resolve() == beside.resolve()):
        return "tensorboard"
    relative = os.path.relpath(beside)
    return relative if not relative.startswith("..") else str(beside)


@hookimpl
def torchbp_train_end(run: Any, history: list[dict[str, float]]) -> None:
    listen(_PROGRESS, None)
    if run.verbose and run.directory is not None:
        print(f"run directory: {run.directory}")
        print(f"watch it in TensorBoard:  {_tensorboard_command()} --logdir {run.directory.parent}")
