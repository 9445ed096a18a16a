"""Mixed precision for ``torchbp train --precision``: the run under ``torch.autocast``."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

PRECISIONS = ("float32", "bfloat16", "float16")


def autocast(precision: str, device: str | torch.device) -> AbstractContextManager[object]:
    """``torch.autocast`` on ``device`` to ``precision`` (``"float32"``: no autocast).

    Parameters stay float32; matrix products and convolutions run in the lower precision, and
    every path of ``torchbp.fit`` (the graph-free step included) casts ∂C/∂θ back to the
    parameter's dtype. float16 on CUDA trains without a gradient scaler: prefer bfloat16.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "float32":
        return nullcontext()
    try:
        device_type = torch.device(device).type
    except RuntimeError:
        raise ValueError(f"device: expected 'cpu', 'cuda', 'cuda:N' or 'mps', got {device!r}") from None
    return torch.autocast(device_type, dtype=getattr(torch, precision))
