"""Batch normalisation: the fused kernel against the written equations, the functional op and the
twin modules against torch's (outputs, gradients, double backward, forward AD, running statistics
over several steps), and the errors for bad input."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor

import torchbp
from torchbp.derivatives.batchnorm import BatchNorm
from torchbp.functional.batchnorm import batch_norm
from torchbp.nn.batchnorm import BatchNorm1d, BatchNorm2d

SHAPES = [(5, 3), (2, 3, 4), (2, 3, 3, 2)]
SHAPE_IDS = ["(N, C)", "(N, C, L)", "(N, C, H, W)"]


def _vectors(channels: int, affine: bool, dtype: torch.dtype, device: str) -> tuple[Tensor | None, ...]:
    """γ, β (``None`` unless ``affine``), running mean and running variance, all random."""
    weight = torch.randn(channels, dtype=dtype, device=device) if affine else None
    bias = torch.randn(channels, dtype=dtype, device=device) if affine else None
    running_mean = torch.randn(channels, dtype=dtype, device=device)
    running_var = torch.rand(channels, dtype=dtype, device=device) + 0.5
    return weight, bias, running_mean, running_var


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "not affine"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_fused_kernel_is_the_written_equations(
    device: str, shape: tuple[int, ...], affine: bool, training: bool
) -> None:
    x = torch.randn(shape, dtype=torch.float64, device=device)
    weight, bias, running_mean, running_var = _vectors(shape[1], affine, torch.float64, device)
    params = (weight, bias, None, None) if training else (weight, bias, running_mean, running_var)
    derivatives = BatchNorm(training, 1e-3)
    z, buffers = derivatives.forward(x, *params)
    saved = derivatives.save(x, params, z, buffers, (True,) * 5)
    delta = torch.randn_like(x)
    needs = (affine, affine, not training, not training)
    with torch.no_grad():  # no double backward being recorded: ATen's native_batch_norm_backward
        kernel = (derivatives.input_vjp(delta, saved), *derivatives.param_vjps(delta, saved, needs))
    with torch.enable_grad():  # a double backward being recorded: the written-out equations
        equations = (derivatives.input_vjp(delta, saved), *derivatives.param_vjps(delta, saved, needs))
    for name, ours, reference in zip(("x", "weight", "bias", "running_mean", "running_var"), kernel, equations):
        assert (ours is None) == (reference is None), name
        if ours is not None:
            torch.testing.assert_close(ours, reference, rtol=1e-12, atol=1e-12, msg=lambda m, n=name: f"{n}: {m}")


def _kernel_calls(create_graph: bool) -> int:
    x = torch.randn(4, 3, 2, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, dtype=torch.float64, requires_grad=True)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        z = batch_norm(x, None, None, weight, None, training=True)
        torch.autograd.grad(z, (x, weight), torch.randn_like(z), create_graph=create_graph)
    return sum(event.count for event in profile.key_averages() if event.key == "aten::native_batch_norm_backward")


def test_the_kernel_runs_unless_a_double_backward_is_recorded() -> None:
    assert _kernel_calls(create_graph=False) > 0
    assert _kernel_calls(create_graph=True) == 0


def _leaves(*tensors: Tensor | None) -> list[Tensor | None]:
    return [None if t is None else t.detach().clone().requires_grad_() for t in tensors]


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "not affine"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_batch_norm_equals_torch(
    device: str, dtype: torch.dtype, shape: tuple[int, ...], affine: bool, training: bool
) -> None:
    tolerance = {"rtol": 1e-10, "atol": 1e-10} if dtype == torch.float64 else {}
    x = torch.randn(shape, dtype=dtype, device=device)
    weight, bias, running_mean, running_var = _vectors(shape[1], affine, dtype, device)
    ours, theirs = _leaves(x, weight, bias), _leaves(x, weight, bias)
    stats_ours = [running_mean.clone(), running_var.clone()]  # type: ignore[union-attr]
    stats_theirs = [running_mean.clone(), running_var.clone()]  # type: ignore[union-attr]
    z_ours = batch_norm(ours[0], *stats_ours, ours[1], ours[2], training, 0.3, 1e-3)  # type: ignore[arg-type]
    z_theirs = torch.nn.functional.batch_norm(theirs[0], *stats_theirs, theirs[1], theirs[2], training, 0.3, 1e-3)  # type: ignore[arg-type]
    torch.testing.assert_close(z_ours, z_theirs, **tolerance)
    for a, b in zip(stats_ours, stats_theirs):
        torch.testing.assert_close(a, b, **tolerance)
    delta = torch.randn_like(z_theirs)
    grads_ours = torch.autograd.grad(z_ours, [t for t in ours if t is not None], delta)
    grads_theirs = torch.autograd.grad(z_theirs, [t for t in theirs if t is not None], delta)
    for a, b in zip(grads_ours, grads_theirs):
        torch.testing.assert_close(a, b, **tolerance)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_double_backward_equals_torch(device: str, training: bool) -> None:
    x = torch.randn(3, 2, 4, dtype=torch.float64, device=device)
    weight, bias, running_mean, running_var = _vectors(2, True, torch.float64, device)
    delta, v = torch.randn_like(x), torch.randn_like(x)
    results = []
    for function in (batch_norm, torch.nn.functional.batch_norm):
        leaves = _leaves(x, weight, bias)
        z = function(leaves[0], running_mean.clone(), running_var.clone(), leaves[1], leaves[2], training)  # type: ignore[operator, union-attr]
        grad_x, grad_weight = torch.autograd.grad(z, leaves[:2], delta, create_graph=True)  # type: ignore[arg-type]
        # the Hessian-vector products of ⟨∂C/∂x, v⟩ + Σ ∂C/∂γ
        results.append(torch.autograd.grad((grad_x * v).sum() + grad_weight.sum(), leaves, allow_unused=True))  # type: ignore[arg-type]
    for ours, theirs in zip(*results):
        if theirs is None:
            assert ours is None or torch.count_nonzero(ours) == 0
        else:
            torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_forward_ad_equals_torch(device: str, training: bool) -> None:
    x = torch.randn(4, 3, 2, 2, dtype=torch.float64, device=device)
    weight, bias, running_mean, running_var = _vectors(3, True, torch.float64, device)
    tangents = (torch.randn_like(x), torch.randn_like(weight), torch.randn_like(bias))  # type: ignore[arg-type]

    def ours(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        return batch_norm(
            x, None if training else running_mean, None if training else running_var, weight, bias, training
        )

    def theirs(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        return torch.nn.functional.batch_norm(x, running_mean, running_var, weight, bias, training)

    _, z_t_ours = torch.func.jvp(ours, (x, weight, bias), tangents)
    _, z_t_theirs = torch.func.jvp(theirs, (x, weight, bias), tangents)
    torch.testing.assert_close(z_t_ours, z_t_theirs, rtol=1e-10, atol=1e-10)


MODULES = [
    (torch.nn.BatchNorm1d, (8, 3), {}),
    (torch.nn.BatchNorm1d, (4, 3, 5), {"momentum": None}),
    (torch.nn.BatchNorm1d, (4, 3, 5), {"affine": False}),
    (torch.nn.BatchNorm2d, (4, 3, 3, 3), {}),
    (torch.nn.BatchNorm2d, (2, 3, 4, 4), {"momentum": None, "eps": 1e-3}),
    (torch.nn.BatchNorm2d, (2, 3, 4, 4), {"track_running_stats": False}),
]


@pytest.mark.parametrize(
    ("cls", "shape", "options"), MODULES, ids=lambda v: v.__name__ if isinstance(v, type) else str(v)
)
def test_several_train_steps_then_eval_equal_torch(
    dtype: torch.dtype, cls: type[torch.nn.Module], shape: tuple[int, ...], options: dict[str, object]
) -> None:
    tolerance = {"rtol": 1e-10, "atol": 1e-10} if dtype == torch.float64 else {}
    theirs = cls(shape[1], dtype=dtype, **options)
    ours = torchbp.nn.convert(copy.deepcopy(theirs))
    assert type(ours) in (BatchNorm1d, BatchNorm2d)
    for step, training in enumerate((True, True, True, False, True, False)):
        ours.train(training)
        theirs.train(training)
        x = 2 * torch.randn(shape, dtype=dtype) + step
        x_ours, x_theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
        z_ours, z_theirs = ours(x_ours), theirs(x_theirs)
        torch.testing.assert_close(z_ours, z_theirs, **tolerance)
        delta = torch.randn_like(z_theirs)
        z_ours.backward(delta)
        z_theirs.backward(delta)
        torch.testing.assert_close(x_ours.grad, x_theirs.grad, **tolerance)
        for p_ours, p_theirs in zip(ours.parameters(), theirs.parameters()):
            torch.testing.assert_close(p_ours.grad, p_theirs.grad, **tolerance)
        for (name, b_ours), b_theirs in zip(ours.named_buffers(), theirs.buffers()):
            torch.testing.assert_close(
                b_ours, b_theirs, **tolerance, msg=lambda m, n=name, s=step: f"step {s}, {n}: {m}"
            )
        ours.zero_grad()
        theirs.zero_grad()


def test_delta_hook_gets_the_delta_whose_sum_is_the_bias_gradient() -> None:
    layer = BatchNorm2d(3)
    seen: list[Tensor] = []
    layer.register_delta_hook(lambda module, delta: seen.append(delta))
    x = torch.randn(4, 3, 2, 2)
    layer(x).pow(2).sum().backward()
    assert len(seen) == 1 and seen[0].shape == x.shape
    assert layer.bias.grad is not None
    torch.testing.assert_close(seen[0].sum((0, 2, 3)), layer.bias.grad)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (
            lambda: BatchNorm1d(3)(torch.randn(1, 3)),
            ValueError,
            r"Expected more than 1 value per channel when training",
        ),
        (lambda: BatchNorm2d(3)(torch.randn(1, 3, 1, 1)), ValueError, r"more than 1 value per channel"),
        (lambda: BatchNorm2d(3)(torch.randn(2, 3, 4)), ValueError, r"expected 4D input \(got 3D input\)"),
        (lambda: BatchNorm1d(3)(torch.randn(2, 3, 4, 4)), ValueError, r"expected 2D or 3D input \(got 4D input\)"),
        (
            lambda: BatchNorm2d(3)(torch.randn(2, 4, 3, 3)),
            ValueError,
            r"input: expected 3 channels in dim 1 \(BatchNorm2d\(num_features=3\)\), got shape \(2, 4, 3, 3\)",
        ),
        (
            lambda: BatchNorm1d(3, affine=False)(torch.randn(2, 3, dtype=torch.float64)),
            TypeError,
            r"input: expected dtype torch.float32 or float16/bfloat16 \(the layer's\), got torch.float64",
        ),
        (
            lambda: batch_norm(torch.randn(2, 4, 3, 3), torch.zeros(3), torch.ones(3)),
            ValueError,
            r"running_mean: expected shape \(4,\), one value per channel of input of shape \(2, 4, 3, 3\).*got \(3\)",
        ),
        (
            lambda: batch_norm(torch.randn(4, 3), None, None, torch.ones(2), training=True),
            ValueError,
            r"weight: expected shape \(3,\).*got \(2\)",
        ),
        (
            lambda: batch_norm(torch.randn(4, 3, dtype=torch.float64), None, None, torch.ones(3), training=True),
            TypeError,
            r"weight: expected dtype torch.float64 \(the dtype of input\), got torch.float32",
        ),
        (
            lambda: batch_norm(torch.randn(4), None, None, training=True),
            ValueError,
            r"input: expected .*\(N, C, \*\).*got \(4\)",
        ),
        (
            lambda: batch_norm([1.0, 2.0], None, None, training=True),
            TypeError,
            r"input: expected a torch.Tensor, got list",
        ),  # type: ignore[arg-type]
        (lambda: batch_norm(torch.randn(4, 3), None, None), ValueError, r"running_mean, running_var: expected both"),
        (
            lambda: batch_norm(torch.randn(4, 3), None, None, training=True, eps=0.0),
            ValueError,
            r"eps must be positive",
        ),
    ],
    ids=[
        "one value per channel (N, C)",
        "one value per channel 2d",
        "3-D input to BatchNorm2d",
        "4-D input to BatchNorm1d",
        "channels",
        "dtype",
        "running statistics' shape",
        "weight shape",
        "weight dtype",
        "1-D input",
        "not a tensor",
        "eval without running statistics",
        "eps 0 in training",
    ],
)
def test_bad_input_is_explained(call, error: type[Exception], match: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("momentum", [0.1, None], ids=["momentum 0.1", "cumulative"])
@pytest.mark.parametrize("chained", [False, True], ids=["own call", "in a chain"])
@pytest.mark.parametrize(
    "bad",
    [torch.randn(8, 5, 3, 3), torch.randn(8, 4, 3, 3, dtype=torch.float64), torch.randn(1, 4, 1, 1)],
    ids=["channels", "dtype", "one value per channel"],
)
def test_a_refused_batch_changes_nothing(momentum: float | None, chained: bool, bad: Tensor) -> None:
    # the batch is counted (and the running statistics moved) only once it has passed every check,
    # so the next batches average as if the refused one never came
    native = torch.nn.Sequential(torch.nn.BatchNorm2d(4, momentum=momentum), torch.nn.ReLU())
    ours = torchbp.nn.convert(copy.deepcopy(native))
    model = ours if chained else ours[0]
    batches = [torch.randn(8, 4, 3, 3) + k for k in range(3)]
    model(batches[0])
    with pytest.raises((ValueError, TypeError)):
        model(bad)
    for x in batches[1:]:
        model(x)
    for x in batches:
        native(x)
    for (name, a), b in zip(ours.named_buffers(), native.buffers()):
        torch.testing.assert_close(a, b, msg=name)


def test_torch_raises_the_same_errors_for_one_value_per_channel_and_wrong_dims() -> None:
    for cls, shape in ((torch.nn.BatchNorm1d, (1, 3)), (torch.nn.BatchNorm2d, (2, 3, 4))):
        ours, theirs = torchbp.nn.convert(cls(3)), cls(3)
        with pytest.raises(ValueError) as raised_ours:
            ours(torch.randn(shape))
        with pytest.raises(ValueError) as raised_theirs:
            theirs(torch.randn(shape))
        assert str(raised_ours.value) == str(raised_theirs.value)


def test_samples_cover_every_setting() -> None:
    samples = BatchNorm.samples(torch.float64, "cpu")
    assert {s.derivatives.training for s in samples} == {True, False}  # type: ignore[attr-defined]
    assert {s.params[0] is None for s in samples} == {True, False}
    assert {s.x.dim() for s in samples} == {2, 3, 4}
    assert any(not s.x.is_contiguous() for s in samples)
    assert any(s.x.shape[0] == 2 for s in samples)
    assert all(isinstance(s.derivatives, BatchNorm) for s in samples)


def test_an_empty_batch_in_training_gives_an_empty_output_and_leaves_the_statistics_alone() -> None:
    native = torch.nn.BatchNorm2d(3)
    ours = torchbp.nn.convert(copy.deepcopy(native))
    x = torch.randn(0, 3, 4, 4, requires_grad=True)
    out = ours(x)
    assert out.shape == native(x).shape == (0, 3, 4, 4)
    out.sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape
    torch.testing.assert_close(ours.weight.grad, torch.zeros(3))
    torch.testing.assert_close(ours.running_mean, native.running_mean)
    torch.testing.assert_close(ours.running_var, native.running_var)


SETTINGS = [
    ((1, 3, 4), True, 1e-5),
    ((1, 2, 3, 3), True, 1e-5),
    ((2, 3, 4), True, 0.5),
    ((5, 3), False, 0.5),
    ((2, 3, 4), False, 1e-2),
]


@pytest.mark.parametrize(("shape", "training", "eps"), SETTINGS, ids=str)
def test_functional_batch_norm_equals_torch_for_each_setting(
    device: str, shape: tuple[int, ...], training: bool, eps: float
) -> None:
    x = torch.randn(shape, dtype=torch.float64, device=device)
    weight, bias, running_mean, running_var = _vectors(shape[1], True, torch.float64, device)
    leaves = _leaves(x, weight, bias)
    results = []
    for function in (batch_norm, torch.nn.functional.batch_norm):
        stats = (running_mean.clone(), running_var.clone())
        z = function(leaves[0], *stats, *leaves[1:], training, 0.1, eps)  # type: ignore[operator]
        results.append((z, *torch.autograd.grad(z, leaves, z.detach() + 1), *stats))  # type: ignore[arg-type]
    for ours, theirs in zip(*results):
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize(
    "wanted",
    [(True, False, False), (False, True, False), (False, False, True), (False, True, True)],
    ids=["input", "weight", "bias", "weight and bias"],
)
def test_any_subset_of_gradients_equals_torch(device: str, training: bool, wanted: tuple[bool, ...]) -> None:
    x = torch.randn(4, 3, 5, dtype=torch.float64, device=device)
    weight, bias, running_mean, running_var = _vectors(3, True, torch.float64, device)
    leaves = [t.requires_grad_(w) for t, w in zip((x, weight, bias), wanted)]  # type: ignore[union-attr]
    moving = [t for t in leaves if t.requires_grad]
    delta = torch.randn_like(x)
    results = []
    for function in (batch_norm, torch.nn.functional.batch_norm):
        z = function(leaves[0], running_mean.clone(), running_var.clone(), *leaves[1:], training)  # type: ignore[operator]
        results.append(torch.autograd.grad(z, moving, delta))
    for ours, theirs in zip(*results):
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)
