"""The benchmark runs (at tiny size) and reports what it promises; no timing is asserted."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

import torchbp
from torchbp.benchmark import (
    DROP_IN_CASES,
    QUICK_CASES,
    QUICK_DROP_IN_CASES,
    DropInCase,
    NielsenNetwork,
    NumpyNet,
    format_report,
)
from torchbp.cli import main


def test_quick_benchmark_reports_every_contender(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--repeats", "2", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["machine"]["torch"] == torch.__version__ and report["machine"]["threads"] >= 1
    assert [case["case"] for case in report["cases"]] == [case.name for case in QUICK_CASES]
    for case in report["cases"]:
        assert set(case["median_us"]) == {"native", "torchbp", "graph-free", "numpy"}
        assert all(value > 0 for value in case["median_us"].values())
        assert case["ratio_to_native"]["native"] == 1.0
        assert case["saved_bytes"]["torchbp"] <= case["saved_bytes"]["native"]
    assert "step_over_matmul" in report["cases"][-1]["roofline"]
    assert [case["case"] for case in report["drop_in"]] == [case.name for case in QUICK_DROP_IN_CASES]
    for case in report["drop_in"]:
        medians = case["median_us"]
        assert set(medians) == {"native", "torchbp"} and all(value > 0 for value in medians.values())
        assert case["ratio_to_native"] == pytest.approx(medians["torchbp"] / medians["native"])
    table = capsys.readouterr().out
    assert table == format_report(report) + "\n"
    assert "| 3-2-1 (seeds) |" in table


def test_numpy_contender_does_the_same_step() -> None:
    torch.manual_seed(0)
    model = torchbp.nn.MLP([3, 2, 1], bias=False).double()
    net = NumpyNet(model, "sigmoid")
    x, y = torch.rand(4, 3, dtype=torch.float64), torch.rand(4, 1, dtype=torch.float64)
    rule = torchbp.create_rule("sgd", model.parameters(), lr=0.5)
    cost = net.step(x.numpy(), y.numpy(), 0.5)
    loss = torchbp.get_cost("quadratic")(model(x), y)
    loss.backward()
    rule.step()
    assert cost == pytest.approx(loss.item(), rel=1e-12)
    for ours, theirs in zip(model.layers, net.weights):
        assert ours.weight.detach().numpy() == pytest.approx(theirs, rel=1e-12)


def test_network_py_contender_does_the_same_step() -> None:
    torch.manual_seed(0)
    model = torchbp.nn.MLP([4, 3, 2]).double()
    weights = [d.weight.detach().numpy().copy() for d in model.dense_layers]
    biases = [d.bias.detach().numpy().copy()[:, None] for d in model.dense_layers]
    nielsen = NielsenNetwork(weights, biases)
    x, y = torch.rand(5, 4, dtype=torch.float64), torch.rand(5, 2, dtype=torch.float64)
    nielsen.update_mini_batch([(xk.numpy()[:, None], yk.numpy()[:, None]) for xk, yk in zip(x, y)], 3.0)
    rule = torchbp.create_rule("sgd", model.parameters(), lr=3.0)
    torchbp.get_cost("quadratic")(model(x), y).backward()
    rule.step()
    for dense, w, b in zip(model.dense_layers, nielsen.weights, nielsen.biases):
        assert dense.weight.detach().numpy() == pytest.approx(w, rel=1e-12)
        assert dense.bias.detach().numpy() == pytest.approx(b[:, 0], rel=1e-12)


def test_bench_refuses_a_missing_gpu(capsys: pytest.CaptureFixture[str]) -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert main(["bench", "--quick", "--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


@pytest.mark.parametrize("case", DROP_IN_CASES, ids=lambda case: case.name)
def test_drop_in_contenders_take_the_same_step(case: DropInCase) -> None:
    torch.manual_seed(0)
    native = case.build().double()
    ours = torchbp.nn.convert(copy.deepcopy(native))
    assert torchbp.nn.conversion(ours).native == {}  # every layer of the user's model is explicit
    x = torch.rand(4, *case.input_shape, dtype=torch.float64)
    y = torch.randint(case.classes, (4,))
    for model in (native, ours):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        for _ in range(2):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
    for a, b in zip(native.parameters(), ours.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-10)
