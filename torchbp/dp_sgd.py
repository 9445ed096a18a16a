"""DP-SGD: each example's gradient clipped, the sum noised, then a gradient-descent step.

A built-in plugin on the ``torchbp_rules`` hook, like ``torchbp.rules``. It reads the per-example
gradients and norms that ``torchbp.per_example`` leaves on the parameters; ``torchbp.fit``
opens that context around each backward pass for any rule whose ``torchbp.UpdateRule.per_example``
names quantities.
"""

from __future__ import annotations

import random
from typing import Any, ClassVar

import torch
from torch import Tensor

from .hookspecs import hookimpl
from .specs import RuleSpec
from .update_rule import Params, UpdateRule, check_hyperparameter


class DPSGD(UpdateRule):
    """x′ = x − η ḡ with ḡ = (1/N) (Σₖ min(1, C/‖gₖ‖) gₖ + σ C ξ), ξ ~ 𝒩(0, I) (Abadi et al., 2016).

    gₖ is example k's gradient (``p.grad_sample``) and ‖gₖ‖ its norm over every parameter of the
    rule (from each ``p.grad_sample_norm``); C = ``max_grad_norm``, σ = ``noise_multiplier``. The noise
    comes from the rule's own generator, seeded with ``noise_seed`` (``None`` draws a seed from the
    operating system; a fixed seed makes the noise predictable, for tests only). ``max_grad_norm`` and
    ``noise_multiplier`` are the rule's, not a group's; each group keeps its own ``lr``. ``p.grad`` is
    left as the backward pass made it (the mean of the unclipped gₖ).
    """

    per_example: ClassVar[tuple[str, ...]] = ("grad", "norm")

    def __init__(
        self,
        params: Params,
        lr: float = 0.1,
        max_grad_norm: float = 1.0,
        noise_multiplier: float = 1.0,
        noise_seed: int | None = None,
    ) -> None:
        check_hyperparameter("lr", lr, 0.0)
        check_hyperparameter("noise_multiplier", noise_multiplier, 0.0)
        if not max_grad_norm > 0:
            raise ValueError(f"max_grad_norm: expected a value > 0, got {max_grad_norm}")
        super().__init__(params, dict(lr=lr))
        self.max_grad_norm = float(max_grad_norm)
        self.noise_multiplier = float(noise_multiplier)
        self.noise_seed = random.SystemRandom().randrange(2**63) if noise_seed is None else int(noise_seed)
        self.generators: dict[torch.device, torch.Generator] = {}
        self.clip_factors: Tensor | None = None

    def generator(self, device: torch.device) -> torch.Generator:
        """The rule's generator on ``device``, seeded with ``noise_seed`` on first use."""
        generator = self.generators.get(device)
        if generator is None:
            generator = self.generators[device] = torch.Generator(device).manual_seed(self.noise_seed)
        return generator

    def state_dict(self) -> dict[str, Any]:
        """``torch.optim``'s state dict, plus the noise generators' states: a resumed run draws new
        noise, never the noise of steps already taken."""
        state = super().state_dict()
        state["noise"] = {str(device): generator.get_state() for device, generator in self.generators.items()}
        state["noise_seed"] = self.noise_seed
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        noise, self.noise_seed = state.pop("noise", {}), state.pop("noise_seed", self.noise_seed)
        super().load_state_dict(state)
        self.generators.clear()
        for device, generator_state in noise.items():
            self.generator(torch.device(device)).set_state(generator_state)

    def step(self, closure=None):  # type: ignore[no-untyped-def,override]
        """Clip, noise and step every parameter that has a gradient (see the class doc).

        Raises:
            RuntimeError: in a process group of more than one process (DistributedDataParallel).
        """
        check_one_process()
        with torch.no_grad():
            self.clip_factors = self._clip_factors()
        try:
            return super().step(closure)
        finally:
            self.clip_factors = None

    def _clip_factors(self) -> Tensor:
        """min(1, C/‖gₖ‖) per example, ‖gₖ‖ over every parameter with a gradient, shape ``(N,)``."""
        params = [p for group in self.param_groups for p in group["params"] if p.grad is not None]
        missing = [
            i for i, p in enumerate(params) if not hasattr(p, "grad_sample") or not hasattr(p, "grad_sample_norm")
        ]
        if missing:
            raise RuntimeError(
                f"dp_sgd needs each example's gradient and its norm on every parameter ({len(missing)} of "
                f"{len(params)} have none): run the backward pass inside torchbp.per_example(model, 'grad', 'norm') "
                "(torchbp.fit opens it itself)"
            )
        norms = torch.stack([p.grad_sample_norm for p in params])  # type: ignore[attr-defined]
        # ‖gₖ‖ = √(Σₚ ‖gₖ,ₚ‖²)
        total = torch.linalg.vector_norm(norms, dim=0)
        # min(1, C/‖gₖ‖), with Opacus's 1e-6 guarding ‖gₖ‖ = 0
        return (self.max_grad_norm / (total + 1e-6)).clamp_(max=1.0)

    def update(self, group, params, grads, states):  # type: ignore[no-untyped-def]
        clip = self.clip_factors
        assert clip is not None
        n = clip.shape[0]
        for p in params:
            samples = p.grad_sample
            # Σₖ min(1, C/‖gₖ‖) gₖ
            clipped = torch.tensordot(clip.to(samples.dtype), samples, dims=1)
            noise = torch.randn(p.shape, generator=self.generator(p.device), dtype=p.dtype, device=p.device)
            # ḡ = (1/N) (Σₖ clipped gₖ + σ C ξ)
            private = clipped.add_(noise, alpha=self.noise_multiplier * self.max_grad_norm).div_(n)
            # x′ = x − η ḡ
            p.add_(private, alpha=-group["lr"])


def check_one_process() -> None:
    """Refuse to step in a process group of more than one process: each process holds only its own
    shard's per-example gradients, so a step there would clip and noise a part of the batch, each
    process with its own noise, and the replicas would drift apart. (Correct DP-SGD across processes
    would clip locally, all-reduce Σₖ clipped gₖ over the processes and add σ C ξ once, from one
    generator shared by all; torchbp does not do that yet.)"""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        world = torch.distributed.get_world_size()
        if world > 1:
            raise RuntimeError(
                f"dp_sgd runs in one process only, this is one of {world} (DistributedDataParallel): each process "
                "sees its own shard's per-example gradients, so it would clip and noise part of the batch with its "
                "own noise and the replicas would drift apart. Train DP-SGD in one process (a larger batch on one "
                "device), or use Opacus's distributed DP-SGD"
            )


@hookimpl
def torchbp_rules() -> list[RuleSpec]:
    return [
        RuleSpec(
            "dp_sgd",
            "DP-SGD: per-example gradients clipped to max_grad_norm, Gaussian noise (noise_multiplier), then a step",
            DPSGD,
        )
    ]
