"""torchbp.targets: the output and target checks cost plugins share."""

from __future__ import annotations

import pytest
import torch

from torchbp.targets import as_distribution, check_classes, check_like, check_output


@pytest.mark.parametrize(
    "output, error, message",
    [
        (torch.tensor(0.5), ValueError, "output: expected shape (n, *) with one row per example, got a scalar"),
        (torch.tensor([1, 2]), TypeError, "output: expected a floating-point tensor, got dtype torch.int64"),
        ([0.5, 0.5], TypeError, "output: expected a torch.Tensor, got list"),
    ],
)
def test_check_output_refuses_what_is_not_a_batch_of_floats(output: object, error: type, message: str) -> None:
    with pytest.raises(error) as raised:
        check_output(output)
    assert str(raised.value) == message


@pytest.mark.parametrize("shape", [(3,), (3, 2), (3, 2, 4)])
def test_check_output_passes_a_batch_through(shape: tuple[int, ...]) -> None:
    a = torch.rand(shape)
    assert check_output(a) is a


def test_check_like_wants_the_outputs_shape() -> None:
    a = torch.rand(3, 2)
    check_like(a, torch.rand(3, 2))
    with pytest.raises(ValueError, match=r"target: expected shape \(3, 2\) \(the output's shape\), got \(2, 3\)"):
        check_like(a, torch.rand(2, 3))


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64])
def test_check_classes_takes_every_integer_dtype(dtype: torch.dtype) -> None:
    check_classes(torch.randn(4, 3), torch.tensor([0, 1, 2, 2], dtype=dtype))


@pytest.mark.parametrize(
    "y, error, message",
    [
        (torch.tensor([0, 1, 3, 2]), ValueError, "target: expected class indices in [0, 3), got values from 0 to 3"),
        (torch.tensor([0, -1, 2, 2]), ValueError, "target: expected class indices in [0, 3), got values from -1 to 2"),
        (torch.tensor([True, False, True, True]), TypeError, "got dtype torch.bool"),
        (
            torch.tensor([0, 1, 2]),
            ValueError,
            "target: expected class indices of shape (4,) for logits of shape (4, 3)",
        ),
        (torch.full((4, 3), 1 / 3).sub(0.5), ValueError, "target: expected probabilities in [0, 1], got values from"),
        (torch.full((4, 3), 1.5), ValueError, "target: expected probabilities in [0, 1], got values from 1.5 to 1.5"),
    ],
    ids=["index-C", "negative", "bool", "short", "below-0", "above-1"],
)
def test_check_classes_refuses_targets_outside_the_classes(y: torch.Tensor, error: type, message: str) -> None:
    with pytest.raises(error) as raised:
        check_classes(torch.randn(4, 3), y)
    assert message in str(raised.value)


def test_check_classes_refuses_a_single_output_naming_the_cost() -> None:
    with pytest.raises(ValueError, match="output: multi_margin needs logits for at least 2 classes, got 1 output"):
        check_classes(torch.randn(4, 1), torch.zeros(4, dtype=torch.int64), "multi_margin")
    check_classes(torch.randn(4, 2), torch.tensor([0, 1, 1, 0]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_as_distribution_turns_indices_into_one_hot_rows(dtype: torch.dtype) -> None:
    logits = torch.randn(4, 3, dtype=dtype)
    y = torch.tensor([2, 0, 1, 2], dtype=torch.uint8)
    target = as_distribution(logits, y)
    assert target.dtype == dtype
    torch.testing.assert_close(target, torch.eye(3, dtype=dtype)[y.long()], rtol=0, atol=0)
    probabilities = torch.softmax(logits, 1)
    assert as_distribution(logits, probabilities) is probabilities
