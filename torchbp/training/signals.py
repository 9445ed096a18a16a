"""A graceful stop: Ctrl-C (SIGINT) or SIGTERM ends a run at the next step boundary.

While ``fit`` trains, the first SIGINT or SIGTERM only asks it to stop; it finishes the step it
is in, runs every ``torchbp_train_end`` hook (the TensorBoard writer is closed, δ hooks removed)
and raises ``TrainingInterrupted``. A second signal stops at once, with the same clean-up.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(KeyboardInterrupt):
    """Training was stopped by SIGINT or SIGTERM after a clean shutdown.

    Attributes:
        signal_number: the signal that stopped it.
        directory: the run directory, or ``None`` when nothing was logged.
        epoch: the last epoch (counting from 1) in the run's checkpoint, or ``None`` when none was written.
    """

    def __init__(self, signal_number: int, directory: Path | None = None, epoch: int | None = None) -> None:
        self.signal_number = signal_number
        self.directory = directory
        self.epoch = epoch
        super().__init__(self.describe(f"fit(..., resume={str(directory)!r})"))

    @property
    def exit_code(self) -> int:
        """The shell's code for a process ended by this signal: 130 for SIGINT, 143 for SIGTERM."""
        return 128 + self.signal_number

    def describe(self, resume: str) -> str:
        """What happened and how to continue, ``resume`` being the way to resume (a command or a call)."""
        name = signal.Signals(self.signal_number).name
        if self.directory is None:
            return f"training stopped by {name}; nothing was saved (no log directory)"
        if self.epoch is None:
            return f"training stopped by {name} before its first checkpoint; nothing is saved in {self.directory}"
        return (
            f"training stopped by {name}; the last checkpoint ({self.directory}) holds epoch {self.epoch}; "
            f"continue with: {resume}"
        )


class StopRequest:
    """Set by the first SIGINT/SIGTERM; ``check`` raises at a step boundary, a second signal at once."""

    def __init__(self) -> None:
        self.signal_number: int | None = None

    def __call__(self, signal_number: int, frame: FrameType | None) -> None:
        if self.signal_number is not None:
            raise TrainingInterrupted(signal_number)
        self.signal_number = signal_number

    def check(self) -> None:
        if self.signal_number is not None:
            raise TrainingInterrupted(self.signal_number)


@contextmanager
def stop_requests() -> Iterator[StopRequest]:
    """SIGINT and SIGTERM turned into a ``StopRequest`` inside the block (main thread only:
    elsewhere Python delivers no signals, and the request never fires); the old handlers after."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {number: signal.signal(number, request) for number in SIGNALS}
    try:
        yield request
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
