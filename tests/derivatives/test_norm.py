"""Layer norm, RMS norm and embedding: the functional ops against torch's, ATen's fused layer-norm
backward against the written equations, and bad input."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as TF

import torchbp
import torchbp.functional as F
from torchbp.derivatives.norm import LayerNorm, LayerNormSaved

F64 = {"rtol": 1e-10, "atol": 1e-10}


def test_fused_layer_norm_backward_equals_the_equations() -> None:
    x = torch.randn(3, 4, 5, dtype=torch.float64)
    weight = torch.randn(4, 5, dtype=torch.float64)
    derivatives = LayerNorm(2, 1e-4)
    z, (mean, rstd) = derivatives.forward(x, weight, torch.randn(4, 5, dtype=torch.float64))
    saved = LayerNormSaved(x, weight, mean, rstd)
    delta = torch.randn_like(z)
    with torch.no_grad():
        fused = derivatives.vjps(delta, saved, (True, True, True))
    with torch.enable_grad():
        written = derivatives.vjps(delta, saved, (True, True, True))
    for a, b in zip(fused, written):
        assert a is not None and b is not None
        torch.testing.assert_close(a, b, **F64)


@pytest.mark.parametrize("eps", [None, 1e-3])
def test_rms_norm_equals_torch(eps: float | None) -> None:
    x = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    ours, theirs = F.rms_norm(x, (3, 4), weight, eps), TF.rms_norm(x, (3, 4), weight, eps)
    torch.testing.assert_close(ours, theirs, **F64)
    for a, b in zip(torch.autograd.grad(ours.sum(), (x, weight)), torch.autograd.grad(theirs.sum(), (x, weight))):
        torch.testing.assert_close(a, b, **F64)


def _norm_pair(norm: str, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float | None) -> tuple:
    """(ours, theirs, leaves) of layer or RMS norm over the last dimension."""
    if norm == "layer_norm":
        return (
            F.layer_norm(x, x.shape[-1:], weight, bias),
            TF.layer_norm(x, x.shape[-1:], weight, bias),
            (x, weight, bias),
        )
    return F.rms_norm(x, x.shape[-1:], weight, eps), TF.rms_norm(x, x.shape[-1:], weight, eps), (x, weight)


@pytest.mark.filterwarnings("ignore:Mismatch dtype between input and weight")  # torch's own RMS norm, mixed
@pytest.mark.parametrize("low", [torch.bfloat16, torch.float16], ids=["bfloat16", "float16"])
@pytest.mark.parametrize("norm", ["layer_norm", "rms_norm"])
def test_low_precision_input_with_float32_parameters_is_normalised_as_torch(
    device: str, low: torch.dtype, norm: str
) -> None:
    """torch's mixed path: float32 arithmetic, z rounded to the input's dtype, ∂C/∂x in it and
    ∂C/∂γ, ∂C/∂β in float32; RMS norm's default ε is float32's."""
    x = (torch.rand(3, 4, 6, device=device) * 0.02 + 0.01).to(low).requires_grad_()  # small: ε matters
    weight = torch.randn(6, device=device, requires_grad=True)
    bias = torch.randn(6, device=device, requires_grad=True)
    ours, theirs, leaves = _norm_pair(norm, x, weight, bias, None)
    assert ours.dtype == theirs.dtype == low
    torch.testing.assert_close(ours, theirs)
    delta = torch.randn_like(theirs)
    for a, b, leaf in zip(torch.autograd.grad(ours, leaves, delta), torch.autograd.grad(theirs, leaves, delta), leaves):
        assert a.dtype == b.dtype == leaf.dtype
        assert float((a.float() - b.float()).norm() / b.float().norm()) < 1e-2


RMS_DTYPES = [
    (torch.bfloat16, torch.bfloat16),
    (torch.float16, torch.float16),
    (torch.bfloat16, torch.float32),
    (torch.float32, torch.bfloat16),
    (torch.float32, torch.float64),
    (torch.bfloat16, torch.float16),
]


@pytest.mark.filterwarnings("ignore:Mismatch dtype between input and weight")
@pytest.mark.parametrize(("x_dtype", "weight_dtype"), RMS_DTYPES, ids=lambda d: str(d).removeprefix("torch."))
def test_rms_norm_of_any_dtypes_is_torchs_bit_for_bit(
    device: str, x_dtype: torch.dtype, weight_dtype: torch.dtype
) -> None:
    """torch's RMS norm takes γ of any floating dtype, computes in x's opmath dtype (float32 for
    float16/bfloat16) and rounds z to x's dtype."""
    x = torch.randn(4, 64, device=device).to(x_dtype).requires_grad_()
    weight = torch.randn(64, device=device).to(weight_dtype).requires_grad_()
    ours, theirs = F.rms_norm(x, 64, weight), TF.rms_norm(x, (64,), weight)
    assert ours.dtype == theirs.dtype == x_dtype
    assert torch.equal(ours, theirs)
    delta = torch.randn_like(theirs)
    for a, b in zip(torch.autograd.grad(ours, (x, weight), delta), torch.autograd.grad(theirs, (x, weight), delta)):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)  # a float64 γ's: float32 arithmetic


@pytest.mark.filterwarnings("ignore:Mismatch dtype between input and weight")
@pytest.mark.parametrize("norm", [torch.nn.LayerNorm, torch.nn.RMSNorm], ids=["LayerNorm", "RMSNorm"])
def test_float32_norms_between_bfloat16_layers_train_as_torch(device: str, norm: type[torch.nn.Module]) -> None:
    """Norms kept in float32 inside a bfloat16 model, converted: in one chain node, as torch's."""
    theirs = torch.nn.Sequential(
        torch.nn.Linear(4, 6).bfloat16(), norm(6), torch.nn.Linear(6, 3).bfloat16(), norm(3), torch.nn.Tanh()
    ).to(device)
    ours = torchbp.nn.convert(copy.deepcopy(theirs))
    x = torch.randn(5, 4, device=device, dtype=torch.bfloat16)
    outputs = []
    for model in (ours, theirs):
        output = model(x)
        output.float().square().sum().backward()
        outputs.append(output)
    assert outputs[0].dtype == outputs[1].dtype == torch.bfloat16
    torch.testing.assert_close(*outputs)
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters()):
        assert p.grad.dtype == q.grad.dtype == p.dtype, name
        assert float((p.grad.float() - q.grad.float()).norm() / q.grad.float().norm()) < 2e-2, name


def test_norm_bad_input_is_named() -> None:
    x = torch.randn(2, 5)
    with pytest.raises(
        ValueError, match=r"input: expected shape \(\*, 4\) to end in normalized_shape \[4\], got shape \(2, 5\)"
    ):
        F.layer_norm(x, 4)
    with pytest.raises(ValueError, match=r"weight: expected shape normalized_shape \[5\], got shape \(4\)"):
        F.layer_norm(x, 5, torch.ones(4))
    with pytest.raises(ValueError, match=r"weight: expected shape normalized_shape \[5\], got shape \(6\)"):
        F.rms_norm(x, 5, torch.ones(6))
    with pytest.raises(
        TypeError, match=r"weight: expected dtype torch.bfloat16 \(the dtype of input\) or torch.float32, "
    ):
        F.layer_norm(x.bfloat16(), 5, torch.ones(5, dtype=torch.float64))
    with pytest.raises(
        TypeError, match=r"bias: expected dtype torch.float32 \(the dtype of input\), got torch.bfloat16"
    ):
        F.layer_norm(x, 5, torch.ones(5), torch.zeros(5, dtype=torch.bfloat16))
    low = x.bfloat16()
    with pytest.raises(TypeError, match=r"bias: expected dtype torch.bfloat16 \(the dtype of input\) without a weight"):
        F.layer_norm(low, 5, None, torch.zeros(5))
    with pytest.raises(
        TypeError, match=r"bias: expected dtype torch.bfloat16 \(the dtype of weight\), got torch.float32"
    ):
        F.layer_norm(low, 5, torch.ones(5, dtype=torch.bfloat16), torch.zeros(5))


def test_embedding_max_norm_renormalises_as_torch() -> None:
    weight = torch.randn(5, 3, dtype=torch.float64) * 3
    ours_weight, theirs_weight = weight.clone().requires_grad_(), weight.clone().requires_grad_()
    indices = torch.tensor([[0, 2], [2, 4]])
    ours = F.embedding(indices, ours_weight, max_norm=1.0)
    theirs = TF.embedding(indices, theirs_weight, max_norm=1.0)
    torch.testing.assert_close(ours, theirs, **F64)
    torch.testing.assert_close(ours_weight.detach(), theirs_weight.detach(), **F64)
    assert float(ours.detach().norm(dim=-1).max()) <= 1.0 + 1e-9


def test_embedding_bad_input_is_named() -> None:
    weight = torch.randn(5, 3)
    with pytest.raises(TypeError, match="input: expected a tensor of integer indices"):
        F.embedding(torch.ones(2), weight)
    with pytest.raises(
        IndexError, match=r"input: indices must lie in \[0, 4\] for weight of shape \(5, 3\), got indices from 0 to 7"
    ):
        F.embedding(torch.tensor([0, 7]), weight)
    with pytest.raises(
        ValueError, match=r"weight: expected a 2-D tensor of shape \(num_embeddings, embedding_dim\), got shape \(5\)"
    ):
        F.embedding(torch.tensor([0]), torch.randn(5))
    with pytest.raises(ValueError, match=r"padding_idx: expected an index in \[-5, 4\]"):
        F.embedding(torch.tensor([0]), weight, padding_idx=5)
    with pytest.raises(ValueError, match="sparse: torchbp's embedding gives a dense"):
        F.embedding(torch.tensor([0]), weight, sparse=True)


@pytest.mark.parametrize("normalized", [(5,), (4, 5)], ids=["over one dimension", "over two dimensions"])
@pytest.mark.parametrize(
    ("with_weight", "with_bias"),
    [(True, True), (True, False), (False, True), (False, False)],
    ids=["weight and bias", "weight only", "bias only", "neither"],
)
def test_layer_norm_gradients_and_double_backward_equal_torch(
    normalized: tuple[int, ...], with_weight: bool, with_bias: bool
) -> None:
    x = torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(normalized, dtype=torch.float64, requires_grad=True) if with_weight else None
    bias = torch.randn(normalized, dtype=torch.float64, requires_grad=True) if with_bias else None
    leaves = [t for t in (x, weight, bias) if t is not None]
    delta, v = torch.randn_like(x), torch.randn_like(x)
    results = []
    for layer_norm in (F.layer_norm, TF.layer_norm):
        z = layer_norm(x, normalized, weight, bias, 1e-3)
        grads = torch.autograd.grad(z, leaves, delta, retain_graph=True)  # ATen's fused kernel
        written = torch.autograd.grad(z, leaves, delta, create_graph=True)  # the equations, differentiable
        # the Hessian-vector products of ⟨∂C/∂x, v⟩
        hvp = torch.autograd.grad((written[0] * v).sum(), leaves, allow_unused=True, materialize_grads=True)
        results.append((*grads, *written, *hvp))
    for ours, theirs in zip(*results):
        torch.testing.assert_close(ours, theirs, **F64)
