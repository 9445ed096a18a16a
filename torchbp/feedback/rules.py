"""The built-in feedback rules, registered through the ``torchbp_feedback`` hook like anyone's.

Each rule's docstring names its paper and gives the equation it puts in place of BP2's δˡ Wˡ.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from ..hookspecs import hookimpl
from ..specs import FeedbackSpec
from .base import FeedbackRule, fan_in, uniform
from .xorshift import draw_int16, xorshift_state


class Backprop(FeedbackRule):
    """Exact backpropagation (Rumelhart, Hinton & Williams 1986): ∂C/∂aˡ⁻¹ = δˡ Wˡ.

    The default. Layers keep no B and run their own equations untouched.
    """

    exact: ClassVar[bool] = True


class FeedbackAlignment(FeedbackRule):
    """Feedback alignment (Lillicrap, Cownden, Tweed & Akerman 2016): ∂C/∂aˡ⁻¹ = δˡ Bˡ.

    Bˡ is a fixed random matrix shaped like Wˡ, drawn once from U(−s, s) with s = scale/√fan_in
    (the spread of torch.nn's default W). The forward weights come to align with B.

    Args:
        scale: multiplies the spread of B.
    """

    def __init__(self, seed: int = 0, scale: float = 1.0) -> None:
        super().__init__(seed)
        self.scale = scale

    def initial(self, weight: Tensor, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
        return uniform(shape, fan_in(weight), weight, generator).mul_(self.scale)


class DirectFeedbackAlignment(FeedbackRule):
    """Direct feedback alignment (Nøkland 2016): ∂C/∂aˡ⁻¹ = e Bˡ, so δˡ⁻¹ = (e Bˡ) ⊙ σ′(zˡ⁻¹).

    e = ∂C/∂(network output) is taken from the gradient that reaches the model's output in the
    ordinary ``loss.backward()``; each layer's fixed random Bˡ ``(outputs, inputs)`` carries it
    straight to the layer's input, skipping the layers above. Bˡ is drawn once from U(−s, s) with
    s = scale/√outputs.

    Args:
        scale: multiplies the spread of B.
        outputs: the number of network outputs; ``None`` reads it off the model's last layer
            (its ``out_features``).
    """

    direct: ClassVar[bool] = True

    def __init__(self, seed: int = 0, scale: float = 1.0, outputs: int | None = None) -> None:
        super().__init__(seed)
        self.scale = scale
        self.outputs = outputs

    def initial(self, weight: Tensor, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
        return uniform(shape, shape[0], weight, generator).mul_(self.scale)


class UniformSignFeedback(FeedbackRule):
    """Uniform sign-concordant feedback, "usf" (Liao, Leibo & Poggio 2016): Bˡ = sign(Wˡ) · s.

    Only the signs of W travel down, each with the same magnitude s = scale/√fan_in.

    Args:
        scale: multiplies the magnitude s.
    """

    in_place: ClassVar[bool] = True

    def __init__(self, seed: int = 0, scale: float = 1.0) -> None:
        super().__init__(seed)
        self.scale = scale

    def initial(self, weight: Tensor, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
        return self.matrix(weight, torch.empty_like(weight), generator)

    def matrix(
        self, weight: Tensor, feedback_weight: Tensor, generator: torch.Generator, state: Tensor | None = None
    ) -> Tensor:
        # B = sign(W) · s (copysign: a weight of exactly +0 counts as positive)
        return feedback_weight.fill_(self.scale / fan_in(weight) ** 0.5).copysign_(weight)


class BatchRandomSignFeedback(FeedbackRule):
    """Batchwise random magnitude sign-concordant feedback, "brsf" (Liao, Leibo & Poggio 2016;
    Moskovitz, Litwin-Kumar & Abbott 2018): Bˡ = sign(Wˡ) ⊙ |R|, R ~ U(−s, s) drawn anew each batch.

    R = s · (v + ½) / 2¹⁵ with v uniform on the 16-bit integers −32768 … 32767, drawn for every
    element of W each batch by per-layer xorshift64 generators with a Weyl sequence (Marsaglia
    2003; see ``torchbp.feedback.xorshift``): U(−s, s) on the midpoints of 2¹⁶ equal bins (never
    0), independent across elements and batches, at a fraction of the cost of torch's
    one-at-a-time CPU generator. The
    generators' state, seeded once from the layer's own stream, is the buffer ``feedback_state``;
    ``feedback_weight`` holds the B of the last batch that read one.

    Args:
        scale: multiplies s = 1/√fan_in.
    """

    in_place: ClassVar[bool] = True

    def __init__(self, seed: int = 0, scale: float = 1.0) -> None:
        super().__init__(seed)
        self.scale = scale
        self._scratch: dict[tuple[torch.device, int], Tensor] = {}

    def initial(self, weight: Tensor, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
        magnitude = uniform(shape, fan_in(weight), weight, generator).abs_().mul_(self.scale)
        return magnitude.copysign_(weight)

    def state(self, weight: Tensor, generator: torch.Generator) -> Tensor:
        return xorshift_state(weight.numel(), generator, weight.device)

    def matrix(
        self, weight: Tensor, feedback_weight: Tensor, generator: torch.Generator, state: Tensor | None = None
    ) -> Tensor:
        assert state is not None
        key = (state.device, state.numel() - 1)
        scratch = self._scratch.get(key)
        if scratch is None:
            scratch = self._scratch[key] = torch.empty(key[1], dtype=torch.int64, device=state.device)
        v = draw_int16(state, weight.numel(), scratch).view(weight.shape)
        # B = sign(W) ⊙ |R|, R = s · (v + ½) / 2¹⁵ ~ U(−s, s) (copysign takes |R| and W's sign)
        magnitude = feedback_weight.copy_(v).add_(0.5).mul_(self.scale / fan_in(weight) ** 0.5 / 2**15)
        return magnitude.copysign_(weight)


class FixedRandomSignFeedback(FeedbackRule):
    """Fixed random magnitude sign-concordant feedback, "frsf" (Liao, Leibo & Poggio 2016;
    Moskovitz, Litwin-Kumar & Abbott 2018): Bˡ = sign(Wˡ) ⊙ |R|, R ~ U(−s, s) drawn once.

    The magnitudes |R| stay; the signs follow W's current ones each batch.

    Args:
        scale: multiplies s = 1/√fan_in.
    """

    in_place: ClassVar[bool] = True

    def __init__(self, seed: int = 0, scale: float = 1.0) -> None:
        super().__init__(seed)
        self.scale = scale

    def initial(self, weight: Tensor, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
        magnitude = uniform(shape, fan_in(weight), weight, generator).abs_().mul_(self.scale)
        return magnitude.mul_(torch.sign(weight))

    def matrix(
        self, weight: Tensor, feedback_weight: Tensor, generator: torch.Generator, state: Tensor | None = None
    ) -> Tensor:
        # B = sign(W) ⊙ |B|: the stored magnitudes with W's current signs, in one pass
        return feedback_weight.copysign_(weight)


class KolenPollack(FeedbackRule):
    """Kolen–Pollack learning / weight mirroring (Kolen & Pollack 1994; Akrout, Wilson, Humphreys,
    Lillicrap & Tweed 2019): ∂C/∂aˡ⁻¹ = δˡ Bˡ, with B learned.

    B starts random (as in ``FeedbackAlignment``) and after each backward pass takes the very
    step W's gradient calls for, plus a decay:

        Bˡ ← Bˡ − η (∂C/∂Wˡ + λ Bˡ)

    Trained by SGD with the same η and weight decay λ, W − B shrinks by (1 − ηλ) each step, so B
    comes to equal W (and BP2 becomes exact) without W ever being sent down.

    Args:
        lr: η, the step size of B (give it the update rule's learning rate).
        weight_decay: λ.
    """

    def __init__(self, seed: int = 0, lr: float = 0.1, weight_decay: float = 0.0) -> None:
        super().__init__(seed)
        self.lr = lr
        self.weight_decay = weight_decay

    def initial(self, weight: Tensor, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
        return uniform(shape, fan_in(weight), weight, generator)

    def learn(self, feedback_weight: Tensor, weight: Tensor, grad_weight: Tensor) -> None:
        # B ← B − η (∂C/∂W + λ B)
        if self.weight_decay:
            feedback_weight.mul_(1 - self.lr * self.weight_decay)
        feedback_weight.sub_(grad_weight, alpha=self.lr)


@hookimpl
def torchbp_feedback() -> list[FeedbackSpec]:
    return [
        FeedbackSpec("backprop", "exact: ∂C/∂aˡ⁻¹ = δˡ Wˡ", Backprop),
        FeedbackSpec("fa", "feedback alignment: ∂C/∂aˡ⁻¹ = δˡ Bˡ, B random (Lillicrap et al. 2016)", FeedbackAlignment),
        FeedbackSpec("dfa", "direct feedback alignment: ∂C/∂aˡ⁻¹ = e Bˡ (Nøkland 2016)", DirectFeedbackAlignment),
        FeedbackSpec("usf", "uniform sign feedback: B = sign(W)·s (Liao et al. 2016)", UniformSignFeedback),
        FeedbackSpec(
            "brsf",
            "sign feedback, magnitudes redrawn each batch: B = sign(W)⊙|R| (Liao et al. 2016)",
            BatchRandomSignFeedback,
        ),
        FeedbackSpec(
            "frsf",
            "sign feedback, fixed random magnitudes: B = sign(W)⊙|R| (Moskovitz et al. 2018)",
            FixedRandomSignFeedback,
        ),
        FeedbackSpec(
            "kolen_pollack", "Kolen–Pollack: δˡ Bˡ, B ← B − η(∂C/∂W + λB) mirrors W (Akrout et al. 2019)", KolenPollack
        ),
    ]
