"""The first-party torchbp-extras plugin: its costs against torch.nn.functional."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as torch_F

import torchbp


def _compare(ours: torch.Tensor, theirs: torch.Tensor, a: torch.Tensor) -> None:
    (grad_ours,) = torch.autograd.grad(ours, a)
    (grad_theirs,) = torch.autograd.grad(theirs, a)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(grad_ours, grad_theirs, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("delta", [0.5, 1.0, 2.0])
def test_huber(device: str, delta: float) -> None:
    a = 2 * torch.randn(6, 3, dtype=torch.float64, device=device, requires_grad=True)
    y = torch.randn(6, 3, dtype=torch.float64, device=device)
    _compare(torchbp.get_cost("huber", delta=delta)(a, y), torch_F.huber_loss(a, y, delta=delta), a)


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_smooth_l1(device: str, beta: float) -> None:
    a = 2 * torch.randn(6, 3, dtype=torch.float64, device=device, requires_grad=True)
    y = torch.randn(6, 3, dtype=torch.float64, device=device)
    _compare(torchbp.get_cost("smooth_l1", beta=beta)(a, y), torch_F.smooth_l1_loss(a, y, beta=beta), a)


def test_log_cosh_matches_its_definition(device: str) -> None:
    a = torch.randn(6, 3, dtype=torch.float64, device=device, requires_grad=True)
    y = torch.randn(6, 3, dtype=torch.float64, device=device)
    _compare(torchbp.get_cost("log_cosh")(a, y), torch.log(torch.cosh(a - y)).mean(), a)


def test_log_cosh_is_finite_far_away() -> None:
    a = torch.tensor([[1000.0, -1000.0]], dtype=torch.float64)
    assert torch.isfinite(torchbp.get_cost("log_cosh")(a, torch.zeros_like(a)))


@pytest.mark.parametrize("margin", [0.5, 1.0])
def test_multi_margin(device: str, margin: float) -> None:
    z = torch.randn(8, 5, dtype=torch.float64, device=device, requires_grad=True)
    y = torch.randint(0, 5, (8,), device=device)
    _compare(
        torchbp.get_cost("multi_margin", margin=margin)(z, y),
        torch_F.multi_margin_loss(z, y, margin=margin),
        z,
    )


def test_multi_margin_refuses_probabilities() -> None:
    with pytest.raises(TypeError, match="integer class indices"):
        torchbp.get_cost("multi_margin")(torch.randn(2, 3), torch.full((2, 3), 1 / 3))
