"""Attention as functional ops: ``scaled_dot_product_attention`` (torch's signature) and the
multi-head attention forward of ``torch.nn.MultiheadAttention``, both with the explicit backward
of ``torchbp.derivatives.attention.Attention``; the projections are torchbp's linear layers."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ..derivatives.attention import Attention
from ..derivatives.dropout import draw_mask
from ..derivatives.linear import Linear
from .checks import autocast_args, autocast_dtype, cast_floating, check_same, check_tensor, shape_text
from .factory import apply_layer, apply_layer_with_buffers, function_for

__all__ = ["multi_head_attention_forward", "scaled_dot_product_attention"]

_LINEAR = Linear()
function_for(Attention)  # made here, in eager code: torch.compile breaks its graph where a class is made


def additive_mask(name: str, mask: Tensor, dtype: torch.dtype, true_means_keep: bool) -> Tensor:
    """A boolean mask as an additive one (0 where attention is allowed, −∞ where not); a float
    mask in ``dtype`` (converted from another floating dtype, as torch's attention adds it).
    ``true_means_keep``: True marks allowed places (``scaled_dot_product_attention``'s convention)
    rather than masked ones (``MultiheadAttention``'s)."""
    if mask.dtype == torch.bool:
        blocked = ~mask if true_means_keep else mask
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(blocked, float("-inf"))
    if not mask.is_floating_point():
        raise TypeError(f"{name}: expected a boolean or a floating-point mask, got dtype {mask.dtype}")
    return mask.to(dtype)


def check_attention(
    query: object, key: object, value: object, attn_mask: object, dropout_p: float, is_causal: bool
) -> tuple[Tensor, Tensor, Tensor, tuple[int, ...]]:
    """Check ``query (*, L, E)``, ``key (*, S, E)``, ``value (*, S, Ev)`` and ``attn_mask``
    (broadcastable to ``(*, L, S)``); returns the tensors and the batch shape ``*``."""
    q, k, v = check_tensor("query", query), check_tensor("key", key), check_tensor("value", value)
    for name, t in (("query", q), ("key", k), ("value", v)):
        if t.dim() < 2:
            raise ValueError(f"{name}: expected a tensor of shape (*, length, features), got shape {shape_text(t)}")
    check_same("key", k, "query", q)
    check_same("value", v, "query", q)
    if k.shape[-1] != q.shape[-1]:
        raise ValueError(
            f"key: expected shape (*, S, {q.shape[-1]}), the features of query of shape {shape_text(q)}, "
            f"got shape {shape_text(k)}"
        )
    if v.shape[-2] != k.shape[-2]:
        raise ValueError(
            f"value: expected shape (*, {k.shape[-2]}, Ev), as many rows as key of shape {shape_text(k)}, "
            f"got shape {shape_text(v)}"
        )
    try:
        batch = tuple(torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2]))
    except RuntimeError:
        raise ValueError(
            f"query, key, value: batch dimensions must broadcast, got shapes {shape_text(q)}, {shape_text(k)} "
            f"and {shape_text(v)}"
        ) from None
    if not 0.0 <= dropout_p <= 1.0:
        raise ValueError(f"dropout_p: expected a probability in [0, 1], got {dropout_p}")
    if attn_mask is not None:
        if is_causal:
            raise ValueError("attn_mask, is_causal: give one or the other (is_causal makes its own mask), got both")
        if not isinstance(attn_mask, Tensor):
            raise TypeError(f"attn_mask: expected a tensor or None, got {type(attn_mask).__name__}")
        scores = (*batch, q.shape[-2], k.shape[-2])
        try:
            fits = tuple(torch.broadcast_shapes(attn_mask.shape, scores)) == scores
        except RuntimeError:
            fits = False
        if not fits:
            raise ValueError(
                f"attn_mask: expected a shape that broadcasts to (*, L, S) = {scores} for query of shape "
                f"{shape_text(q)} and key of shape {shape_text(k)}, got shape {shape_text(attn_mask)}"
            )
    return q, k, v, batch


def _shared_heads(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """K and V with each of their heads (dimension −3) repeated for its group of query heads."""
    if k.dim() < 3 or v.dim() < 3 or q.dim() < 3 or k.shape[-3] == q.shape[-3]:
        return k, v
    heads, kv_heads = q.shape[-3], k.shape[-3]
    if heads % kv_heads or v.shape[-3] != kv_heads:
        raise ValueError(
            f"key, value: with enable_gqa, expected a number of heads (dim -3) dividing query's {heads}, "
            f"got key of shape {shape_text(k)} and value of shape {shape_text(v)}"
        )
    return k.repeat_interleave(heads // kv_heads, -3), v.repeat_interleave(heads // kv_heads, -3)


def scaled_dot_product_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attn_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> Tensor:
    """O = (softmax(Q Kᵀ·scale + M) ⊙ m̃) V, like ``torch.nn.functional.scaled_dot_product_attention``.

    The backward is written out: ∂V = Pᵀ δ, ∂P = δ Vᵀ, ∂S = P ⊙ (∂P − rowsum(∂P ⊙ P)),
    ∂Q = ∂S K·scale, ∂K = ∂Sᵀ Q·scale (with m̃ where dropout is on, see
    ``torchbp.derivatives.attention.Attention``).

    Args:
        query: Q, shape ``(*, L, E)``.
        key: K, shape ``(*, S, E)``.
        value: V, shape ``(*, S, Ev)``; the batch dimensions ``*`` of the three broadcast.
        attn_mask: broadcastable to ``(*, L, S)``: boolean (True where a query may attend) or
            additive, in ``query``'s dtype.
        dropout_p: the probability of dropping an attention weight (applied whatever the mode,
            as torch's).
        is_causal: each query attends to keys up to its own position (top-left aligned).
        scale: the factor of Q Kᵀ; ``None`` is 1/√E.
        enable_gqa: let ``key`` and ``value`` have fewer heads (dimension −3) than ``query``, each
            shared by a group of query heads.

    Returns:
        O, shape ``(*, L, Ev)``.

    Examples:
        >>> import torch
        >>> q = k = torch.zeros(1, 2, 4)
        >>> scaled_dot_product_attention(q, k, torch.tensor([[[1.0], [3.0]]]))
        tensor([[[2.],
                 [2.]]])
    """
    if enable_gqa:
        key, value = _shared_heads(check_tensor("query", query), check_tensor("key", key), check_tensor("value", value))
    q, k, v, _ = check_attention(query, key, value, attn_mask, dropout_p, is_causal)
    mask = None if attn_mask is None else additive_mask("attn_mask", attn_mask, q.dtype, True)
    low = autocast_dtype(q)
    if low is not None:  # autocast's policy for attention: Q, K, V and the mask in its dtype
        q, k, v = cast_floating(q, low), cast_floating(k, low), cast_floating(v, low)
        mask = cast_floating(mask, low)
    factor = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    dropout_mask = None
    if dropout_p > 0.0:
        batch = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2])
        dropout_mask = draw_mask(q.new_empty(*batch, q.shape[-2], k.shape[-2]), dropout_p)
    return apply_layer(Attention(factor, is_causal), q, (k, v, mask, dropout_mask))


def _in_projection(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    weights: tuple[Tensor, Tensor, Tensor],
    biases: tuple[Tensor | None, ...],
    packed: tuple[Tensor, Tensor | None] | None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Q = query W_qᵀ + b_q, K = key W_kᵀ + b_k, V = value W_vᵀ + b_v, through torchbp's linear;
    one product with the packed ``(3E, E)`` weight where query, key and value are one tensor."""
    if packed is not None and query is key and key is value:
        return _projection(query, *packed).chunk(3, -1)  # type: ignore[return-value]
    return (
        _projection(query, weights[0], biases[0]),
        _projection(key, weights[1], biases[1]),
        _projection(value, weights[2], biases[2]),
    )


def _projection(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """x Wᵀ + b through torchbp's linear, under autocast in its dtype (as torch's linear casts)."""
    x, weight, bias = autocast_args(x, weight, bias)
    return apply_layer(_LINEAR, x, (weight, bias))


def _batch_first(query: Tensor, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(L, N, E)`` → ``(N, L, E)`` views, keeping one tensor one tensor (self-attention projects once)."""
    q = query.transpose(0, 1)
    k = q if key is query else key.transpose(0, 1)
    v = q if value is query else k if value is key else value.transpose(0, 1)
    return q, k, v


def _check_heads(
    embed_dim: int, num_heads: int, query: Tensor, key: Tensor, value: Tensor, kdim: int, vdim: int
) -> None:
    if num_heads <= 0 or embed_dim % num_heads:
        raise ValueError(
            f"num_heads: expected a positive number dividing embed_dim {embed_dim} (the heads split the width), "
            f"got {num_heads}"
        )
    for name, t, width in (("query", query, embed_dim), ("key", key, kdim), ("value", value, vdim)):
        if t.dim() not in (2, 3) or t.shape[-1] != width:
            raise ValueError(
                f"{name}: expected shape (L, N, {width}), (N, L, {width}) with batch_first, or (L, {width}) "
                f"unbatched, got shape {shape_text(t)}"
            )
    if not query.dim() == key.dim() == value.dim():
        raise ValueError(
            f"query, key, value: expected all batched or all unbatched, got shapes {shape_text(query)}, "
            f"{shape_text(key)} and {shape_text(value)}"
        )
    if key.shape[:-1] != value.shape[:-1]:
        raise ValueError(
            f"value: expected the sequence and batch dims of key of shape {shape_text(key)}, "
            f"got shape {shape_text(value)}"
        )
    if query.dim() == 3 and query.shape[1] != key.shape[1]:
        raise ValueError(
            f"key: expected batch size {query.shape[1]}, that of query of shape {shape_text(query)} "
            f"(in (L, N, E) layout), got shape {shape_text(key)}"
        )


def _check_masks(
    key_padding_mask: Tensor | None,
    attn_mask: Tensor | None,
    batch: int,
    heads: int,
    length: int,
    source: int,
    batched: bool,
) -> None:
    if key_padding_mask is not None:
        expected = (batch, source) if batched else (source,)
        if tuple(key_padding_mask.shape) != expected:
            raise ValueError(
                f"key_padding_mask: expected shape {expected} (batch, source length), got shape "
                f"{shape_text(key_padding_mask)}"
            )
    if attn_mask is not None:
        allowed = (
            [(length, source), (batch * heads, length, source)]
            if batched
            else [(length, source), (heads, length, source)]
        )
        if tuple(attn_mask.shape) not in allowed:
            raise ValueError(
                f"attn_mask: expected shape {allowed[0]} or {allowed[1]} (batch × heads, L, S), got shape "
                f"{shape_text(attn_mask)}"
            )


def multi_head_attention_forward(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    num_heads: int,
    in_proj: tuple[Tensor, Tensor, Tensor],
    in_proj_bias: Tensor | None,
    packed_weight: Tensor | None,
    out_proj_weight: Tensor,
    out_proj_bias: Tensor | None,
    bias_k: Tensor | None = None,
    bias_v: Tensor | None = None,
    add_zero_attn: bool = False,
    dropout_p: float = 0.0,
    key_padding_mask: Tensor | None = None,
    need_weights: bool = True,
    attn_mask: Tensor | None = None,
    average_attn_weights: bool = True,
    is_causal: bool = False,
    on_delta: Callable[[Tensor], None] | None = None,
) -> tuple[Tensor, Tensor | None]:
    """``torch.nn.functional.multi_head_attention_forward``, sequence-first, with torchbp's layers.

    Q, K, V are projected by torchbp's linear, split into heads, attended by
    ``scaled_dot_product_attention``'s Function and projected out by torchbp's linear.

    Args:
        query: ``(L, N, E)`` or ``(L, E)``.
        key: ``(S, N, kdim)`` or ``(S, kdim)``.
        value: ``(S, N, vdim)`` or ``(S, vdim)``.
        num_heads: H, dividing E.
        in_proj: W_q ``(E, E)``, W_k ``(E, kdim)``, W_v ``(E, vdim)``.
        in_proj_bias: ``(3E,)`` or ``None``.
        packed_weight: the ``(3E, E)`` weight that W_q, W_k, W_v are views of, or ``None``.
        out_proj_weight, out_proj_bias: ``(E, E)`` and ``(E,)``.
        bias_k, bias_v: ``(1, 1, E)`` rows appended to K and V, or ``None``.
        add_zero_attn: append a row of zeros to K and V (after the heads split).
        dropout_p: the probability of dropping an attention weight.
        key_padding_mask: ``(N, S)`` (or ``(S,)``), True or −∞ where a key is padding.
        need_weights: also return the attention weights (P after dropout); they are outputs to
            read, not to differentiate (autograd treats them as constants).
        attn_mask: ``(L, S)`` or ``(N·H, L, S)``, True or −∞ where attention is not allowed.
        average_attn_weights: average the weights over the heads.
        is_causal: ``attn_mask`` is the causal mask (it may then be skipped, as torch does).
        on_delta: called with δ = ∂C/∂O of the attention (before the output projection),
            shape ``(N, H, L, E/H)``.

    Returns:
        the output ``(L, N, E)`` (or ``(L, E)``), and the weights ``(N, L, S)`` averaged or
        ``(N, H, L, S)`` per head (without N unbatched), or ``None``.
    """
    embed_dim = query.shape[-1]
    _check_heads(embed_dim, num_heads, query, key, value, in_proj[1].shape[1], in_proj[2].shape[1])
    batched = query.dim() == 3
    if not batched:
        query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
    length, batch, _ = query.shape
    heads, head_dim = num_heads, embed_dim // num_heads
    _check_masks(key_padding_mask, attn_mask, batch, heads, length, key.shape[0], batched)
    if not batched and key_padding_mask is not None:
        key_padding_mask = key_padding_mask.unsqueeze(0)
    if is_causal and attn_mask is None:
        raise ValueError("is_causal: expected attn_mask too (is_causal is a hint that attn_mask is the causal mask)")
    dtype = query.dtype
    padding = None if key_padding_mask is None else additive_mask("key_padding_mask", key_padding_mask, dtype, False)
    causal = is_causal and padding is None and not need_weights
    mask = None if attn_mask is None or causal else additive_mask("attn_mask", attn_mask, dtype, False)
    low = autocast_dtype(query)
    if low is not None:  # added to the projections' scores, which autocast makes in its dtype
        padding, mask = cast_floating(padding, low), cast_floating(mask, low)
    biases: tuple[Tensor | None, ...] = (None, None, None) if in_proj_bias is None else in_proj_bias.chunk(3)
    packed = None if packed_weight is None else (packed_weight, in_proj_bias)
    # projected batch first, (N, L, E): each example's rows together, where per-example rules read them
    q, k, v = _in_projection(*_batch_first(query, key, value), in_proj, biases, packed)
    if bias_k is not None and bias_v is not None:
        # in K's and V's dtype (autocast's, where it is on), as attention's matmuls would cast them
        k = torch.cat([k, bias_k.to(k.dtype).repeat(batch, 1, 1)], 1)
        v = torch.cat([v, bias_v.to(v.dtype).repeat(batch, 1, 1)], 1)
        mask = None if mask is None else torch.nn.functional.pad(mask, (0, 1))
        padding = None if padding is None else torch.nn.functional.pad(padding, (0, 1))
    # (N, L, E) → (N, H, L, E/H)
    q = q.reshape(batch, length, heads, head_dim).transpose(1, 2)
    k = k.reshape(batch, k.shape[1], heads, head_dim).transpose(1, 2)
    v = v.reshape(batch, v.shape[1], heads, head_dim).transpose(1, 2)
    if add_zero_attn:
        zeros = q.new_zeros(batch, heads, 1, head_dim)
        k, v = torch.cat([k, zeros], 2), torch.cat([v, zeros], 2)
        mask = None if mask is None else torch.nn.functional.pad(mask, (0, 1))
        padding = None if padding is None else torch.nn.functional.pad(padding, (0, 1))
    source = k.shape[2]
    if mask is not None and mask.dim() == 3:
        mask = mask.view(batch, heads, length, source)
    if padding is not None:
        padding = padding.view(batch, 1, 1, source)
        mask = padding if mask is None else mask + padding
    dropout_mask = None
    if dropout_p > 0.0:
        # drawn as torch's weights-path dropout draws it, over (N·H, L, S)
        dropout_mask = draw_mask(q.new_empty(batch * heads, length, source), dropout_p).view(
            batch, heads, length, source
        )
    derivatives = Attention(1.0 / math.sqrt(head_dim), causal)
    o, p = apply_layer_with_buffers(derivatives, q, (k, v, mask, dropout_mask), on_delta)
    # (N, H, L, E/H) → (N, L, E), then the output projection, back to (L, N, E) laid out as torch's
    # own (a layer after it that follows the memory layout, as dropout's mask does, then sees the same)
    o = o.transpose(1, 2).reshape(batch, length, embed_dim)
    output = _projection(o, out_proj_weight, out_proj_bias).transpose(0, 1).contiguous()
    weights = None
    if need_weights:
        weights = p if dropout_mask is None else p * dropout_mask
        if average_attn_weights:
            weights = weights.mean(1)
    if not batched:
        output = output.squeeze(1)
        weights = None if weights is None else weights.squeeze(0)
    return output, weights
