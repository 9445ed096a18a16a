"""Per-example quantities under feedback rules: example k's row is what example k alone gives under the rule."""

from __future__ import annotations

import pytest
import torch

import torchbp
import torchbp.nn as tnn

# rules whose B stays put across backward passes (brsf redraws it per batch, kolen_pollack learns it in
# backward), so that example k run alone sees the same B as the batch did
RULES = ["backprop", "fa", "dfa", "usf", "frsf"]


def _models(feedback: str) -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    mlp = tnn.MLP([5, 4, 3], "tanh", "identity", feedback=feedback).double()
    torch.manual_seed(0)
    native = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3)).double()
    return {"mlp": mlp, "converted": tnn.convert(native, feedback=feedback)}


@pytest.mark.parametrize("feedback", RULES)
@pytest.mark.parametrize("kind", ["mlp", "converted"])
def test_each_row_is_the_examples_own_gradient_under_the_rule(feedback: str, kind: str) -> None:
    model = _models(feedback)[kind]
    x = torch.randn(6, 5, dtype=torch.float64)
    y = torch.randn(6, 3, dtype=torch.float64)
    parameters = [p for p in model.parameters() if p.requires_grad]
    with torchbp.per_example(model, "grad", "norm"):
        torch.nn.functional.mse_loss(model(x), y, reduction="none").sum(1).mean().backward()
    rows = [p.grad_sample.clone() for p in parameters]
    norms = torch.stack([p.grad_sample_norm for p in parameters]).norm(dim=0)
    for k in range(len(x)):
        model.zero_grad()
        torch.nn.functional.mse_loss(model(x[k : k + 1]), y[k : k + 1], reduction="none").sum(1).mean().backward()
        alone = [p.grad for p in parameters]
        for row, grad in zip(rows, alone):
            torch.testing.assert_close(row[k], grad, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(norms[k], torch.stack([g.norm() for g in alone]).norm(), rtol=1e-10, atol=1e-12)


def test_under_fa_the_rows_differ_from_backprops() -> None:
    """The comparison above is not vacuous: FA's hidden-layer rows are not backprop's."""
    x, y = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 3, dtype=torch.float64)
    rows = {}
    for feedback in ("backprop", "fa"):
        model = _models(feedback)["mlp"]
        with torchbp.per_example(model, "grad"):
            torch.nn.functional.mse_loss(model(x), y, reduction="none").sum(1).mean().backward()
        rows[feedback] = [p.grad_sample.clone() for p in model.parameters()]
    assert not torch.allclose(rows["backprop"][0], rows["fa"][0])  # first layer: δ came down through B
    torch.testing.assert_close(rows["backprop"][-1], rows["fa"][-1])  # top layer: exact under FA
