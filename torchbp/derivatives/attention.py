"""Scaled dot-product attention: O = softmax(Q Kᵀ·scale + M) V, and its backward written out.

Conventions (PyTorch's): ``q`` is ``(*, L, E)``, ``k`` is ``(*, S, E)``, ``v`` is ``(*, S, Ev)``,
the batch dimensions ``*`` broadcast against each other; ``attn_mask`` M is additive, broadcastable
to ``(*, L, S)`` (−∞ where a query may not look); the dropout mask m̃ (entries 0 and 1/(1 − p),
drawn by ``torchbp.derivatives.dropout.draw_mask`` outside the layer) is ``(*, L, S)``. The
forward pass::

    S = Q Kᵀ·scale + M        (−∞ above the diagonal too, where causal)
    P = softmax(S)            (by rows; a row masked everywhere gives zeros, as torch's math path)
    O = (P ⊙ m̃) V

and the backward pass, from δ = ∂C/∂O::

    ∂V = (P ⊙ m̃)ᵀ δ
    ∂P = (δ Vᵀ) ⊙ m̃
    ∂S = P ⊙ (∂P − rowsum(∂P ⊙ P))       (the softmax's Jacobian, one row at a time)
    ∂Q = ∂S K·scale,  ∂K = ∂Sᵀ Q·scale,  ∂M = ∂S

P is made in the forward pass and handed out as a buffer (the attention weights), so the backward
pass reads it instead of recomputing the softmax; what is kept is Q, K, V, the masks and P: no
more than torch's math path keeps (scaled copies of Q and K, P, V).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch
from torch import Tensor

from .base import Derivatives, Sample
from .dropout import draw_mask


def scores(q: Tensor, k: Tensor, scale: float, attn_mask: Tensor | None, causal: bool) -> Tensor:
    """S = Q Kᵀ·scale + M, shape ``(*, L, S)``, with −∞ above the diagonal where ``causal``
    (the top-left-aligned lower triangle, as ``torch.nn.functional.scaled_dot_product_attention``)."""
    s = torch.matmul(q, k.transpose(-2, -1)) * scale
    if causal:
        length, source = s.shape[-2], s.shape[-1]
        above = torch.ones(length, source, dtype=torch.bool, device=s.device).triu(1)
        s = s.masked_fill(above, float("-inf"))
    if attn_mask is not None:
        s = s + attn_mask
    return s


def probabilities(s: Tensor, masked: bool) -> Tensor:
    """P = softmax(S) by rows; where ``masked``, a row that is −∞ everywhere gives zeros (not NaN)."""
    p = torch.softmax(s, -1, dtype=s.dtype)  # in S's dtype, also where autocast would make it float32
    if masked:
        p = p.masked_fill((s == float("-inf")).all(-1, keepdim=True), 0.0)
    return p


def softmax_vjp(grad_p: Tensor, p: Tensor) -> Tensor:
    """∂S = P ⊙ (∂P − rowsum(∂P ⊙ P)): δ through the softmax of each row."""
    return p * (grad_p - (grad_p * p).sum(-1, keepdim=True))


def softmax_jvp(s_t: Tensor, p: Tensor) -> Tensor:
    """Ṗ = P ⊙ (Ṡ − rowsum(P ⊙ Ṡ)): the softmax's Jacobian is symmetric, so the same product."""
    return softmax_vjp(s_t, p)


class AttentionSaved(NamedTuple):
    """Q and K (for ∂K and ∂Q, and P afresh in a double backward), V (for ∂P), the masks, and P."""

    q: Tensor | None
    k: Tensor | None
    v: Tensor | None
    attn_mask: Tensor | None
    dropout_mask: Tensor | None
    p: Tensor


@dataclass(frozen=True)
class Attention(Derivatives):
    """O = (P ⊙ m̃) V, P = softmax(Q Kᵀ·scale + M): ∂V = (P ⊙ m̃)ᵀ δ, ∂P = (δ Vᵀ) ⊙ m̃,
    ∂S = P ⊙ (∂P − rowsum(∂P ⊙ P)), ∂Q = ∂S K·scale, ∂K = ∂Sᵀ Q·scale, ∂M = ∂S.

    Attributes:
        scale: the factor of Q Kᵀ (torch's default is 1/√E).
        causal: mask the keys after each query (the upper triangle of S, top-left aligned).

    x is the query Q; the parameters are ``key`` K, ``value`` V, ``attn_mask`` M (additive,
    or ``None``) and ``dropout_mask`` m̃ (or ``None``). The buffer is P, ``(*, L, S)``.
    """

    kind: ClassVar[str] = "attention"
    params: ClassVar[tuple[str, ...]] = ("key", "value", "attn_mask", "dropout_mask")
    Saved: ClassVar[type[AttentionSaved]] = AttentionSaved
    saves_own: ClassVar[bool] = True

    scale: float = 1.0
    causal: bool = False

    def forward(self, x: Tensor, *params: Tensor | None) -> tuple[Tensor, tuple[Tensor, ...]]:
        k, v, attn_mask, dropout_mask = params
        assert k is not None and v is not None
        p = probabilities(scores(x, k, self.scale, attn_mask, self.causal), attn_mask is not None)
        p_kept = p if dropout_mask is None else p * dropout_mask
        return torch.matmul(p_kept, v), (p,)

    def save(
        self,
        x: Tensor,
        params: tuple[Tensor | None, ...],
        z: Tensor,
        buffers: tuple[Tensor, ...],
        needs: tuple[bool, ...],
    ) -> AttentionSaved:
        k, v, attn_mask, dropout_mask = params
        through_s = needs[0] or needs[1] or needs[3]  # Q, K or M: δ goes through S
        keep_v = through_s or needs[4]
        return AttentionSaved(
            x if through_s else None,
            k if through_s else None,
            v if keep_v else None,
            attn_mask,
            dropout_mask,
            buffers[0],
        )

    def probabilities(self, saved: AttentionSaved) -> Tensor:
        """P, recomputed from Q and K with differentiable ops where a double backward is being
        recorded (the buffer is a constant to autograd), else the buffer."""
        if torch.is_grad_enabled() and saved.q is not None and saved.k is not None:
            s = scores(saved.q, saved.k, self.scale, saved.attn_mask, self.causal)
            return probabilities(s, saved.attn_mask is not None)
        return saved.p

    def vjps(self, delta: Tensor, saved: AttentionSaved, needs: tuple[bool, ...]) -> tuple[Tensor | None, ...]:
        needs_q, needs_k, needs_v, needs_mask, needs_dropout = needs
        p = self.probabilities(saved)
        m = saved.dropout_mask
        p_kept = p if m is None else p * m
        grad_q = grad_k = grad_v = grad_mask = grad_dropout = None
        if needs_v:
            assert saved.v is not None
            # ∂V = (P ⊙ m̃)ᵀ δ
            grad_v = torch.matmul(p_kept.transpose(-2, -1), delta).sum_to_size(saved.v.shape)
        if needs_q or needs_k or needs_mask or needs_dropout:
            assert saved.v is not None
            # ∂(P ⊙ m̃) = δ Vᵀ
            grad_p_kept = torch.matmul(delta, saved.v.transpose(-2, -1))
            if needs_dropout:
                assert m is not None
                # ∂m̃ = ∂(P ⊙ m̃) ⊙ P
                grad_dropout = (grad_p_kept * p).sum_to_size(m.shape)
            # ∂P = ∂(P ⊙ m̃) ⊙ m̃
            grad_p = grad_p_kept if m is None else grad_p_kept * m
            # ∂S = P ⊙ (∂P − rowsum(∂P ⊙ P))
            grad_s = softmax_vjp(grad_p, p)
            if needs_mask:
                assert saved.attn_mask is not None
                # ∂M = ∂S
                grad_mask = grad_s.sum_to_size(saved.attn_mask.shape)
            if needs_q:
                assert saved.k is not None
                # ∂Q = ∂S K·scale
                grad_q = (torch.matmul(grad_s, saved.k) * self.scale).sum_to_size(saved.q.shape)  # type: ignore[union-attr]
            if needs_k:
                assert saved.q is not None
                # ∂K = ∂Sᵀ Q·scale
                grad_k = (torch.matmul(grad_s.transpose(-2, -1), saved.q) * self.scale).sum_to_size(saved.k.shape)  # type: ignore[union-attr]
        return grad_q, grad_k, grad_v, grad_mask, grad_dropout

    def input_vjp(self, delta: Tensor, saved: AttentionSaved) -> Tensor:
        grad_q = self.vjps(delta, saved, (True, False, False, False, False))[0]
        assert grad_q is not None
        return grad_q

    def param_vjps(self, delta: Tensor, saved: AttentionSaved, needs: tuple[bool, ...]) -> tuple[Tensor | None, ...]:
        return self.vjps(delta, saved, (False, *needs))[1:]

    def jvp(self, saved: AttentionSaved, x_t: Tensor | None, *params_t: Tensor | None) -> Tensor:
        k_t, v_t, mask_t, dropout_t = params_t
        q, k, v, m, p = saved.q, saved.k, saved.v, saved.dropout_mask, saved.p
        assert q is not None and k is not None and v is not None
        p_kept = p if m is None else p * m
        # Ṡ = (Q̇ Kᵀ + Q K̇ᵀ)·scale + Ṁ
        s_t = torch.zeros_like(p)
        if x_t is not None:
            s_t = s_t + torch.matmul(x_t, k.transpose(-2, -1)) * self.scale
        if k_t is not None:
            s_t = s_t + torch.matmul(q, k_t.transpose(-2, -1)) * self.scale
        if mask_t is not None:
            s_t = s_t + mask_t
        # Ṗ = P ⊙ (Ṡ − rowsum(P ⊙ Ṡ))
        p_t = softmax_jvp(s_t, p)
        # (P ⊙ m̃)˙ = Ṗ ⊙ m̃ + P ⊙ m̃̇
        p_kept_t = p_t if m is None else p_t * m
        if dropout_t is not None:
            p_kept_t = p_kept_t + p * dropout_t
        # Ȯ = (P ⊙ m̃)˙ V + (P ⊙ m̃) V̇
        o_t = torch.matmul(p_kept_t, v)
        if v_t is not None:
            o_t = o_t + torch.matmul(p_kept, v_t)
        return o_t

    @classmethod
    def samples(cls, dtype: torch.dtype, device: torch.device | str) -> list[Sample]:
        def make(*shape: int) -> Tensor:
            return torch.randn(shape, dtype=dtype, device=device)

        plain = cls(scale=0.5)
        q, k, v = make(2, 3, 4), make(2, 5, 4), make(2, 5, 3)
        return [
            Sample("batch of 2, L 3, S 5", plain, q, (k, v, None, None)),
            Sample("no batch dimension", cls(scale=0.7), make(3, 2), (make(4, 2), make(4, 2), None, None)),
            Sample(
                "heads (2, 2, L, E), causal",
                cls(scale=0.5, causal=True),
                make(2, 2, 4, 3),
                (make(2, 2, 4, 3), make(2, 2, 4, 3), None, None),
            ),
            Sample("additive mask (L, S), broadcast", plain, q, (k, v, make(3, 5), None)),
            Sample("additive mask per batch", plain, q, (k, v, make(2, 3, 5), None)),
            Sample("dropout mask p 0.3", plain, q, (k, v, None, draw_mask(make(2, 3, 5), 0.3))),
            Sample(
                "causal with a mask, L > S",
                cls(scale=0.3, causal=True),
                make(1, 5, 2),
                (make(1, 3, 2), make(1, 3, 2), make(5, 3), None),
            ),
            Sample("key and value broadcast over the batch", plain, q, (make(1, 5, 4), make(1, 5, 3), None, None)),
            Sample("transposed query", plain, make(2, 4, 3).transpose(1, 2), (k, v, None, None)),
        ]
