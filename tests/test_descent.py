"""torchbp.descent: gradient descent on any f, with any registered update rule."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import torchbp
from torchbp.descent import bowl, minimize, rosenbrock, two_minima

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def test_sgd_on_a_bowl_follows_the_closed_form() -> None:
    # f(x) = ½ xᵀAx, so x′ = x − ηAx and xₖ = (I − ηA)ᵏ x₀
    a = torch.tensor([[1.0, 0.5], [0.5, 3.0]], dtype=torch.float64)
    x0 = torch.tensor([2.0, -1.0], dtype=torch.float64)
    path = minimize(bowl, x0, lr=0.2, steps=30)
    step = torch.eye(2, dtype=torch.float64) - 0.2 * a
    expected = torch.stack([torch.linalg.matrix_power(step, k) @ x0 for k in range(31)])
    torch.testing.assert_close(path.points, expected, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(path.values, torch.stack([bowl(p) for p in expected]))


@pytest.mark.parametrize(
    "name", [entry.name for entry in torchbp.list_rules() if not getattr(entry.spec.optimizer, "per_example", ())]
)
def test_every_registered_rule_converges_on_the_bowl(name: str) -> None:
    lr = {"sgd": 0.2, "adadelta": 1.0, "lion": 0.01}.get(name, 0.05)
    path = minimize(bowl, [2.0, -1.0], rule=name, lr=lr, steps=1000)
    assert path.values[-1] < 1e-2 * path.values[0]


def test_univariate_and_the_other_functions() -> None:
    path = minimize(lambda x: (x - 3) ** 2, 0.0, lr=0.25, steps=3)
    assert path.points.tolist() == [0.0, 1.5, 2.25, 2.625]
    assert minimize(rosenbrock, [-1.0, 1.0], rule="adam", lr=0.05, steps=2000).values[-1] < 1e-2
    left = minimize(two_minima, [-0.5, 1.0], lr=0.05, steps=300).points[-1]
    right = minimize(two_minima, [0.5, 1.0], lr=0.05, steps=300).points[-1]
    assert left[0] < -0.9 and right[0] > 0.8  # each start finds its own valley


def test_a_rule_that_needs_examples_is_refused() -> None:
    with pytest.raises(ValueError, match="rule 'dp_sgd' steps on per-example gradients"):
        minimize(bowl, [2.0, -1.0], rule="dp_sgd", steps=1)


def test_bad_functions_are_explained() -> None:
    with pytest.raises(ValueError, match=r"f: expected a scalar value, got \(2,\)"):
        minimize(lambda x: x * 2, [1.0, 2.0])
    with pytest.raises(ValueError, match="unknown rule"):
        minimize(bowl, [1.0, 1.0], rule="nope")


def test_plot_script_writes_a_png(tmp_path: Path) -> None:
    out = tmp_path / "descent.png"
    logdir = tmp_path / "runs"
    result = subprocess.run(
        [
            sys.executable,
            str(SCRIPTS / "plot_descent.py"),
            "--rules",
            "sgd,adam",
            "--out",
            str(out),
            "--logdir",
            str(logdir),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    univariate = out.with_name("descent-univariate.png")
    assert univariate.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list(logdir.rglob("events.out.tfevents.*"))


def test_zero_steps_give_the_start_alone() -> None:
    path = minimize(bowl, [1.0, 2.0], steps=0)
    assert path.points.tolist() == [[1.0, 2.0]] and path.values.tolist() == [7.5]


@pytest.mark.parametrize(
    "x0, expected", [(0, [0.0, 1.5, 2.25]), ([0], [[0.0], [1.5], [2.25]])], ids=["int", "int-list"]
)
def test_an_integer_start_descends_in_floats(x0: object, expected: list) -> None:
    path = minimize(lambda x: ((x - 3) ** 2).sum(), x0, lr=0.25, steps=2)
    assert path.points.dtype == torch.get_default_dtype() and path.points.tolist() == expected


@pytest.mark.parametrize(
    "rule, optimizer, hyperparameters",
    [
        ("sgd", torch.optim.SGD, {"momentum": 0.9, "nesterov": True}),
        ("adam", torch.optim.Adam, {"betas": (0.8, 0.9), "eps": 1e-3}),
        ("rmsprop", torch.optim.RMSprop, {"alpha": 0.5}),
    ],
)
def test_the_rules_hyperparameters_reach_it(rule: str, optimizer: type, hyperparameters: dict) -> None:
    x0 = torch.tensor([2.0, -1.0], dtype=torch.float64)
    path = minimize(bowl, x0, rule=rule, lr=0.05, steps=20, **hyperparameters)
    x = x0.clone().requires_grad_()
    oracle = optimizer([x], lr=0.05, **hyperparameters)
    expected = [x.detach().clone()]
    for _ in range(20):
        oracle.zero_grad()
        bowl(x).backward()
        oracle.step()
        expected.append(x.detach().clone())
    torch.testing.assert_close(path.points, torch.stack(expected), rtol=1e-12, atol=1e-14)
    assert path.rule == rule and path.hyperparameters == {"lr": 0.05, **hyperparameters}


@pytest.mark.parametrize(
    "f, x, value",
    [
        (bowl, [1.0, 2.0], 7.5),  # ½ (1 + 2 · 0.5 · 2 + 3 · 4)
        (rosenbrock, [1.0, 1.0], 0.0),
        (rosenbrock, [0.0, 0.0], 1.0),
        (rosenbrock, [2.0, 1.0], 901.0),  # 1 + 100 · (1 − 4)²
        (two_minima, [1.0, 0.0], 0.3),
        (two_minima, [-1.0, 0.0], -0.3),
        (two_minima, [0.0, 2.0], 5.0),  # 1 + 4
    ],
)
def test_the_example_functions_values(f: object, x: list[float], value: float) -> None:
    assert f(torch.tensor(x, dtype=torch.float64)).item() == pytest.approx(value, abs=1e-12)  # type: ignore[operator]
