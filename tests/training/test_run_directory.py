"""Run directories: concurrent runs get their own version_N; a run failing at its first step leaves none."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest
import torch

import torchbp
from torchbp.training import DivergenceError, load
from torchbp.training.run_directory import new_run_directory


def _make(arguments: tuple[str, object]) -> str:
    logdir, barrier = arguments
    barrier.wait()  # type: ignore[attr-defined]
    return new_run_directory(logdir, "race").name


def test_runs_started_at_the_same_moment_get_distinct_versions(tmp_path: Path) -> None:
    processes = 8
    context = multiprocessing.get_context("fork")
    with context.Manager() as manager:
        barrier = manager.Barrier(processes)
        with context.Pool(processes) as pool:
            names = pool.map(_make, [(str(tmp_path), barrier)] * processes)
    assert sorted(names) == sorted(f"version_{n}" for n in range(processes))
    assert sorted(p.name for p in (tmp_path / "race").iterdir()) == sorted(names)


def test_a_taken_version_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the race in slow motion: another process creates version_0 between the listing and the mkdir
    original = Path.glob

    def glob_then_lose_the_race(self: Path, pattern: str):  # type: ignore[no-untyped-def]
        found = list(original(self, pattern))
        (self / "version_0").mkdir(exist_ok=True)
        return iter(found)

    monkeypatch.setattr(Path, "glob", glob_then_lose_the_race)
    assert new_run_directory(tmp_path, "run").name == "version_1"


@pytest.fixture(scope="module")
def xor() -> tuple:
    data = load("xor")
    return data.inputs[:40], data.targets[:40]


def test_an_error_at_the_first_step_leaves_no_run_directory(xor: tuple, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = torchbp.nn.MLP([2, 4, 3])
    wrong = torch.rand(40, 2)  # float targets of another width than the outputs
    with pytest.raises(ValueError, match=r"target: expected shape \(\d+, 3\)"):
        torchbp.fit(model, (xor[0], wrong), epochs=2, verbose=False, logdir=tmp_path, name="run")
    assert list((tmp_path / "run").iterdir()) == []


def test_a_model_that_raises_at_its_first_step_leaves_no_run_directory(xor: tuple, tmp_path: Path) -> None:
    class Broken(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(2, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.training:
                raise RuntimeError("broken in training")
            return self.linear(x)

    with pytest.raises(RuntimeError, match="broken in training"):
        torchbp.fit(Broken(), xor, epochs=2, verbose=False, logdir=tmp_path, name="run")
    assert list((tmp_path / "run").iterdir()) == []


@pytest.mark.parametrize(
    "existing, expected",
    [([], "version_0"), (["version_best"], "version_0"), (["version_2", "version_x", "version_"], "version_3")],
)
def test_directories_named_version_but_not_numbered_are_ignored(
    tmp_path: Path, existing: list[str], expected: str
) -> None:
    for name in existing:
        (tmp_path / "run" / name).mkdir(parents=True)
    assert new_run_directory(tmp_path, "run") == tmp_path / "run" / expected


def test_a_divergence_at_the_first_step_keeps_its_run_directory(xor: tuple, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = torchbp.nn.MLP([2, 8, 2], "relu", "identity")
    with pytest.raises(DivergenceError):
        torchbp.fit(model, xor, lr=1e9, epochs=2, verbose=False, logdir=tmp_path, name="run")
    directory = tmp_path / "run" / "version_0"
    assert list(directory.glob("events.out.tfevents.*"))  # its TensorBoard events show how the cost blew up
    assert not (directory / "checkpoint.pt").exists()
