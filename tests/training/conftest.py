"""Fixtures shared by the training tests."""

from __future__ import annotations

import pytest

from torchbp.training import load


@pytest.fixture(scope="module")
def digits() -> tuple:
    """200 training and 100 validation digits, ``((x, y), (x_val, y_val))`` (a module may override it)."""
    data = load("digits")
    train, val = data.split(0.2, seed=0)
    return (train.inputs[:200], train.targets[:200]), (val.inputs[:100], val.targets[:100])
