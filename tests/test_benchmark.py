"""The benchmark runs (at tiny size) and reports what it promises; no timing is asserted."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import torchbp
from torchbp.benchmark import (
    CASES,
    LAYERS_ONLY_CASES,
    OPTIMIZERS,
    QUICK_CASES,
    QUICK_LAYERS_ONLY_CASES,
    LayersOnlyCase,
    NielsenNetwork,
    NumpyNet,
    format_report,
    interleave,
    layers_only_contenders,
    run_layers_only,
    select_cases,
    summarise,
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
    assert [case["case"] for case in report["layers_only"]] == [case.name for case in QUICK_LAYERS_ONLY_CASES]
    assert report["optimizers"] == {key: label for key, (label, _) in OPTIMIZERS.items()}
    for case in report["layers_only"]:
        mlp = "mlp" in case["contenders"]
        assert case["contenders"] == ["native", "converted", "mlp"] if mlp else ["native", "converted"]
        assert [(g["optimizer"], g["mode"]) for g in case["groups"]] == [("sgd", "eager"), ("adam", "eager")]
        assert "compile_skipped" in case  # the quick cases compile only when asked to
        for group in case["groups"]:
            medians, times = group["median_us"], group["times_us"]
            assert set(medians) == set(case["contenders"]) and all(value > 0 for value in medians.values())
            assert all(len(values) == 2 for values in times.values())
            for name in case["contenders"]:
                assert group["ratio_of_medians"][name] == pytest.approx(medians[name] / medians["native"])
                rounds = sorted(t / n for t, n in zip(times[name], times["native"]))
                assert group["median_round_ratio"][name] == pytest.approx((rounds[0] + rounds[1]) / 2)
    table = capsys.readouterr().out
    assert table == format_report(report) + "\n"
    assert "| 3-2-1 (seeds) |" in table
    assert table.index("layers only") < table.index("full torchbp stack") < table.index("| 3-2-1 (seeds) |")


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


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
@pytest.mark.parametrize("case", LAYERS_ONLY_CASES, ids=lambda case: case.name)
def test_layers_only_contenders_take_the_same_step(case: LayersOnlyCase, optimizer: str) -> None:
    models = layers_only_contenders(case, torch.device("cpu"))
    assert list(models) == (["native", "converted", "mlp"] if case.mlp else ["native", "converted"])
    assert torchbp.nn.conversion(models["converted"]).native == {}  # every layer of the user's model is explicit
    x = torch.rand(4, *case.input_shape, dtype=torch.float64)
    y = torch.randint(case.classes, (4,))
    for model in models.values():
        model.double()
        make = OPTIMIZERS[optimizer][1]
        step = make(model.parameters())
        for _ in range(2):
            step.zero_grad()
            torch.nn.CrossEntropyLoss()(model(x), y).backward()
            step.step()
    for name in ("converted", "mlp") if case.mlp else ("converted",):
        for a, b in zip(models["native"].parameters(), models[name].parameters(), strict=True):
            torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-10)


def test_interleave_times_each_contender_once_per_round() -> None:
    calls: list[tuple[str, int]] = []
    contenders = {name: (lambda name=name: name) for name in ("native", "converted", "mlp")}
    clock = iter(range(1, 100))

    def timer(step: Callable[[], object], steps: int) -> float:
        calls.append((str(step()), steps))
        return float(next(clock))

    times = interleave(contenders, 7, 3, timer)  # type: ignore[arg-type]
    assert calls == [(name, 7) for _ in range(3) for name in ("native", "converted", "mlp")]
    assert times == {"native": [1.0, 4.0, 7.0], "converted": [2.0, 5.0, 8.0], "mlp": [3.0, 6.0, 9.0]}


def test_summarise_gives_the_ratio_of_medians_and_the_median_of_round_ratios() -> None:
    # native slows down in the last round (the machine drifts); converted keeps pace with it
    times = {"native": [100.0, 200.0, 300.0], "converted": [110.0, 240.0, 270.0]}
    summary = summarise(times)
    assert summary["median_us"] == {"native": 200.0, "converted": 240.0}
    assert summary["ratio_of_medians"] == {"native": 1.0, "converted": pytest.approx(1.2)}
    assert summary["median_round_ratio"] == {"native": 1.0, "converted": pytest.approx(1.1)}  # of 1.1, 1.2, 0.9


TINY = QUICK_LAYERS_ONLY_CASES[0]


def test_layers_only_compile_groups_and_compile_errors() -> None:
    def compiler(model: torch.nn.Module) -> torch.nn.Module:
        if isinstance(model, torchbp.nn.MLP):
            raise RuntimeError("backend failed\nsecond line of the trace")
        return model

    result = run_layers_only(TINY, torch.device("cpu"), 2, 1e-4, ["sgd", "adam"], True, compiler)
    modes = [(group["optimizer"], group["mode"]) for group in result["groups"]]
    assert modes == [("sgd", "eager"), ("adam", "eager"), ("sgd", "compile"), ("adam", "compile")]
    eager, compiled = result["groups"][0], result["groups"][2]
    assert set(eager["median_us"]) == {"native", "converted", "mlp"} and "errors" not in eager
    assert set(compiled["median_us"]) == {"native", "converted"}
    assert compiled["errors"] == {"mlp": "RuntimeError: backend failed\nsecond line of the trace"}
    assert set(compiled["compile_seconds"]) == {"native", "converted", "mlp"}  # compiled once, for the first group
    assert "compile_seconds" not in result["groups"][3]
    report = {"machine": {"processor": "x", "cpu_count": 2, "torch": "t", "threads": 2}, "device": "cpu"}
    report |= {"optimizers": {"sgd": "SGD", "adam": "Adam"}, "layers_only": [result], "cases": []}
    table = format_report(report)
    assert f"| {TINY.name} | compile | " in table and "failed [1]" in table
    assert "[1] compile, sgd, mlp: RuntimeError: backend failed\n" in table
    assert "[2] compile, adam, mlp: RuntimeError: backend failed\n" in table


def test_layers_only_table_cells() -> None:
    summary = summarise({"native": [100.0, 200.0, 300.0], "converted": [110.0, 240.0, 270.0]})
    group = {"optimizer": "sgd", "mode": "eager", **summary}
    result = {"case": "a case", "contenders": ["native", "converted"], "groups": [group]}
    report = {"machine": {"processor": "x", "cpu_count": 2, "torch": "t", "threads": 2}, "device": "cpu"}
    report |= {"optimizers": {"sgd": "SGD(lr=0.01, momentum=0.9)"}, "layers_only": [result], "cases": []}
    lines = format_report(report).splitlines()
    assert "| model | mode | sgd native µs | sgd converted |" in lines
    assert "| a case | eager | 200.0 | 240.0 (1.10×) |" in lines  # the median of round ratios, not 1.20


def test_select_cases_by_parts_of_names() -> None:
    layers_only, full_stack, end_to_end = select_cases(["784", "LENET"])
    assert [case.name for case in layers_only] == ["784-256-256-10 relu b64", "LeNet digits b64"]
    assert [case.name for case in full_stack] == [case.name for case in CASES if "784" in case.name]
    assert not end_to_end
    assert select_cases(["end to end"])[:2] == ([], [])
    assert select_cases(None, quick=True) == (QUICK_LAYERS_ONLY_CASES, QUICK_CASES, True)
    known = r".*'LeNet digits b64'.*'digits end to end'"
    with pytest.raises(
        ValueError, match=r"cases: 'resnett' is part of no case name; expected a part of one of " + known
    ):
        select_cases(["resnett"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--cases", "no such case"], "cases: 'no such case' is part of no case name"),
        (["--optimizers", "sgd,rmsprop"], "expected some of sgd, adam (comma-separated), got 'rmsprop'"),
        (["--cases", "784,"], "expected comma-separated parts of case names"),
        (["--no-compile", "--compile-all"], "not allowed with argument"),
    ],
)
def test_bench_options_refuse_bad_values(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    try:
        code = main(["bench", "--quick", *argv])
    except SystemExit as exit:
        code = exit.code
    assert code == 2
    assert message in capsys.readouterr().err
