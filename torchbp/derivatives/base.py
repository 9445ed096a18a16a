"""The protocol every layer type follows: its equations, in one object, in one file.

A layer type is a frozen dataclass subclass of ``Derivatives`` whose fields are the layer's
settings (stride, padding, momentum, …). An instance is immutable and travels to the layer's
autograd Function as a constant; ``torchbp.functional.factory.function_for`` turns the
class into that Function, and the test harness checks it through ``Derivatives.samples``.

The notation is the δ-recursion's: the layer maps its input x (aˡ⁻¹) and parameters θ to
z = f(x; θ); δ = ∂C/∂z arrives from above; the layer hands back ∂C/∂x (BP2's analogue, what
becomes the δ of the layer below) and ∂C/∂θ (BP3's and BP4's analogues).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

LOW_PRECISION = (torch.float16, torch.bfloat16)
"""The dtypes whose arithmetic ATen runs in float32 (their opmath type) and that autocast casts to."""


@dataclass(frozen=True)
class Sample:
    """Valid arguments of one layer type, for the test harness.

    Attributes:
        label: what this case exercises, e.g. ``"stride 2, dilation 2"``.
        derivatives: the layer's settings.
        x: the input.
        params: the parameters, in the order of ``derivatives.params`` (``None`` for an absent bias).
    """

    label: str
    derivatives: Derivatives
    x: Tensor
    params: tuple[Tensor | None, ...] = ()


@dataclass(frozen=True)
class Derivatives:
    """One layer type: z = f(x; θ), and the products that carry δ = ∂C/∂z back through it.

    Class attributes:
        kind: the layer type's name, e.g. ``"conv"``; its Function is called after it.
        params: the names of the parameter arguments that follow x, e.g. ``("weight", "bias")``.
        Saved: a ``NamedTuple`` of the tensors the backward pass reads, by name.
        saves_own: whether ``save`` keeps nothing but ``x``, ``params``, ``z`` and the
            ``buffers`` that ``forward`` made. A chain node then keeps them as they are: a
            change in place to any of them shows on the version of the node's own input, or
            could only come from the node itself. Leave it false for a layer that keeps a
            tensor from elsewhere (a matrix of its own): each is then checked, when the
            backward pass reads it, against its version at the forward pass.

    Every method is written with differentiable torch ops (ATen's own kernels are welcome for
    the arithmetic), so a double backward through the layer is exact. What the backward reads
    is saved from the Function's inputs and outputs, so it stays in the graph too.
    """

    kind: ClassVar[str] = "layer"
    params: ClassVar[tuple[str, ...]] = ()
    Saved: ClassVar[type[Any]]
    saves_own: ClassVar[bool] = False

    def forward(self, x: Tensor, *params: Tensor | None) -> tuple[Tensor, tuple[Tensor, ...]]:
        """z, and the tensors made on the way that the backward pass reads (max-pool indices, a
        dropout mask, batch statistics). Those are handed out as non-differentiable outputs."""
        raise NotImplementedError

    def save(
        self,
        x: Tensor,
        params: tuple[Tensor | None, ...],
        z: Tensor,
        buffers: tuple[Tensor, ...],
        needs: tuple[bool, ...],
    ) -> tuple[Tensor | None, ...]:
        """What the backward pass reads, as a ``Saved``: only what ``needs`` calls for.

        ``needs`` says whether ∂C/∂x and each ∂C/∂θ are wanted (x first).
        """
        raise NotImplementedError

    def input_vjp(self, delta: Tensor, saved: Any) -> Tensor:
        """∂C/∂x from δ = ∂C/∂z: BP2's analogue, the error handed to the layer below."""
        raise NotImplementedError

    def param_vjps(self, delta: Tensor, saved: Any, needs: tuple[bool, ...]) -> tuple[Tensor | None, ...]:
        """∂C/∂θ per parameter from δ (BP3's and BP4's analogues), ``None`` where not needed."""
        return ()

    def vjps(self, delta: Tensor, saved: Any, needs: tuple[bool, ...]) -> tuple[Tensor | None, ...]:
        """``(∂C/∂x, *∂C/∂θ)`` where ``needs`` says, ``None`` elsewhere: ``input_vjp`` then
        ``param_vjps``. A layer whose kernel computes them in one pass (convolution) says so here."""
        grad_x = self.input_vjp(delta, saved) if needs[0] else None
        if True in needs[1:]:
            return grad_x, *self.param_vjps(delta, saved, needs[1:])
        return grad_x, *(None,) * (len(needs) - 1)

    def jvp(self, saved: Any, x_t: Tensor | None, *params_t: Tensor | None) -> Tensor:
        """Forward mode: ż from the tangents ẋ, θ̇ (each may be ``None``). ``saved`` is
        ``save`` with every ``needs`` true."""
        raise NotImplementedError

    def replay(self) -> Derivatives:
        """The same equations without side effects on buffers, for recomputing a forward pass (a
        chain node's double backward replays its layers): batch norm then leaves its running
        statistics alone."""
        return self

    @classmethod
    def samples(cls, dtype: torch.dtype, device: torch.device | str) -> list[Sample]:
        """Valid inputs covering the layer's settings: batch of 1, non-contiguous, every option."""
        raise NotImplementedError
