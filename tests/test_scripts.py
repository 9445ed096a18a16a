"""The scripts: the worked example, the XOR demo, the drop-in overhead report and the layers-only floor."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, check=False)


def _script(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_worked_example_agrees_three_ways(tmp_path: Path) -> None:
    out = tmp_path / "worked.json"
    result = _run(str(SCRIPTS / "worked_example.py"), "--json", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(out.read_text())
    assert data["largest_disagreement"] <= 1e-12
    hand = data["results"]["hand"]
    # an independent check of the first numbers: v = Wᵀx, ŷ = f(W⁽¹→²⁾ᵀ f(v))
    assert math.isclose(hand["v_in1"][0], 0.5 * 0.2 + 0.3 * 0.6 + 0.8 * -0.3, abs_tol=1e-15)
    sigmoid = [1 / (1 + math.exp(-v)) for v in hand["v_in1"]]
    y_hat = 1 / (1 + math.exp(-(0.7 * sigmoid[0] - 0.2 * sigmoid[1])))
    assert math.isclose(hand["y_hat"][0], y_hat, rel_tol=1e-14)
    assert math.isclose(hand["delta2"][0], (1 - y_hat) * y_hat * (1 - y_hat), rel_tol=1e-14)
    for who in ("torchbp", "autograd"):
        assert data["results"][who].keys() == hand.keys()


def test_worked_example_takes_other_numbers() -> None:
    result = _run(str(SCRIPTS / "worked_example.py"), "--x", "1,0,1", "--w12", "0.3;0.9", "--y", "0", "--lr", "0.1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "x = [1.0, 0.0, 1.0], y = 0.0, η = 0.1" in result.stdout


def test_xor_demo_loss_falls() -> None:
    result = _run(str(SCRIPTS / "train_xor.py"), "--steps", "500")
    assert result.returncode == 0, result.stderr
    costs = [float(line.split()[-1]) for line in result.stdout.splitlines() if line.startswith("step")]
    assert len(costs) == 11 and costs[-1] < costs[0] / 10


def test_overhead_contenders_take_the_same_step() -> None:
    contenders, models = _script("overhead").steps(lr=0.5)
    for parts in contenders.values():
        for _ in range(3):
            for part in parts:
                part()
    native = [p.detach() for p in models["native"].parameters()]
    for name in ("torchbp", "hand-specialised"):
        for ours, theirs in zip(models[name].parameters(), native):
            torch.testing.assert_close(ours.detach(), theirs, rtol=1e-5, atol=1e-6)
    assert models["torchbp"].layers[0].weight.grad is not None


def test_overhead_report_runs() -> None:
    result = _run(str(SCRIPTS / "overhead.py"), "--steps", "4", "--repeats", "1", "--threads", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line.split()[0] for line in result.stdout.splitlines()[2:]]
    assert rows == ["native", "torchbp", "hand-specialised"]


@pytest.mark.parametrize("case", ["64-30-10 sigmoid b10", "784-256-256-10 relu b64", "16-32-8 relu b8"])
def test_layers_only_floor_contenders_train_alike(case: str) -> None:
    floor = _script("layers_only_floor")
    chosen = next(c for c in floor.LAYERS_ONLY_CASES + floor.QUICK_LAYERS_ONLY_CASES if c.name == case)
    models = floor.contenders(chosen)
    x, y = floor._layers_only_batch(chosen, torch.device("cpu"))
    loss = torch.nn.CrossEntropyLoss()
    for model in models.values():
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
        for _ in range(3):
            optimizer.zero_grad()
            loss(model(x), y).backward()
            optimizer.step()
    native = [p.detach() for p in models["native"].parameters()]
    for name in ("converted", "mlp", "bare node"):
        for ours, theirs in zip(models[name].parameters(), native, strict=True):
            torch.testing.assert_close(ours.detach(), theirs, rtol=1e-4, atol=1e-5, msg=name)
    assert not torch.equal(native[0], floor.contenders(chosen)["native"][0].weight.detach())


def test_layers_only_floor_report_runs() -> None:
    result = _run(str(SCRIPTS / "layers_only_floor.py"), "--quick", "--repeats", "1", "--target-ms", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line.split()[-4] for line in result.stdout.splitlines()[2:]]
    assert rows == ["native", "converted", "mlp", "node"]


def test_per_example_bench_reports_every_row() -> None:
    result = _run(str(SCRIPTS / "per_example_bench.py"), "--rounds", "2", "--steps", "1", "--batch", "4")
    assert result.returncode == 0, result.stdout + result.stderr
    for row in ("baseline", "torchbp norm", "torchbp grad", "torchbp all four", "write floor"):
        assert row in result.stdout, row


def test_per_example_bench_runs_on_the_device_asked_for(device: str) -> None:
    result = _run(
        str(SCRIPTS / "per_example_bench.py"), "--rounds", "2", "--steps", "1", "--batch", "4", "--device", device
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f", {device}, " in result.stdout.splitlines()[0]


def test_per_example_bench_refuses_a_device_clock_it_cannot_read() -> None:
    result = _run(str(SCRIPTS / "per_example_bench.py"), "--device", "cuda", "--clock", "cpu")
    assert result.returncode == 2
    expected = "expected --clock wall" if torch.cuda.is_available() else "torch sees no CUDA device"
    assert expected in result.stderr
