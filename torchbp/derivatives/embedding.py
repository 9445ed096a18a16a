"""Embedding: z = W[i], a row of the table per index, and δ scattered back into the rows used.

Conventions (PyTorch's): the input is a tensor of integer indices ``i`` of any shape ``(*)``,
``weight`` W is ``(num_embeddings, embedding_dim)``, ``z`` is ``(*, embedding_dim)``. The layer is
a lookup, so there is no error to hand below (indices have no gradient) and the one parameter
gradient is BP4's analogue written as a scatter::

    ∂C/∂W[r] = Σ_{positions p with i_p = r} δ_p       (0 for r = padding_idx)

with ``scale_grad_by_freq``, each δ_p divided by how often its index occurs in the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch
from torch import Tensor

from .base import Derivatives, Sample


class EmbeddingSaved(NamedTuple):
    """The indices, which say where each δ goes."""

    indices: Tensor


@dataclass(frozen=True)
class Embedding(Derivatives):
    """z = W[i]: ∂C/∂W[r] = Σ over the positions holding index r of δ (none for ``padding_idx``).

    Attributes:
        num_embeddings: the rows of W (the shape of ∂C/∂W).
        padding_idx: a row whose gradient is always 0, or ``None``.
        scale_grad_by_freq: divide each δ by the count of its index in the batch.
    """

    kind: ClassVar[str] = "embedding"
    params: ClassVar[tuple[str, ...]] = ("weight",)
    Saved: ClassVar[type[EmbeddingSaved]] = EmbeddingSaved
    saves_own: ClassVar[bool] = True

    num_embeddings: int = 1
    padding_idx: int | None = None
    scale_grad_by_freq: bool = False

    def forward(self, x: Tensor, *params: Tensor | None) -> tuple[Tensor, tuple[Tensor, ...]]:
        (weight,) = params
        assert weight is not None
        return torch.nn.functional.embedding(x, weight), ()

    def save(
        self,
        x: Tensor,
        params: tuple[Tensor | None, ...],
        z: Tensor,
        buffers: tuple[Tensor, ...],
        needs: tuple[bool, ...],
    ) -> EmbeddingSaved:
        return EmbeddingSaved(x)

    def input_vjp(self, delta: Tensor, saved: EmbeddingSaved) -> Tensor:
        raise TypeError("embedding: indices are integers and have no gradient")

    def param_vjps(self, delta: Tensor, saved: EmbeddingSaved, needs: tuple[bool, ...]) -> tuple[Tensor | None, ...]:
        indices = saved.indices.reshape(-1)
        delta_rows = delta.reshape(-1, delta.shape[-1])
        if self.scale_grad_by_freq:
            counts = torch.bincount(indices, minlength=self.num_embeddings)
            # each δ divided by how often its index occurs
            delta_rows = delta_rows / counts[indices].unsqueeze(-1).to(delta.dtype)
        if self.padding_idx is not None:
            # the padding row learns nothing
            delta_rows = delta_rows * (indices != self.padding_idx).unsqueeze(-1).to(delta.dtype)
        # ∂C/∂W[r] = Σ of the δ at the positions holding index r (rows not used get 0)
        grad_weight = delta.new_zeros(self.num_embeddings, delta.shape[-1]).index_add(0, indices, delta_rows)
        return (grad_weight,)

    def vjps(self, delta: Tensor, saved: EmbeddingSaved, needs: tuple[bool, ...]) -> tuple[Tensor | None, ...]:
        return None, *(self.param_vjps(delta, saved, needs[1:]) if needs[1] else (None,))

    def jvp(self, saved: EmbeddingSaved, x_t: Tensor | None, *params_t: Tensor | None) -> Tensor:
        (weight_t,) = params_t
        assert weight_t is not None
        # ż = Ẇ[i]
        return torch.nn.functional.embedding(saved.indices, weight_t)

    @classmethod
    def samples(cls, dtype: torch.dtype, device: torch.device | str) -> list[Sample]:
        def weight(rows: int, width: int) -> Tensor:
            return torch.randn(rows, width, dtype=dtype, device=device)

        def indices(rows: int, *shape: int) -> Tensor:
            return torch.randint(rows, shape, device=device)

        # padding_idx and scale_grad_by_freq change ∂C/∂W on purpose (it is no longer the derivative
        # of z), so they are checked against torch.nn.Embedding, not by gradcheck
        repeated = torch.tensor([[0, 2, 2], [4, 0, 2]], device=device)
        return [
            Sample("(N, L) indices", cls(6), indices(6, 2, 3), (weight(6, 4),)),
            Sample("one index", cls(3), indices(3, 1), (weight(3, 2),)),
            Sample("no batch dimension", cls(5), indices(5, 4), (weight(5, 3),)),
            Sample("repeated indices", cls(5), repeated, (weight(5, 3),)),
            Sample("non-contiguous table", cls(4), indices(4, 3, 2).t(), (weight(3, 4).t(),)),
        ]
