"""A graceful stop: SIGINT/SIGTERM end a run cleanly (train_end runs, exit 130/143, how to resume)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import torchbp
from torchbp.cli import main
from torchbp.training import TrainingInterrupted, load, load_checkpoint
from torchbp.training.signals import SIGNALS, StopRequest, stop_requests

INTERRUPTED_RUN = """
import os, signal, sys, torchbp
from torchbp.cli import main

class Interrupt:
    @torchbp.hookimpl
    def torchbp_step_end(self, epoch, step):
        if epoch == 2 and step == 1:
            os.kill(os.getpid(), signal.SIGINT)

    @torchbp.hookimpl
    def torchbp_train_end(self, run, history):
        print(f"train_end ran: {run.status}, {len(history)} epochs", flush=True)

torchbp.register_plugin(Interrupt())
sys.exit(main(["train", "--dataset", "xor", "--layers", "2,4,2", "--epochs", "10", "--logdir", sys.argv[1]]))
"""


def test_sigint_through_the_command_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(INTERRUPTED_RUN), str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    directory = tmp_path / "xor" / "version_0"
    assert result.returncode == 130, result.stderr
    assert "Traceback" not in result.stderr
    assert "train_end ran: interrupted, 2 epochs" in result.stdout
    assert "interrupted: 2 epochs in" in result.stdout  # the summary line
    assert (
        f"training stopped by SIGINT; the last checkpoint ({directory}) holds epoch 2; "
        f"continue with: torchbp train --resume {directory}" in result.stderr
    )
    assert load_checkpoint(directory)["epoch"] == 1
    # the TensorBoard writer was closed with the run's status in its hparams
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    events = EventAccumulator(str(directory))
    events.Reload()
    assert "hparam/train_loss" in events.Tags()["scalars"]
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    assert HParamsPluginData.FromString(content).session_start_info.hparams["status"].string_value == "interrupted"
    assert main(["train", "--resume", str(directory), "--epochs", "3"]) == 0
    assert load_checkpoint(directory)["epoch"] == 2


def test_sigterm_from_outside(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "torchbp", "train", "--dataset", "xor", "--epochs", "100000", "--logdir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    checkpoint = tmp_path / "xor" / "version_0" / "checkpoint.pt"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err
    assert "Traceback" not in err and "training stopped by SIGTERM" in err
    epoch = load_checkpoint(checkpoint.parent)["epoch"] + 1
    assert f"holds epoch {epoch}; continue with: torchbp train --resume {checkpoint.parent}" in err


def test_fit_raises_after_the_same_cleanup(tmp_path: Path) -> None:
    data = load("digits")
    model = torchbp.nn.MLP([64, 8, 10])

    class Interrupt:
        @torchbp.hookimpl
        def torchbp_step_end(self, epoch: int, step: int) -> None:
            if epoch == 1 and step == 2:
                os.kill(os.getpid(), signal.SIGINT)

    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted) as caught:
        torchbp.fit(
            model,
            (data.inputs[:100], data.targets[:100]),
            epochs=5,
            logdir=tmp_path,
            callbacks=[Interrupt()],
            verbose=False,
        )
    directory = tmp_path / "torchbp-run" / "version_0"
    assert (caught.value.signal_number, caught.value.directory, caught.value.epoch) == (signal.SIGINT, directory, 1)
    assert caught.value.exit_code == 130
    assert f"continue with: fit(..., resume='{directory}')" in str(caught.value)
    assert all(not layer._delta_hooks for layer in model.layers)  # TensorBoard's δ hooks removed
    assert signal.getsignal(signal.SIGINT) is before


def test_an_exception_gets_the_same_cleanup(tmp_path: Path) -> None:
    data = load("digits")
    model = torchbp.nn.MLP([64, 8, 10])

    class Crash:
        @torchbp.hookimpl
        def torchbp_epoch_end(self, epoch: int) -> None:
            if epoch == 1:
                raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        torchbp.fit(
            model,
            (data.inputs[:100], data.targets[:100]),
            epochs=5,
            logdir=tmp_path,
            callbacks=[Crash()],
            verbose=False,
        )
    assert all(not layer._delta_hooks for layer in model.layers)
    assert not torchbp.get_plugin_manager().has_plugin("torchbp.training.tensorboard.steps")


def test_a_second_signal_stops_at_once() -> None:
    request = StopRequest()
    request(signal.SIGINT, None)  # the first only asks
    assert request.signal_number == signal.SIGINT
    with pytest.raises(TrainingInterrupted) as raised:
        request(signal.SIGTERM, None)
    assert raised.value.signal_number == signal.SIGTERM and raised.value.exit_code == 143
    with pytest.raises(TrainingInterrupted) as checked:
        request.check()
    assert checked.value.signal_number == signal.SIGINT


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_both_handlers_are_replaced_and_restored(number: int) -> None:
    def previous(signal_number: int, frame: object) -> None:
        pass

    before = signal.signal(number, previous)
    try:
        with stop_requests() as request:
            assert signal.getsignal(number) is request
        assert signal.getsignal(number) is previous
    finally:
        signal.signal(number, before)


def test_outside_the_main_thread_no_handler_is_touched() -> None:
    seen: list[object] = []

    def train() -> None:
        try:
            with stop_requests() as request:
                seen.append(request)
                seen.extend(signal.getsignal(number) for number in SIGNALS)
        except Exception as error:  # signal.signal refuses threads other than the main one
            seen.append(error)

    before = [signal.getsignal(number) for number in SIGNALS]
    thread = threading.Thread(target=train)
    thread.start()
    thread.join()
    assert isinstance(seen[0], StopRequest) and seen[1:] == before
