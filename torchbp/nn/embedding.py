"""Embedding: torch's module, looking up rows through ``torchbp.functional.embedding``."""

from __future__ import annotations

import torch
from torch import Tensor

from ..derivatives import embedding as derivatives
from ..functional.embedding import embedding
from ..hookspecs import hookimpl
from ..specs import LayerSpec
from .delta_hooks import DeltaHooks


class Embedding(DeltaHooks, torch.nn.Embedding):
    """z = W[i], like ``torch.nn.Embedding``: integer indices ``(*)`` in, ``(*, embedding_dim)`` out.

    δ is scattered into the rows used (none into ``padding_idx``); ``max_norm`` renormalises the
    rows looked up in place first, as torch does; ``sparse=True`` is refused when called
    (∂C/∂W is dense).

    Examples:
        >>> import torch
        >>> Embedding(10, 3)(torch.tensor([[1, 2], [3, 4]])).shape
        torch.Size([2, 2, 3])
    """

    def forward(self, input: Tensor) -> Tensor:
        return embedding(
            input,
            self.weight,
            self.padding_idx,
            self.max_norm,
            self.norm_type,
            self.scale_grad_by_freq,
            self.sparse,
            self.on_delta(),
        )

    def linkable(self) -> bool:
        return False  # integer input: the first layer of a model, not a link in a chain


def _embedding_examples(dtype: torch.dtype) -> list[tuple[torch.nn.Module, Tensor]]:
    repeated = torch.tensor([[0, 2, 2, 1], [4, 0, 2, 2]])
    return [
        (torch.nn.Embedding(7, 4, dtype=dtype), torch.randint(7, (3, 5))),
        (torch.nn.Embedding(5, 3, padding_idx=2, dtype=dtype), repeated),
        (torch.nn.Embedding(5, 3, scale_grad_by_freq=True, dtype=dtype), repeated),
        (torch.nn.Embedding(5, 3, padding_idx=-1, max_norm=1.0, dtype=dtype), repeated),
    ]


@hookimpl
def torchbp_layers() -> list[LayerSpec]:
    return [
        LayerSpec(
            "Embedding",
            "z = W[i]; ∂C/∂W[r] = Σ of δ over the positions holding index r (0 for padding_idx)",
            torch.nn.Embedding,
            Embedding,
            derivatives.Embedding,
            _embedding_examples,
        )
    ]
