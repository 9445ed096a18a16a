"""TransformerEncoderLayer and TransformerDecoderLayer: torch's modules, with the activation they
keep as a plain function run as torchbp's.

Their attention, normalisation, linear and dropout layers are modules of their own, which
``torchbp.nn.convert`` turns into torchbp's twins; what is left is ``self.activation``, which
torch keeps as a function (``torch.nn.functional.relu`` or ``gelu``) when the layer is built from
a name. The twins read that attribute as it is and call torchbp's function of the same name in
its place, so conversion changes no state and ``torchbp.nn.revert`` undoes it. An
activation given as a module is converted as a module; any other callable runs as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .. import functional as F
from ..hookspecs import hookimpl
from ..specs import LayerSpec

_EXPLICIT: dict[Callable[..., Tensor], Callable[[Tensor], Tensor]] = {
    torch.nn.functional.relu: F.relu,
    torch.nn.functional.gelu: F.gelu,
}


def explicit(activation: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """torchbp's function in place of torch's ``relu`` or ``gelu``; anything else as it is."""
    try:
        return _EXPLICIT.get(activation, activation)  # type: ignore[arg-type]
    except TypeError:  # an unhashable callable
        return activation


class TransformerEncoderLayer(torch.nn.TransformerEncoderLayer):
    """Like ``torch.nn.TransformerEncoderLayer`` (``norm_first`` either way, ``relu`` or ``gelu``),
    with torchbp's activation; converted, every layer in it runs an explicit backward.

    Examples:
        >>> import torch
        >>> layer = TransformerEncoderLayer(8, 2, dim_feedforward=16, batch_first=True)
        >>> layer(torch.randn(3, 5, 8)).shape
        torch.Size([3, 5, 8])
    """

    def _ff_block(self, x: Tensor) -> Tensor:
        x = self.linear2(self.dropout(explicit(self.activation)(self.linear1(x))))
        return self.dropout2(x)  # type: ignore[no-any-return]


class TransformerDecoderLayer(torch.nn.TransformerDecoderLayer):
    """Like ``torch.nn.TransformerDecoderLayer`` (``norm_first`` either way, ``relu`` or ``gelu``),
    with torchbp's activation; converted, every layer in it runs an explicit backward.

    Examples:
        >>> import torch
        >>> layer = TransformerDecoderLayer(8, 2, dim_feedforward=16)
        >>> layer(torch.randn(5, 3, 8), torch.randn(4, 3, 8)).shape
        torch.Size([5, 3, 8])
    """

    def _ff_block(self, x: Tensor) -> Tensor:
        x = self.linear2(self.dropout(explicit(self.activation)(self.linear1(x))))
        return self.dropout3(x)  # type: ignore[no-any-return]


def _encoder_examples(dtype: torch.dtype) -> list[tuple[torch.nn.Module, Tensor]]:
    def layer(**options: Any) -> torch.nn.Module:
        return torch.nn.TransformerEncoderLayer(8, 2, dim_feedforward=12, dropout=0.0, dtype=dtype, **options)

    return [
        (layer(batch_first=True), torch.randn(2, 5, 8, dtype=dtype)),
        (layer(norm_first=True, activation="gelu"), torch.randn(4, 3, 8, dtype=dtype)),
    ]


@hookimpl
def torchbp_layers() -> list[LayerSpec]:
    return [
        LayerSpec(
            "TransformerEncoderLayer",
            "self-attention and feed-forward blocks with residuals; its layers converted, its activation torchbp's",
            torch.nn.TransformerEncoderLayer,
            TransformerEncoderLayer,
            None,
            _encoder_examples,
        ),
        LayerSpec(
            "TransformerDecoderLayer",
            "self-attention, cross-attention and feed-forward blocks; its layers converted, its activation torchbp's",
            torch.nn.TransformerDecoderLayer,
            TransformerDecoderLayer,
        ),
    ]
