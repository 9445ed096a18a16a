"""Sparse feedback alignment (Crafton, Parihar, Gebhardt & Raychowdhury 2019) as a torchbp plugin.

BP2 becomes ∂C/∂aˡ⁻¹ = δˡ Bˡ with Bˡ fixed, random and sparse: each entry is kept with
probability ``density`` (and then drawn from U(−s, s), s = 1/√(density · fan_in), so that δ B
keeps the spread of dense feedback alignment), the others are zero.
"""

import torch

import torchbp


class SparseFeedbackAlignment(torchbp.feedback.FeedbackRule):
    """∂C/∂aˡ⁻¹ = δˡ Bˡ, with Bˡ fixed and a fraction ``density`` of its entries non-zero."""

    def __init__(self, seed: int = 0, density: float = 0.1) -> None:
        super().__init__(seed)
        if not 0 < density <= 1:
            raise ValueError(f"density: expected a fraction in (0, 1], got {density!r}")
        self.density = density

    def initial(self, weight: torch.Tensor, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
        fan_in = weight[0].numel()
        bound = (self.density * fan_in) ** -0.5
        options = {"generator": generator, "dtype": weight.dtype, "device": weight.device}
        values = torch.rand(shape, **options) * (2 * bound) - bound
        kept = torch.rand(shape, **options) < self.density
        return values * kept


@torchbp.hookimpl
def torchbp_feedback() -> list[torchbp.FeedbackSpec]:
    return [
        torchbp.FeedbackSpec(
            "sparse_fa",
            "sparse feedback alignment: δˡ Bˡ, B random and sparse (Crafton et al. 2019)",
            SparseFeedbackAlignment,
        )
    ]
