"""Each example's own gradient, from the δ a layer's backward pass receives and what it saved.

With the batch cost the mean C = (1/N) Σₖ Cₖ, the δ reaching a layer is δₖ = (1/N) ∂Cₖ/∂zₖ, and
BP4 sums a product over the examples: ∂C/∂W = Σₖ Σₜ δₖₜ uₖₜᵀ (t runs over an example's positions:
one row for a plain batch, each token of a sequence, each window of a convolution). Example k's
gradient of its own cost Cₖ is therefore that sum's k-th term times N::

    gₖ = N Σₜ δₖₜ uₖₜᵀ                         (outer form: a linear or convolution weight)
    gₖ = N Σₜ δₖₜ ⊙ uₖₜ,   u = 1 for a bias      (diagonal form: biases, batch norm's γ and β)

so that ∂C/∂θ = (1/N) Σₖ gₖ, the mean of the per-example gradients. Their norms, mean and sum of
squares follow without writing gₖ out where the form allows it::

    ‖gₖ‖ = N ‖δₖ‖ ‖uₖ‖                              (one row per example)
    ‖gₖ‖² = N² Σₜ Σₛ (δₖₜ · δₖₛ)(uₖₜ · uₖₛ)           (positions: the Gram form)
    (1/N) Σₖ gₖ² = N (δ²)ᵀ (u²)                     (one row per example)

An embedding's δ rows are added into the rows of the table its indices pick, so its gₖ is a
scatter rather than a product (``EmbeddingRows``)::

    gₖ[r] = N Σ_{t: iₖₜ = r} δₖₜ                    (0 for the padding row)

Each layer type says what its δ and u are (``rows_for``); the arithmetic is here once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .base import Derivatives
from .batchnorm import BatchNorm
from .conv import Conv
from .embedding import Embedding
from .linear import Linear
from .norm import LayerNorm, RMSNorm


class PerExampleError(ValueError):
    """A layer cannot give per-example quantities for the δ and input it was given."""


class ParameterRows(ABC):
    """One parameter's per-example gradients gₖ, kept as the factors they are made of, and what
    follows from them: gₖ itself, ‖gₖ‖, (1/N) Σₖ gₖ² and (1/N) Σₖ gₖ.

    Attributes:
        delta: δ, ``(N, …)``: its dtype and device are the quantities'.
        shape: the parameter's shape.
    """

    delta: Tensor
    shape: torch.Size

    @property
    def examples(self) -> int:
        """N, the batch size."""
        return self.delta.shape[0]

    @property
    @abstractmethod
    def factored(self) -> bool:
        """Whether the norm and the second moment come from the factors (no gₖ written out)."""

    @abstractmethod
    def grad_sample(self, out: Tensor | None = None) -> Tensor:
        """gₖ for every k, shape ``(N, *shape)``; written into ``out`` when it is given (and fits)."""

    @abstractmethod
    def norm(self, grad_sample: Tensor | None = None) -> Tensor:
        """‖gₖ‖ for every k, shape ``(N,)`` (``grad_sample``, if given, may be read instead of
        writing gₖ out again)."""

    @abstractmethod
    def second_moment(self, grad_sample: Tensor | None = None) -> Tensor:
        """(1/N) Σₖ gₖ², shape ``shape``."""

    @abstractmethod
    def mean(self, grad_sample: Tensor | None = None) -> Tensor:
        """(1/N) Σₖ gₖ, this layer's ∂C/∂θ, shape ``shape``."""


def _shaped(t: Tensor, shape: tuple[int, ...]) -> Tensor:
    """``t`` viewed as ``shape``, or ``t`` itself when it has that shape (a view is not free next to
    a small layer's products)."""
    return t if t.shape == shape else t.view(shape)


@dataclass(slots=True)
class FactoredRows(ParameterRows):
    """One parameter's per-example gradients where each example is one row (a plain batch, one
    position), kept as their factors: gₖ = N δₖ uₖᵀ per group of channels (a weight) or gₖ = N δₖ
    (a bias, u = 1). Its norm and second moment never write gₖ out.

    Attributes:
        delta: δ per example, ``(N, G·O)`` (group by group).
        u: what δ multiplies, ``(N, G·I)`` (group by group), or ``None`` for a bias.
        groups: G, the groups of channels (a grouped convolution's; 1 otherwise).
        shape: the parameter's shape, which ``(G, O, I)`` or ``(G·O,)`` is reshaped to.
        shared: what the rows of one layer's weight and bias compute once for both: N δ, N ‖δₖ‖, N δ².
    """

    delta: Tensor
    u: Tensor | None
    groups: int
    shape: torch.Size
    shared: dict[str, Tensor] = field(default_factory=dict)

    @property
    def factored(self) -> bool:
        """Always: ‖gₖ‖ = N ‖δₖ‖ ‖uₖ‖ and (1/N) Σₖ gₖ² = N (δ²)ᵀ (u²)."""
        return True

    def scaled(self) -> Tensor:
        """N δ, ``(N, G·O)``: once for a layer's weight and bias."""
        scaled = self.shared.get("scaled")
        if scaled is None:
            scaled = self.shared["scaled"] = self.delta * self.examples
        return scaled

    def grad_sample(self, out: Tensor | None = None) -> Tensor:
        n, scaled = self.examples, self.scaled()
        if self.u is None:
            # gₖ = N δₖ (a bias)
            if out is None:
                return _shaped(scaled, (n, *self.shape))
            _shaped(out, scaled.shape).copy_(scaled)
            return out
        g = self.groups
        o, i = scaled.shape[1] // g, self.u.shape[1] // g
        blocks = (n, o, i) if g == 1 else (n, g, o, i)
        # gₖ = N δₖ uₖᵀ per group: a broadcast product written straight into ``out`` (a matrix
        # product of depth 1 is slower)
        target = None if out is None else _shaped(out, blocks)
        outer = torch.mul(scaled.view(*blocks[:-1], 1), self.u.view(*blocks[:-2], 1, i), out=target)
        return _shaped(outer, (n, *self.shape)) if out is None else out

    def norm(self, grad_sample: Tensor | None = None) -> Tensor:
        n, u, g = self.examples, self.u, self.groups
        if u is None or g == 1:
            scaled_norm = self.shared.get("scaled_norm")
            if scaled_norm is None:
                # ‖gₖ‖ = N ‖δₖ‖ (a bias)
                scaled_norm = self.shared["scaled_norm"] = torch.linalg.vector_norm(self.scaled(), dim=1)
            if u is None:
                return scaled_norm
            # ‖gₖ‖ = N ‖δₖ‖ ‖uₖ‖
            return torch.linalg.vector_norm(u, dim=1).mul_(scaled_norm)
        # ‖gₖ‖² = Σ_groups N² ‖δₖ‖² ‖uₖ‖²
        norms = torch.linalg.vector_norm(self.scaled().view(n, g, -1), dim=2)
        return torch.linalg.vector_norm(norms.mul_(torch.linalg.vector_norm(u.view(n, g, -1), dim=2)), dim=1)

    def second_moment(self, grad_sample: Tensor | None = None) -> Tensor:
        n, u, g = self.examples, self.u, self.groups
        scaled_squared = self.shared.get("scaled_squared")
        if scaled_squared is None:
            # N δₖ², (N, G·O): once for a layer's weight and bias
            scaled_squared = self.shared["scaled_squared"] = self.scaled() * self.delta
        if u is None:
            # (1/N) Σₖ gₖ² = N Σₖ δₖ² (a bias)
            return _shaped(scaled_squared.sum(0), self.shape)
        u_squared = u * u
        if g == 1:
            # (1/N) Σₖ gₖ² = N (δ²)ᵀ (u²)
            return _shaped(torch.mm(scaled_squared.t(), u_squared), self.shape)
        # the same, per group
        return torch.einsum("ngo,ngi->goi", scaled_squared.view(n, g, -1), u_squared.view(n, g, -1)).reshape(self.shape)

    def mean(self, grad_sample: Tensor | None = None) -> Tensor:
        """(1/N) Σₖ gₖ = Σₖ δₖ uₖᵀ, this layer's ∂C/∂θ, shape ``shape``."""
        n, u, g = self.examples, self.u, self.groups
        if u is None:
            return self.delta.sum(0).view(self.shape)
        return torch.einsum("ngo,ngi->goi", self.delta.view(n, g, -1), u.view(n, g, -1)).reshape(self.shape)


@dataclass(slots=True)
class Rows(ParameterRows):
    """One parameter's per-example gradients, as the factors of gₖ = N Σₜ δₖₜ uₖₜᵀ (or ⊙), where
    an example's gradient sums over its positions t (or is diagonal); ``parameter_rows`` gives
    ``FactoredRows`` instead where each example is one row.

    Attributes:
        delta: δ per example, group and position: ``(N, G, T, O)`` (outer) or ``(N, T, O)`` (diagonal).
        u: what δ multiplies: ``(N, G, T, I)`` (outer), ``(N, T, O)`` or ``None`` (diagonal, ``None``
            meaning u = 1, a bias).
        outer: the outer form δ uᵀ (per group) rather than the diagonal form δ ⊙ u.
        shape: the parameter's shape, which ``(G, O, I)`` or ``(O,)`` is reshaped to.
    """

    delta: Tensor
    u: Tensor | None
    outer: bool
    shape: torch.Size

    @property
    def factored(self) -> bool:
        """Never: the second moment reads gₖ (the norm may take the Gram form)."""
        return False

    @property
    def positions(self) -> int:
        """T, the positions each example's gradient sums over."""
        return self.delta.shape[-2]

    def grad_sample(self, out: Tensor | None = None) -> Tensor:
        n = self.examples
        scaled = self.delta * n
        if self.outer:
            assert self.u is not None
            # gₖ = N Σₜ δₖₜ uₖₜᵀ, per group
            target = None if out is None else out.view(n, *self.delta.shape[1:2], self.delta.shape[-1], -1)
            g = torch.matmul(scaled.transpose(-1, -2), self.u, out=target)
        elif self.u is None:
            # gₖ = N Σₜ δₖₜ (a bias)
            g = torch.sum(scaled, 1, out=None if out is None else out.view(n, -1))
        else:
            # gₖ = N Σₜ δₖₜ ⊙ uₖₜ
            g = torch.sum(scaled * self.u, 1, out=None if out is None else out.view(n, -1))
        return g.view(n, *self.shape)

    def norm(self, grad_sample: Tensor | None = None) -> Tensor:
        """‖gₖ‖ for every k, shape ``(N,)``: by the Gram form where it costs less than writing gₖ
        out (``grad_sample``, if given, is read instead)."""
        n, delta, u = self.examples, self.delta, self.u
        if self.outer and grad_sample is None:
            assert u is not None
            t, o, i = self.positions, delta.shape[-1], u.shape[-1]
            if t * (o + i) < o * i:
                # ‖gₖ‖² = N² Σₜ Σₛ (δₖₜ · δₖₛ)(uₖₜ · uₖₛ): the Gram form
                gram = torch.matmul(delta, delta.transpose(-1, -2)).mul_(torch.matmul(u, u.transpose(-1, -2)))
                return gram.flatten(1).sum(1).sqrt_().mul_(n)
        if grad_sample is None:
            grad_sample = self.grad_sample()
        return torch.linalg.vector_norm(grad_sample.flatten(1), dim=1)

    def second_moment(self, grad_sample: Tensor | None = None) -> Tensor:
        """(1/N) Σₖ gₖ², shape ``shape``, from ``grad_sample`` (written out here when not given)."""
        if grad_sample is None:
            grad_sample = self.grad_sample()
        return grad_sample.square().mean(0)

    def mean(self, grad_sample: Tensor | None = None) -> Tensor:
        """(1/N) Σₖ gₖ = Σₖ Σₜ δₖₜ uₖₜᵀ, this layer's ∂C/∂θ, shape ``shape``."""
        if grad_sample is not None:
            return grad_sample.mean(0)
        delta, u = self.delta, self.u
        if self.outer:
            assert u is not None
            return torch.einsum("ngto,ngti->goi", delta, u).reshape(self.shape)
        return (delta if u is None else delta * u).sum((0, 1)).reshape(self.shape)


def parameter_rows(
    delta: Tensor, u: Tensor | None, outer: bool, shape: torch.Size, shared: dict[str, Tensor] | None = None
) -> ParameterRows:
    """A parameter's rows for δ ``(N, G, T, O)`` (outer) or ``(N, T, O)`` (diagonal) and u, as in
    ``Rows``: ``FactoredRows`` (sharing ``shared`` with the layer's other parameters) where each
    example is one row (T = 1) in the outer form or a bias, ``Rows`` otherwise."""
    if delta.shape[-2] != 1 or not (outer or u is None):
        return Rows(delta, u, outer, shape)
    n = delta.shape[0]
    flat_u = None if u is None else u.reshape(n, -1)
    return FactoredRows(
        delta.reshape(n, -1), flat_u, delta.shape[1] if outer else 1, shape, {} if shared is None else shared
    )


@dataclass(slots=True)
class EmbeddingRows(ParameterRows):
    """An embedding table's per-example gradients, gₖ[r] = N Σ_{t: iₖₜ = r} δₖₜ: each example's δ
    rows added into the rows its indices pick.

    Attributes:
        delta: δ per example and position, ``(N, T, D)``, 0 at the padding index's positions.
        indices: the rows looked up, ``(N, T)``.
        shape: the table's shape ``(V, D)``.
        segments: what ``sums`` found, kept for the other quantities of the same rows.
    """

    delta: Tensor
    indices: Tensor
    shape: torch.Size
    segments: tuple[Tensor, Tensor] | None = None

    @property
    def factored(self) -> bool:
        """Always: the norm and second moment come from each example's sum per row used."""
        return True

    def sums(self) -> tuple[Tensor, Tensor]:
        """The (example, row) pairs in use, as keys k·V + r ``(U,)``, and each pair's gradient row
        N Σ_{t: iₖₜ = r} δₖₜ, ``(U, D)``: at most N·T rows, never the whole ``(N, V, D)``."""
        if self.segments is None:
            n, rows, width = self.examples, self.shape[0], self.shape[1]
            keys = (torch.arange(n, device=self.indices.device).unsqueeze(1) * rows + self.indices).reshape(-1)
            used, pair = torch.unique(keys, return_inverse=True)
            scaled = self.delta.reshape(-1, width) * n
            self.segments = used, scaled.new_zeros(len(used), width).index_add_(0, pair, scaled)
        return self.segments

    def grad_sample(self, out: Tensor | None = None) -> Tensor:
        n, rows, width = self.examples, self.shape[0], self.shape[1]
        keys = (torch.arange(n, device=self.indices.device).unsqueeze(1) * rows + self.indices).reshape(-1)
        target = self.delta.new_zeros(n * rows, width) if out is None else out.view(n * rows, width).zero_()
        # gₖ[r] = N Σ_{t: iₖₜ = r} δₖₜ: example k's δ rows added into its block of rows
        target.index_add_(0, keys, self.delta.reshape(-1, width), alpha=n)
        return target.view(n, *self.shape)

    def norm(self, grad_sample: Tensor | None = None) -> Tensor:
        used, sums = self.sums()
        # ‖gₖ‖² = Σ over the rows r example k uses of ‖N Σ_{t: iₖₜ = r} δₖₜ‖²
        squares = sums.square().sum(1)
        rows = self.shape[0]
        return squares.new_zeros(self.examples).index_add_(0, used // rows, squares).sqrt_()

    def second_moment(self, grad_sample: Tensor | None = None) -> Tensor:
        used, sums = self.sums()
        # (1/N) Σₖ gₖ[r]² = (1/N) Σ over the examples using r of their row sums squared
        rows = self.shape[0]
        return sums.new_zeros(self.shape).index_add_(0, used % rows, sums.square(), alpha=1 / self.examples)

    def mean(self, grad_sample: Tensor | None = None) -> Tensor:
        # (1/N) Σₖ gₖ[r] = Σ_{k, t: iₖₜ = r} δₖₜ, the batch's ∂C/∂W
        width = self.shape[1]
        flat = self.delta.reshape(-1, width)
        return flat.new_zeros(self.shape).index_add_(0, self.indices.reshape(-1), flat)


def _batched(name: str, tensor: Tensor, dims: int) -> None:
    if tensor.dim() < dims:
        raise PerExampleError(
            f"per-example quantities need a batch dimension: the {name} layer's input has shape "
            f"{tuple(tensor.shape)}; give it a batch of examples (dimension 0)"
        )


def linear_rows(delta: Tensor, x: Tensor | None, params: tuple[Tensor | None, ...]) -> list[ParameterRows | None]:
    """z = x Wᵀ + b with x ``(N, *, in)``: u = each position's input row for W, u = 1 for b."""
    weight, bias = params[:2]
    _batched("linear", delta, 2)
    n, o = delta.shape[0], delta.shape[-1]
    rows: list[ParameterRows | None] = [None, None]
    shared: dict[str, Tensor] = {}
    if delta.dim() == 2:  # one row per example: the factors as they come
        if weight is not None and x is not None:
            rows[0] = FactoredRows(delta, x, 1, weight.shape, shared)
        if bias is not None:
            rows[1] = FactoredRows(delta, None, 1, bias.shape, shared)
        return rows
    delta_rows = delta.reshape(n, 1, -1, o)
    if weight is not None and x is not None:
        rows[0] = parameter_rows(delta_rows, x.reshape(n, 1, -1, x.shape[-1]), True, weight.shape, shared)
    if bias is not None:
        rows[1] = parameter_rows(delta_rows[:, 0], None, False, bias.shape, shared)
    return rows


def conv_rows(
    conv: Conv, delta: Tensor, x: Tensor | None, params: tuple[Tensor | None, ...]
) -> list[ParameterRows | None]:
    """z = W ⋆ x + b: u = each window of x (unfolded), per group of channels, for W; u = 1 for b."""
    weight, bias = params[:2]
    spatial = len(conv.stride)
    _batched("convolution", delta, spatial + 2)
    n, c_out, groups = delta.shape[0], delta.shape[1], conv.groups
    # δ: (N, C_out, *positions) → (N, G, T, C_out/G)
    delta_rows = delta.reshape(n, groups, c_out // groups, -1).transpose(-1, -2)
    rows: list[ParameterRows | None] = [None, None]
    shared: dict[str, Tensor] = {}
    if weight is not None and x is not None:
        windows = _windows(conv, x, weight.shape[2:])
        # u: (N, C_in·k, T) → (N, G, T, C_in/G · k)
        u = windows.reshape(n, groups, -1, windows.shape[-1]).transpose(-1, -2)
        rows[0] = parameter_rows(delta_rows, u, True, weight.shape, shared)
    if bias is not None:
        bias_delta = delta_rows.transpose(1, 2).reshape(n, -1, c_out)
        rows[1] = parameter_rows(bias_delta, None, False, bias.shape, shared)
    return rows


def _windows(conv: Conv, x: Tensor, kernel: tuple[int, ...]) -> Tensor:
    """The input windows each output position sees, ``(N, C_in·k, T)`` (``torch.nn.functional.unfold``;
    a 1-d convolution as a 2-d one of height 1)."""
    if len(conv.stride) == 1:
        return torch.nn.functional.unfold(
            x.unsqueeze(2), (1, *kernel), (1, *conv.dilation), (0, *conv.padding), (1, *conv.stride)
        )
    return torch.nn.functional.unfold(x, kernel, conv.dilation, conv.padding, conv.stride)


def batch_norm_rows(
    norm: BatchNorm, delta: Tensor, saved: Any, params: tuple[Tensor | None, ...]
) -> list[ParameterRows | None]:
    """z = γ x̂ + β with the running statistics (eval): u = x̂ for γ, u = 1 for β, per channel."""
    if norm.training:
        raise PerExampleError(
            "per-example gradients are not defined for batch norm in training mode: each example's output "
            "depends on the whole batch through the batch's mean and variance. Put the layer in eval mode "
            "(layer.eval(), which normalises with the running statistics) or freeze its parameters"
        )
    weight, bias = params[:2]
    _batched("batch norm", delta, 2)
    n, c = delta.shape[:2]
    # δ: (N, C, *positions) → (N, T, C)
    delta_rows = delta.reshape(n, c, -1).transpose(1, 2)
    rows: list[ParameterRows | None] = [None, None]
    if weight is not None and saved.x is not None:
        assert saved.running_mean is not None and saved.running_var is not None
        shape = (1, c) + (1,) * (delta.dim() - 2)
        # x̂ = (x − μ_run) / √(σ²_run + ε)
        x_hat = (saved.x - saved.running_mean.view(shape)) * torch.rsqrt(saved.running_var.view(shape) + norm.eps)
        rows[0] = parameter_rows(delta_rows, x_hat.reshape(n, c, -1).transpose(1, 2), False, weight.shape)
    if bias is not None:
        rows[1] = parameter_rows(delta_rows, None, False, bias.shape)
    return rows


def norm_rows(
    name: str, normalized_ndim: int, delta: Tensor, x_hat: Tensor, params: tuple[Tensor | None, ...]
) -> list[ParameterRows | None]:
    """z = γ ⊙ x̂ (+ β) over the trailing ``normalized_ndim`` dimensions (layer and RMS norm): u = x̂
    for γ, u = 1 for β, elementwise, each position of an example one row."""
    _batched(name, delta, normalized_ndim + 1)
    n = delta.shape[0]
    width = delta.shape[delta.dim() - normalized_ndim :].numel()
    # δ: (N, *positions, *normalized_shape) → (N, T, D)
    delta_rows = delta.reshape(n, -1, width)
    rows: list[ParameterRows | None] = [None] * len(params)
    if params[0] is not None:
        rows[0] = parameter_rows(delta_rows, x_hat.reshape(n, -1, width), False, params[0].shape)
    if len(params) == 2 and params[1] is not None:
        rows[1] = parameter_rows(delta_rows, None, False, params[1].shape)
    return rows


def layer_norm_rows(
    norm: LayerNorm, delta: Tensor, saved: Any, params: tuple[Tensor | None, ...]
) -> list[ParameterRows | None]:
    """Layer norm, x̂ = (x − μ)·r with the statistics the forward pass kept."""
    # x̂ = (x − μ)·r
    x_hat = (saved.x - saved.mean) * saved.rstd
    return norm_rows("layer norm", norm.normalized_ndim, delta, x_hat, params)


def rms_norm_rows(
    norm: RMSNorm, delta: Tensor, saved: Any, params: tuple[Tensor | None, ...]
) -> list[ParameterRows | None]:
    """RMS norm, x̂ = x·r with the statistic the forward pass kept."""
    # x̂ = x·r
    return norm_rows("RMS norm", norm.normalized_ndim, delta, saved.x * saved.rstd, params)


def embedding_rows(
    embedding: Embedding, delta: Tensor, saved: Any, params: tuple[Tensor | None, ...]
) -> list[ParameterRows | None]:
    """z = W[i] with indices ``(N, *)``: each example's δ rows go to the rows its indices pick."""
    if embedding.scale_grad_by_freq:
        raise PerExampleError(
            "per-example gradients are not defined for an embedding with scale_grad_by_freq: each δ is divided by "
            "how often its index occurs in the whole batch, so an example's share depends on the others. Build the "
            "layer without scale_grad_by_freq or freeze its weight"
        )
    (weight,) = params
    indices = saved.indices
    _batched("embedding", delta, 2)
    if weight is None:
        return [None]
    n, width = delta.shape[0], delta.shape[-1]
    indices = indices.reshape(n, -1)
    delta_rows = delta.reshape(n, -1, width)
    if embedding.padding_idx is not None:
        # the padding row learns nothing
        delta_rows = delta_rows * (indices != embedding.padding_idx).unsqueeze(-1).to(delta.dtype)
    return [EmbeddingRows(delta_rows, indices, weight.shape)]


RowsRule = Callable[[Any, Tensor, Any, tuple[Tensor | None, ...]], list[ParameterRows | None]]

RULES: dict[type[Derivatives], RowsRule] = {
    Linear: lambda derivatives, delta, saved, params: linear_rows(delta, saved.x, params),
    Conv: lambda derivatives, delta, saved, params: conv_rows(derivatives, delta, saved.x, params),
    BatchNorm: batch_norm_rows,
    LayerNorm: layer_norm_rows,
    RMSNorm: rms_norm_rows,
    Embedding: embedding_rows,
}
"""Layer type → how its δ and saved tensors become ``Rows``, one per parameter. A layer type
whose class (or a base class) is here gives per-example quantities."""


def rule_for(derivatives: type[Derivatives]) -> RowsRule | None:
    """The rows rule of a layer type or its nearest base class listed in ``RULES``."""
    for owner in derivatives.__mro__:
        rule = RULES.get(owner)  # type: ignore[arg-type]
        if rule is not None:
            return rule
    return None


def rows_for(
    derivatives: Derivatives, delta: Tensor, saved: Any, params: tuple[Tensor | None, ...]
) -> list[ParameterRows | None]:
    """``Rows`` per parameter of a layer (``None`` where a parameter is absent or its input
    was not saved), from the δ its backward pass received and what it saved."""
    rule = rule_for(type(derivatives))
    if rule is None:
        raise PerExampleError(
            f"the {derivatives.kind!r} layer ({type(derivatives).__name__}) cannot give per-example quantities: "
            "it has no per-example rule in torchbp.derivatives.per_example.RULES"
        )
    return rule(derivatives, delta, saved, params)
