"""MultiheadAttention: torch's module, attending through ``torchbp.functional.multi_head_attention_forward``
(torchbp's linear projections and the explicit-δ attention Function)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..derivatives import attention as derivatives
from ..derivatives import linear as linear_derivatives
from ..functional.attention import multi_head_attention_forward
from ..hookspecs import hookimpl
from ..specs import LayerSpec
from .delta_hooks import DeltaHooks
from .linear import Linear


class NonDynamicallyQuantizableLinear(Linear, torch.nn.modules.linear.NonDynamicallyQuantizableLinear):
    """The output projection of ``torch.nn.MultiheadAttention``: a ``torchbp.nn.Linear``."""


class MultiheadAttention(DeltaHooks, torch.nn.MultiheadAttention):
    """Multi-head attention, like ``torch.nn.MultiheadAttention`` (same constructor, parameters and
    ``forward``): ``batch_first`` either way, ``kdim``/``vdim``, ``key_padding_mask``,
    ``attn_mask``, ``is_causal``, ``need_weights`` (averaged or per head), ``add_bias_kv``,
    ``add_zero_attn`` and dropout.

    The projections are torchbp's linear layers and the attention is
    ``torchbp.derivatives.attention.Attention``, so the whole backward is explicit. The
    attention weights returned with ``need_weights=True`` are for reading: autograd treats them
    as constants (torch's can be differentiated). Its δ hooks see δ = ∂C/∂O of the attention,
    ``(N, H, L, E/H)``, before the output projection. A query whose every key is masked gets
    zeros and zero gradients, as torch's ``need_weights=False`` path gives (its
    ``need_weights=True`` path gives NaN).

    Examples:
        >>> import torch
        >>> attention = MultiheadAttention(8, 2, batch_first=True)
        >>> x = torch.randn(3, 5, 8)
        >>> output, weights = attention(x, x, x)
        >>> output.shape, weights.shape
        (torch.Size([3, 5, 8]), torch.Size([3, 5, 5]))
    """

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = True,
        attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        batched = query.dim() == 3
        if self.batch_first and batched:
            # (N, L, E) → (L, N, E), keeping one tensor one tensor (self-attention projects once)
            if key is value:
                if query is key:
                    query = key = value = query.transpose(1, 0)
                else:
                    query, key = (x.transpose(1, 0) for x in (query, key))
                    value = key
            else:
                query, key, value = (x.transpose(1, 0) for x in (query, key, value))
        if self._qkv_same_embed_dim:
            in_proj = tuple(self.in_proj_weight.chunk(3))
            packed = self.in_proj_weight
        else:
            in_proj = (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight)
            packed = None
        output, weights = multi_head_attention_forward(
            query,
            key,
            value,
            self.num_heads,
            in_proj,  # type: ignore[arg-type]
            self.in_proj_bias,
            packed,
            self.out_proj.weight,
            self.out_proj.bias,
            self.bias_k,
            self.bias_v,
            self.add_zero_attn,
            self.dropout if self.training else 0.0,
            key_padding_mask,
            need_weights,
            attn_mask,
            average_attn_weights,
            is_causal,
            self.on_delta(),
        )
        if self.batch_first and batched:
            output = output.transpose(1, 0)
        return output, weights

    def linkable(self) -> bool:
        return False  # three inputs: called by its own forward, not in a chain


def _linear_examples(dtype: torch.dtype) -> list[tuple[torch.nn.Module, Tensor]]:
    module = torch.nn.modules.linear.NonDynamicallyQuantizableLinear(4, 3, dtype=dtype)
    return [(module, torch.randn(5, 4, dtype=dtype))]


@hookimpl
def torchbp_layers() -> list[LayerSpec]:
    return [
        LayerSpec(
            "MultiheadAttention",
            "O = softmax(Q Kᵀ/√d + M) V per head; ∂V = Pᵀ δ, ∂P = δ Vᵀ, ∂S = P ⊙ (∂P − rowsum(∂P ⊙ P)), "
            "∂Q = ∂S K/√d, ∂K = ∂Sᵀ Q/√d; projections as Linear",
            torch.nn.MultiheadAttention,
            MultiheadAttention,
            derivatives.Attention,
        ),
        LayerSpec(
            "NonDynamicallyQuantizableLinear",
            "MultiheadAttention's output projection: z = x Wᵀ + b, as Linear",
            torch.nn.modules.linear.NonDynamicallyQuantizableLinear,
            NonDynamicallyQuantizableLinear,
            linear_derivatives.Linear,
            _linear_examples,
        ),
    ]
