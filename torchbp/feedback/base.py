"""What a feedback rule is: the matrix B that carries δ down in place of W, and how it changes.

Backprop's BP2 hands the layer below the error δˡ Wˡ (rows are examples): the transpose of the
very weights of the forward pass, "weight transport". A feedback rule replaces that W::

    ∂C/∂aˡ⁻¹ = δˡ Bˡ          (B shaped like W: fa, usf, brsf, frsf, kolen_pollack)
    ∂C/∂aˡ⁻¹ = e Bˡ           (direct rules, dfa: e = ∂C/∂(network output), B (outputs, inputs))

Everything else stays: δ is still multiplied by σ′ on the way (the activation's own backward),
and the layer's own parameter gradients, BP3 and BP4, are still computed from its δ exactly.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor


class FeedbackRule:
    """One way δ travels down through the layers with a weight; subclass it to write one.

    A rule object is built once per model, as ``rule_class(seed=…, **options)``, and shared by the
    model's layers. Each layer keeps its B in a buffer named ``feedback_weight`` (so B is in the
    ``state_dict`` and in every checkpoint) and asks the rule three things:

    - ``initial``: its starting B, drawn from the layer's own generator (seeded from ``seed``
      and the layer's position, independent of the weight initialisation's random stream);
    - ``matrix``: the B this batch's backward pass uses (by default ``feedback_weight``
      itself; sign-symmetry rules derive it from W's current signs);
    - ``learn``: told the layer's weight gradient ∂C/∂W after its backward pass, a rule that
      learns B (Kolen–Pollack) updates ``feedback_weight`` in place.

    A rule that keeps numbers of its own between batches (a random generator's state) returns
    them from ``state``: the layer keeps them in a buffer ``feedback_state`` (so they are in
    every checkpoint too) and hands them to ``matrix``, which advances them in place.

    Class attributes:
        direct: ``True`` for rules that send the network's output error e straight to every
            layer (dfa): B is then ``(network outputs, layer inputs)`` and BP2 becomes e B.
        redraws: ``True`` for rules whose ``matrix`` draws random numbers each batch: the
            layer then seeds its generator from ``(seed, layer, batch count)``, the count kept
            in a buffer ``feedback_draws``, so a resumed run redraws what an unbroken one would.
        exact: ``True`` for backprop only: layers then keep no B and run their exact equations.
        in_place: ``True`` for rules whose ``matrix`` writes this batch's B into
            ``feedback_weight`` in place and returns it, rather than a new tensor (a new
            W-sized tensor per batch costs the allocator page faults): the layer hands
            ``matrix`` a copy instead while a backward pass that reads the stored B is still to run.

    Args:
        seed: the seed of every B (one stream per layer, derived from it).
    """

    direct: ClassVar[bool] = False
    redraws: ClassVar[bool] = False
    exact: ClassVar[bool] = False
    in_place: ClassVar[bool] = False
    name: str = ""
    """The name it was looked up by (set by ``torchbp.get_feedback``)."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def initial(self, weight: Tensor, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
        """The B a layer starts with, of ``shape``: ``weight``'s own ``(out, in, *kernel)``, or, for
        a direct rule, ``(outputs, inputs)`` with ``inputs`` the number of values in one example's
        input to the layer. Draw every random number from ``generator``."""
        raise NotImplementedError

    def state(self, weight: Tensor, generator: torch.Generator) -> Tensor | None:
        """Numbers the rule keeps per layer between batches (kept in the buffer ``feedback_state``
        and passed to ``matrix``), drawn from ``generator`` only; ``None`` (the default): none."""
        return None

    def matrix(
        self, weight: Tensor, feedback_weight: Tensor, generator: torch.Generator, state: Tensor | None = None
    ) -> Tensor:
        """The B this batch's backward pass uses (computed at the forward pass, only by a layer
        whose BP2 runs, i.e. whose input takes a gradient; the layer stores what this returns).
        Change ``feedback_weight`` only in a rule with ``in_place = True``; ``state`` is what
        ``state`` returned, advanced here in place."""
        return feedback_weight

    def learn(self, feedback_weight: Tensor, weight: Tensor, grad_weight: Tensor) -> None:
        """Called after the layer's backward pass with this batch's ∂C/∂W; a rule that learns B
        changes ``feedback_weight`` in place. Runs under ``torch.no_grad()``."""


def uniform(shape: tuple[int, ...], fan_in: int, like: Tensor, generator: torch.Generator) -> Tensor:
    """U(−1/√fan_in, 1/√fan_in) of ``shape``, ``like``'s dtype and device: the distribution of
    ``torch.nn.Linear``'s and ``Conv2d``'s default weights, from ``generator``."""
    bound = 1.0 / math.sqrt(max(fan_in, 1))
    draw = torch.rand(shape, generator=generator, dtype=like.dtype, device=like.device)
    return draw.mul_(2 * bound).sub_(bound)


def fan_in(weight: Tensor) -> int:
    """The number of inputs each output of a layer with ``weight`` ``(out, in, *kernel)`` sums over."""
    return math.prod(weight.shape[1:])


class OutputError:
    """The error e = ∂C/∂(network output) of the current backward pass, for direct rules.

    A tensor hook on the network's output (``capture``) stores e as soon as the ordinary
    ``loss.backward()`` has computed it, before any layer's backward pass runs; the layers read
    it (``read``). Any cost, any loss: e is whatever gradient reaches the output.
    """

    def __init__(self) -> None:
        self.error: Tensor | None = None

    def capture(self, grad: Tensor) -> None:
        """The output tensor's hook: keep e, rows = examples."""
        self.error = grad.detach()

    def read(self) -> Tensor:
        """e as ``(examples, outputs)``."""
        if self.error is None:
            raise RuntimeError(
                "a direct feedback rule (dfa) found no output error e: the gradient must reach the network's "
                "output tensor (the one the model returns) in this backward pass"
            )
        return self.error.reshape(self.error.shape[0], -1) if self.error.dim() > 1 else self.error.unsqueeze(0)
