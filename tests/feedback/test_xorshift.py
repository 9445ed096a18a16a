"""brsf's per-batch magnitudes: their distribution, freshness, seeding, resume and in-place B."""

from __future__ import annotations

import copy
import itertools
import math

import pytest
import torch

import torchbp
from torchbp import nn as tnn
from torchbp.feedback.rules import DirectFeedbackAlignment
from torchbp.feedback.xorshift import draw_int16, xorshift_state


def _draws(seed: int, values: int, steps: int) -> list[torch.Tensor]:
    state = xorshift_state(values, torch.Generator().manual_seed(seed), torch.device("cpu"))
    scratch = torch.empty(state.numel() - 1, dtype=torch.int64)
    return [draw_int16(state, values, scratch).clone() for _ in range(steps)]


def test_draws_are_uniform_16_bit_integers_fresh_each_step() -> None:
    draws = _draws(0, 100_003, 4)
    for v in draws:
        u = (v.double() + 0.5) / 2**16 + 0.5  # uniform on (0, 1)
        # mean 1/2 and variance 1/12, within 5 standard errors of 100,003 draws
        assert abs(u.mean().item() - 0.5) < 5 * math.sqrt(1 / 12 / u.numel())
        assert abs(u.var().item() - 1 / 12) < 5 * math.sqrt(1 / 180 / u.numel())
        counts = torch.bincount((u * 16).long(), minlength=16).double()
        chi2 = ((counts - u.numel() / 16) ** 2 / (u.numel() / 16)).sum().item()
        assert chi2 < 50  # 15 degrees of freedom: P(χ² > 50) ≈ 10⁻⁵
    for a, b in itertools.pairwise(draws):
        ua, ub = a.double(), b.double()
        # each step is fresh: successive draws of an element are uncorrelated, and rarely equal
        assert abs(torch.corrcoef(torch.stack([ua, ub]))[0, 1].item()) < 5 / math.sqrt(ua.numel())
        assert (a == b).double().mean().item() < 5 / 2**16
    # neighbouring elements (the four lanes of a word, and adjacent words) are uncorrelated
    v = draws[0].double()
    for lag in (1, 4):
        assert abs(torch.corrcoef(torch.stack([v[:-lag], v[lag:]]))[0, 1].item()) < 5 / math.sqrt(v.numel())


def test_same_seed_same_sequence_other_seed_another() -> None:
    for a, b in zip(_draws(7, 1001, 3), _draws(7, 1001, 3)):
        assert torch.equal(a, b)
    assert not torch.equal(_draws(7, 1001, 1)[0], _draws(8, 1001, 1)[0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_brsf_redraws_magnitudes_uniform_on_0_s_with_ws_signs(dtype: torch.dtype) -> None:
    layer = tnn.convert(torch.nn.Linear(400, 300).to(dtype), feedback="brsf", seed=1)
    x = torch.randn(8, 400, dtype=dtype, requires_grad=True)  # BP2 runs, so B is drawn
    s = 400**-0.5
    seen = []
    for _ in range(3):
        layer(x).sum().backward()
        b = layer.feedback_weight
        assert b.dtype == dtype
        assert torch.equal(torch.sign(b), torch.sign(layer.weight.detach()))
        m = b.abs() / s  # U(0, 1)
        assert m.max() <= 1
        assert abs(m.mean().item() - 0.5) < 5 * math.sqrt(1 / 12 / m.numel())
        assert abs(m.var().item() - 1 / 12) < 5 * math.sqrt(1 / 180 / m.numel())
        seen.append(b.abs().clone())
    assert not torch.equal(seen[0], seen[1]) and not torch.equal(seen[1], seen[2])


def test_brsf_sequence_comes_from_the_seed_and_resumes_from_the_state_dict() -> None:
    torch.manual_seed(0)
    native = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3))
    x = torch.randn(6, 5, requires_grad=True)

    def steps(model: torch.nn.Module, n: int) -> list[torch.Tensor]:
        out = []
        for _ in range(n):
            model(x).sum().backward()
            out.append(model[0].feedback_weight.clone())
        return out

    straight = tnn.convert(copy.deepcopy(native), feedback="brsf", seed=3)
    assert "feedback_state" in dict(straight[0].named_buffers())
    unbroken = steps(straight, 4)
    torch.manual_seed(123)  # the global stream has no part in B
    first = tnn.convert(copy.deepcopy(native), feedback="brsf", seed=3)
    assert [torch.equal(a, b) for a, b in zip(steps(first, 2), unbroken)] == [True, True]
    resumed = tnn.convert(copy.deepcopy(native), feedback="brsf", seed=3)
    resumed.load_state_dict(first.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(steps(resumed, 2), unbroken[2:]))


@pytest.mark.parametrize("rule", ["usf", "brsf", "frsf"])
def test_b_is_rewritten_in_place_once_its_backward_ran_and_copied_while_one_is_due(rule: str) -> None:
    layer = tnn.convert(torch.nn.Linear(6, 5).double(), feedback=rule, seed=0)
    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    ones = torch.ones(4, 5, dtype=torch.float64)
    layer(x).sum().backward()
    storage = layer.feedback_weight.data_ptr()
    layer(x).sum().backward()
    assert layer.feedback_weight.data_ptr() == storage  # the last backward ran: B is rewritten in place
    # two forward passes before their backward pass (a layer used twice): each keeps its own B
    x.grad = None
    first = layer(x)
    b_first = layer.feedback_weight
    b_first_values = b_first.clone()
    second = layer(x)
    b_second = layer.feedback_weight
    assert b_second is not b_first and torch.equal(b_first, b_first_values)
    (first.sum() + second.sum()).backward()
    torch.testing.assert_close(x.grad, ones @ b_first + ones @ b_second, rtol=1e-12, atol=1e-12)


class _InPlaceDirect(DirectFeedbackAlignment):
    """A direct rule that writes each batch's B in place (the plugin guide allows both flags)."""

    in_place = True
    redraws = True

    def __init__(self, seed: int = 1) -> None:
        super().__init__(seed)
        self.calls: list[tuple[int, ...]] = []  # the weight shape of each call

    def matrix(self, weight, feedback_weight, generator, state=None):  # type: ignore[no-untyped-def]
        self.calls.append(tuple(weight.shape))
        return feedback_weight.mul_(-1.0)


@pytest.mark.parametrize("rule", ["brsf", "in-place direct"])
@pytest.mark.parametrize("path", ["MLP", "chain", "one by one"])
def test_a_retained_graph_whose_b_was_redrawn_is_an_error(rule: str, path: str) -> None:
    feedback = torchbp.get_feedback("brsf", seed=0) if rule == "brsf" else _InPlaceDirect()
    if path == "MLP":
        model: torch.nn.Module = tnn.MLP([4, 6, 3], feedback=feedback)
    else:
        native = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3))
        model = tnn.convert(native, feedback=feedback)
        if path == "one by one":
            for layer in model:
                layer.register_forward_hook(lambda module, args, output: None)
    x = torch.randn(5, 4)
    out = model(x)
    out.sum().backward(retain_graph=True)
    model(x).sum().backward()  # redraws B in place: the first graph's B is gone
    # a layer called alone keeps B through save_for_backward, whose own check may speak first
    with pytest.raises(RuntimeError, match="redrawn in place by a later forward pass|modified by an inplace"):
        out.sum().backward()


@pytest.mark.parametrize("input_grad", [False, True])
def test_a_direct_rule_derives_b_once_per_forward_and_only_where_bp2_runs(input_grad: bool) -> None:
    rule = _InPlaceDirect()
    native = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
    model = tnn.convert(native, feedback=rule)
    x = torch.randn(6, 4, requires_grad=input_grad)
    model(x).square().sum().backward()
    assert rule.calls == ([(5, 4)] if input_grad else []) + [(3, 5)]
    assert [int(model[i].feedback_draws) for i in (0, 2)] == [int(input_grad), 1]
