"""Costs: every registered cost checked generically; the built-ins against torch.nn.functional."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as torch_F
from torch.autograd import gradcheck, gradgradcheck

import torchbp

COST_NAMES = [entry.name for entry in torchbp.list_costs()]


@pytest.mark.parametrize("name", COST_NAMES)
@pytest.mark.parametrize("n", [1, 6])
def test_every_cost_passes_gradcheck(name: str, n: int) -> None:
    cost = torchbp.get_cost(name)
    a, y = cost.spec.sample(n, torch.float64)
    a.requires_grad_()
    assert gradcheck(
        lambda a: cost(a, y), (a,), check_forward_ad=True, check_batched_grad=True, check_batched_forward_grad=True
    )
    assert gradgradcheck(lambda a: cost(a, y), (a,))


@pytest.mark.parametrize("name", COST_NAMES)
def test_every_gradient_matches_autograd_of_its_value(name: str) -> None:
    cost = torchbp.get_cost(name)
    a, y = cost.spec.sample(7, torch.float64)
    a.requires_grad_()
    (expected,) = torch.autograd.grad(cost.value(a, y).mean(), a)
    (explicit,) = torch.autograd.grad(cost(a, y), a)
    torch.testing.assert_close(explicit, expected, rtol=1e-12, atol=1e-12)


OPTION_CASES = [(name, {}) for name in COST_NAMES] + [
    ("quadratic", {"halved": False}),
    ("cross_entropy", {"label_smoothing": 0.1}),
]


@pytest.mark.parametrize(("name", "options"), OPTION_CASES, ids=[f"{n}{o or ''}" for n, o in OPTION_CASES])
@pytest.mark.parametrize("n", [1, 7])
def test_every_fast_mean_is_the_mean_of_the_values(name: str, options: dict, n: int) -> None:
    cost = torchbp.get_cost(name, **options)
    if cost.spec.mean is None:
        pytest.skip(f"{name} gives no mean of its own")
    samples = [cost.spec.sample(n, torch.float64)]
    if cost.spec.class_targets:  # class probabilities as well as indices
        samples.append((samples[0][0], torch.softmax(torch.randn_like(samples[0][0]), 1)))
    for a, y in samples:
        expected = cost.value(a, y).mean()
        torch.testing.assert_close(cost.mean(a, y), expected, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(cost(a, y), expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", COST_NAMES)
def test_every_cost_is_described(name: str) -> None:
    (entry,) = torchbp.list_costs(name)
    assert entry.kind == "cost" and len(entry.description) > 10 and entry.plugin


def _compare(ours: torch.Tensor, theirs: torch.Tensor, a: torch.Tensor, rtol: float = 1e-12) -> None:
    (grad_ours,) = torch.autograd.grad(ours, a)
    (grad_theirs,) = torch.autograd.grad(theirs, a)
    tolerance = {"rtol": 1e-5, "atol": 1e-6} if a.dtype == torch.float32 else {"rtol": rtol, "atol": 1e-14}
    torch.testing.assert_close(ours, theirs, **tolerance)
    torch.testing.assert_close(grad_ours, grad_theirs, **tolerance)


@pytest.mark.parametrize("shape", [(5,), (5, 3), (4, 2, 3)], ids=str)
def test_quadratic_and_mse(device: str, dtype: torch.dtype, shape: tuple[int, ...]) -> None:
    a = torch.randn(shape, dtype=dtype, device=device, requires_grad=True)
    y = torch.randn(shape, dtype=dtype, device=device)
    n = shape[0]
    _compare(torchbp.get_cost("quadratic")(a, y), 0.5 * ((a - y) ** 2).sum() / n, a)
    _compare(torchbp.get_cost("quadratic", halved=False)(a, y), ((a - y) ** 2).sum() / n, a)
    _compare(torchbp.get_cost("mse")(a, y), torch_F.mse_loss(a, y), a)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("targets", ["indices", "probabilities"])
def test_cross_entropy(device: str, dtype: torch.dtype, label_smoothing: float, targets: str) -> None:
    z = torch.randn(6, 5, dtype=dtype, device=device, requires_grad=True)
    if targets == "indices":
        y = torch.randint(0, 5, (6,), device=device)
    else:
        y = torch.softmax(torch.randn(6, 5, dtype=dtype, device=device), 1)
    ours = torchbp.get_cost("cross_entropy", label_smoothing=label_smoothing)(z, y)
    _compare(ours, torch_F.cross_entropy(z, y, label_smoothing=label_smoothing), z)


def test_cross_entropy_delta_is_softmax_minus_target() -> None:
    z = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 2, 1, 1])
    (delta,) = torch.autograd.grad(torchbp.get_cost("cross_entropy")(z, y), z)
    torch.testing.assert_close(delta * 4, torch.softmax(z, 1) - torch_F.one_hot(y, 3))


def test_binary_cross_entropies(device: str, dtype: torch.dtype) -> None:
    p = (0.05 + 0.9 * torch.rand(5, 3, dtype=dtype, device=device)).requires_grad_()
    z = torch.randn(5, 3, dtype=dtype, device=device, requires_grad=True)
    y = torch.rand(5, 3, dtype=dtype, device=device)
    _compare(torchbp.get_cost("binary_cross_entropy")(p, y), torch_F.binary_cross_entropy(p, y), p)
    _compare(
        torchbp.get_cost("binary_cross_entropy_with_logits")(z, y),
        torch_F.binary_cross_entropy_with_logits(z, y),
        z,
    )


def test_binary_cross_entropy_at_saturated_outputs_matches_torch() -> None:
    p = torch.tensor([[0.0, 1.0, 0.5]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([[1.0, 0.0, 1.0]], dtype=torch.float64)
    # torch's gradient floor 1e-12 is a float32 constant (relative error 4e-9) even in float64
    _compare(torchbp.get_cost("binary_cross_entropy")(p, y), torch_F.binary_cross_entropy(p, y), p, 1e-8)


@pytest.mark.parametrize(
    "name, options, a, y, error, words",
    [
        ("mse", {}, torch.randn(4, 3), torch.randn(4, 2), ValueError, ["target", "(4, 3)", "(4, 2)"]),
        (
            "quadratic",
            {},
            torch.randn(4, 3),
            torch.ones(4, 3, dtype=torch.long),
            TypeError,
            ["target", "floating-point"],
        ),
        ("cross_entropy", {}, torch.randn(4, 3), torch.tensor([0, 1, 3, 2]), ValueError, ["[0, 3)", "3"]),
        ("cross_entropy", {}, torch.randn(4, 3), torch.tensor([0, -1, 1, 2]), ValueError, ["[0, 3)", "-1"]),
        ("cross_entropy", {}, torch.randn(4, 3), torch.tensor([0, 1]), ValueError, ["(4,)", "(2)"]),
        ("cross_entropy", {}, torch.randn(4, 3), torch.rand(4, 2), ValueError, ["(4, 3)", "(4, 2)"]),
        ("cross_entropy", {}, torch.randn(4, 3), torch.full((4, 3), 1.5), ValueError, ["[0, 1]", "1.5"]),
        (
            "cross_entropy",
            {"label_smoothing": 2.0},
            torch.randn(4, 3),
            torch.tensor([0, 1, 1, 2]),
            ValueError,
            ["label_smoothing", "2.0"],
        ),
        (
            "binary_cross_entropy",
            {},
            torch.rand(4, 3),
            torch.full((4, 3), -0.5),
            ValueError,
            ["target", "[0, 1]", "-0.5"],
        ),
        (
            "binary_cross_entropy",
            {},
            torch.randn(4, 3) + 3,
            torch.rand(4, 3),
            ValueError,
            ["output", "[0, 1]"],
        ),
        (
            "binary_cross_entropy_with_logits",
            {},
            torch.randn(4, 3),
            torch.full((4, 3), 2.0),
            ValueError,
            ["target", "[0, 1]"],
        ),
        ("mse", {}, torch.tensor(1.0), torch.tensor(1.0), ValueError, ["output", "(n, *)"]),
    ],
)
def test_bad_targets_are_explained(name, options, a, y, error, words) -> None:
    with pytest.raises(error) as raised:
        torchbp.get_cost(name, **options)(a, y)
    for word in words:
        assert word in str(raised.value)


def test_unknown_cost_and_option_are_explained() -> None:
    with pytest.raises(ValueError, match="unknown cost 'msee'; registered costs: .*mse.*quadratic"):
        torchbp.get_cost("msee")
    with pytest.raises(TypeError, match="unknown option.*reduction.*accepted: label_smoothing=0.0"):
        torchbp.get_cost("cross_entropy", reduction="sum")


def test_float_targets_follow_the_output_dtype() -> None:
    a = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    cost = torchbp.get_cost("mse")(a, torch.zeros(3, 2))
    assert cost.dtype == torch.float64


EXTREMES = [
    (
        "cross_entropy",
        [[1000.0, 0.0, -1000.0], [0.0, 800.0, 0.0]],
        [2, 0],
        lambda z, y: torch_F.cross_entropy(z, y, reduction="none"),
    ),
    (
        "binary_cross_entropy",
        [[0.0, 1.0, 0.5], [1.0, 0.0, 1e-300]],
        [[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]],
        lambda a, y: torch_F.binary_cross_entropy(a, y, reduction="none").mean(1),
    ),
    (
        "binary_cross_entropy_with_logits",
        [[1000.0, -1000.0, 0.0], [800.0, -800.0, 50.0]],
        [[0.0, 1.0, 0.5], [1.0, 0.0, 0.0]],
        lambda z, y: torch_F.binary_cross_entropy_with_logits(z, y, reduction="none").mean(1),
    ),
]


@pytest.mark.parametrize("name, a, y, reference", EXTREMES, ids=[case[0] for case in EXTREMES])
def test_per_example_values_at_extreme_outputs_are_torchs(name: str, a: list, y: list, reference) -> None:
    # saturated outputs and huge logits: a naive log(softmax(z)), log(a) or log(1 + exp(z)) is ±inf there
    a = torch.tensor(a, dtype=torch.float64)
    y = torch.tensor(y, dtype=torch.float64 if isinstance(y[0], list) else torch.long)
    value = torchbp.get_cost(name).value(a, y)
    assert bool(torch.isfinite(value).all())
    torch.testing.assert_close(value, reference(a, y), rtol=1e-12, atol=1e-12)
