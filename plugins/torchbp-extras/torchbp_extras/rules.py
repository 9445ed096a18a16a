"""Adadelta, Adamax and Lion, written out with torch._foreach_* ops."""

from __future__ import annotations

import torch

from torchbp import UpdateRule
from torchbp.update_rule import Params, check_hyperparameter, with_weight_decay


class Adadelta(UpdateRule):
    """v′ = ρ v + (1 − ρ) g²;  Δ = √(u + ε) / √(v′ + ε) · g;  u′ = ρ u + (1 − ρ) Δ²;  x′ = x − η Δ."""

    def __init__(
        self,
        params: Params,
        lr: float = 1.0,
        rho: float = 0.9,
        eps: float = 1e-6,
        weight_decay: float = 0.0,
    ) -> None:
        check_hyperparameter("lr", lr, 0.0)
        check_hyperparameter("rho", rho, 0.0, 1.0 + 1e-12)
        check_hyperparameter("eps", eps, 0.0)
        check_hyperparameter("weight_decay", weight_decay, 0.0)
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay))

    def init_state(self, group, param):  # type: ignore[no-untyped-def]
        return {"step": 0, "square_avg": torch.zeros_like(param), "acc_delta": torch.zeros_like(param)}

    def update(self, group, params, grads, states):  # type: ignore[no-untyped-def]
        rho, eps = group["rho"], group["eps"]
        grads = with_weight_decay(grads, params, group["weight_decay"])
        for state in states:
            state["step"] += 1
        square_avgs = [s["square_avg"] for s in states]
        acc_deltas = [s["acc_delta"] for s in states]
        # v′ = ρ v + (1 − ρ) g²
        torch._foreach_mul_(square_avgs, rho)
        torch._foreach_addcmul_(square_avgs, grads, grads, value=1 - rho)
        # Δ = √(u + ε) / √(v′ + ε) · g
        std = torch._foreach_add(square_avgs, eps)
        torch._foreach_sqrt_(std)
        deltas = torch._foreach_add(acc_deltas, eps)
        torch._foreach_sqrt_(deltas)
        torch._foreach_div_(deltas, std)
        torch._foreach_mul_(deltas, grads)
        # u′ = ρ u + (1 − ρ) Δ²
        torch._foreach_mul_(acc_deltas, rho)
        torch._foreach_addcmul_(acc_deltas, deltas, deltas, value=1 - rho)
        # x′ = x − η Δ
        torch._foreach_add_(params, deltas, alpha=-group["lr"])


class Adamax(UpdateRule):
    """m′ = β₁ m + (1 − β₁) g;  u′ = max(β₂ u, |g| + ε);  x′ = x − (η / (1 − β₁ᵗ)) m′ / u′."""

    def __init__(
        self,
        params: Params,
        lr: float = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        check_hyperparameter("lr", lr, 0.0)
        check_hyperparameter("betas[0]", betas[0], 0.0, 1.0)
        check_hyperparameter("betas[1]", betas[1], 0.0, 1.0)
        check_hyperparameter("eps", eps, 0.0)
        check_hyperparameter("weight_decay", weight_decay, 0.0)
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    def init_state(self, group, param):  # type: ignore[no-untyped-def]
        return {"step": 0, "exp_avg": torch.zeros_like(param), "exp_inf": torch.zeros_like(param)}

    def update(self, group, params, grads, states):  # type: ignore[no-untyped-def]
        (beta1, beta2), eps = group["betas"], group["eps"]
        grads = with_weight_decay(grads, params, group["weight_decay"])
        for state in states:
            state["step"] += 1
        exp_avgs = [s["exp_avg"] for s in states]
        exp_infs = [s["exp_inf"] for s in states]
        # m′ = β₁ m + (1 − β₁) g
        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
        # u′ = max(β₂ u, |g| + ε)
        torch._foreach_mul_(exp_infs, beta2)
        bounded = torch._foreach_abs(grads)
        torch._foreach_add_(bounded, eps)
        torch._foreach_maximum_(exp_infs, bounded)
        # x′ = x − (η / (1 − β₁ᵗ)) m′ / u′
        step_sizes = [-group["lr"] / (1 - beta1 ** s["step"]) for s in states]
        torch._foreach_addcdiv_(params, exp_avgs, exp_infs, step_sizes)


class Lion(UpdateRule):
    """c = β₁ m + (1 − β₁) g;  x′ = x (1 − ηλ) − η sign(c);  m′ = β₂ m + (1 − β₂) g.

    EvoLved Sign Momentum (Chen et al., 2023): every coordinate moves by exactly η.
    """

    def __init__(
        self,
        params: Params,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
    ) -> None:
        check_hyperparameter("lr", lr, 0.0)
        check_hyperparameter("betas[0]", betas[0], 0.0, 1.0)
        check_hyperparameter("betas[1]", betas[1], 0.0, 1.0)
        check_hyperparameter("weight_decay", weight_decay, 0.0)
        super().__init__(params, dict(lr=lr, betas=tuple(betas), weight_decay=weight_decay))

    def init_state(self, group, param):  # type: ignore[no-untyped-def]
        return {"exp_avg": torch.zeros_like(param)}

    def update(self, group, params, grads, states):  # type: ignore[no-untyped-def]
        lr, (beta1, beta2) = group["lr"], group["betas"]
        exp_avgs = [s["exp_avg"] for s in states]
        # c = β₁ m + (1 − β₁) g
        direction = torch._foreach_lerp(exp_avgs, grads, 1 - beta1)
        # x′ = x (1 − ηλ) − η sign(c)
        torch._foreach_mul_(params, 1 - lr * group["weight_decay"])
        torch._foreach_add_(params, torch._foreach_sign(direction), alpha=-lr)
        # m′ = β₂ m + (1 − β₂) g
        torch._foreach_lerp_(exp_avgs, grads, 1 - beta2)
