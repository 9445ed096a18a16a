"""Console output as a built-in plugin: a progress bar with the running loss, rate and ETA, one line
per epoch, and a summary line at the end (how the run ended, its best validation accuracy, its time)."""

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
    run.state["console"] = {"loss": 0.0, "steps": 0, "shown": 0.0, "started": time.monotonic()}


def _duration(seconds: float) -> str:
    """``0:07``, ``12:03``, ``1:02:03``."""
    minutes, secs = divmod(int(seconds + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def progress_line(epoch: int, epochs: int, step: int, steps: int, loss: float, elapsed: float) -> str:
    """The bar after ``step + 1`` of ``steps`` steps, ``elapsed`` seconds into the epoch: the running
    loss, the rate in steps per second and the epoch's remaining time (ETA)."""
    done = (step + 1) / steps
    filled = round(done * _BAR)
    rate = (step + 1) / elapsed if elapsed > 0 else float("inf")
    eta = (steps - step - 1) / rate if rate != float("inf") else 0.0
    return (
        f"epoch {epoch + 1}/{epochs} [{'#' * filled}{'.' * (_BAR - filled)}] {step + 1}/{steps}  "
        f"loss {loss:.4f}  {rate:,.1f} steps/s  ETA {_duration(eta)}"
    )


class _ProgressBar:
    """The bar with the running loss: listens to steps only while it is drawn (verbose, on a terminal)."""

    @hookimpl
    def torchbp_step_end(self, run: Any, epoch: int, step: int, loss: Tensor) -> None:
        state = run.state["console"]
        now = time.monotonic()
        if step == 0:
            state.update(loss=0.0, steps=0, epoch_started=now)
        state["loss"] += loss.item()
        state["steps"] += 1
        if now - state["shown"] < 0.1 and step + 1 < run.steps_per_epoch:
            return
        state["shown"] = now
        line = progress_line(
            epoch, run.epochs, step, run.steps_per_epoch, state["loss"] / state["steps"], now - state["epoch_started"]
        )
        sys.stderr.write("\r" + line)
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


def summary_line(run: Any, history: list[dict[str, float]], seconds: float) -> str:
    """How the run ended, its best validation accuracy (or loss) and that epoch, and the time it took."""
    status = {
        "finished": "done",
        "stopped early": run.stop_reason or "stopped early",
        "interrupted": "interrupted",
        "failed": "failed",
    }.get(run.status, run.status)
    trained = len(history) - run.start_epoch
    parts = [f"{status}: {trained} epoch{'s' if trained != 1 else ''} in {_duration(seconds)}"]
    scored = [h for h in history if "val_accuracy" in h]
    if scored:
        best = max(scored, key=lambda h: h["val_accuracy"])
        parts.append(f"best val acc {100 * best['val_accuracy']:.2f}% at epoch {int(best['epoch'])}")
    elif any("val_loss" in h for h in history):
        best = min((h for h in history if "val_loss" in h), key=lambda h: h["val_loss"])
        parts.append(f"best val loss {best['val_loss']:.5f} at epoch {int(best['epoch'])}")
    return "; ".join(parts)


@hookimpl
def torchbp_train_end(run: Any, history: list[dict[str, float]]) -> None:
    listen(_PROGRESS, None)
    if run.verbose and "console" in run.state:
        if _bar_wanted(run):
            sys.stderr.write("\r\033[K")
        print(summary_line(run, history, time.monotonic() - run.state["console"]["started"]), flush=True)
    if run.verbose and run.directory is not None:
        print(f"run directory: {run.directory}")
        print(f"watch it in TensorBoard:  {_tensorboard_command()} --logdir {run.directory.parent}")
