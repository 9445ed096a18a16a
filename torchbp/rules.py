"""The built-in update rules: an ordinary plugin, registered through the same hook as any other.

Each rule is written out as its textbook update and follows its ``torch.optim`` twin's
trajectory. Per-parameter steps are plain Python ints, so bias corrections are exact floats.
"""

from __future__ import annotations

import torch

from .hookspecs import hookimpl
from .specs import RuleSpec
from .update_rule import Params, UpdateRule, check_hyperparameter, with_weight_decay


class SGD(UpdateRule):
    """x′ = x − η g, with g = ∇f + λx, and optionally momentum (heavy-ball or Nesterov).

    With momentum μ and dampening τ: b′ = μ b + (1 − τ) g (b = g on the first step), then
    g ← g + μ b′ (Nesterov) or g ← b′.
    """

    def __init__(
        self,
        params: Params,
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        check_hyperparameter("lr", lr, 0.0)
        check_hyperparameter("momentum", momentum, 0.0)
        check_hyperparameter("weight_decay", weight_decay, 0.0)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError(
                f"nesterov: needs momentum > 0 and dampening = 0, got momentum={momentum}, dampening={dampening}"
            )
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov)
        super().__init__(params, defaults)

    def update(self, group, params, grads, states):  # type: ignore[no-untyped-def]
        grads = with_weight_decay(grads, params, group["weight_decay"])
        momentum = group["momentum"]
        if momentum != 0:
            started = [(s["momentum_buffer"], g) for s, g in zip(states, grads) if "momentum_buffer" in s]
            if started:
                buffers, started_grads = (list(t) for t in zip(*started))
                # b′ = μ b + (1 − τ) g
                torch._foreach_mul_(buffers, momentum)
                torch._foreach_add_(buffers, started_grads, alpha=1 - group["dampening"])
            for state, grad in zip(states, grads):
                if "momentum_buffer" not in state:
                    # the first step starts the buffer at b = g
                    state["momentum_buffer"] = grad.detach().clone()
            buffers = [state["momentum_buffer"] for state in states]
            if group["nesterov"]:
                # g ← g + μ b′
                grads = torch._foreach_add(grads, buffers, alpha=momentum)
            else:
                grads = buffers
        # x′ = x − η g
        torch._foreach_add_(params, grads, alpha=-group["lr"])


class Adagrad(UpdateRule):
    """Gₜ = Gₜ₋₁ + g²;  x′ = x − ηₜ g / (√Gₜ + ε),  ηₜ = η / (1 + (t − 1) · lr_decay)."""

    def __init__(
        self,
        params: Params,
        lr: float = 1e-2,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
    ) -> None:
        check_hyperparameter("lr", lr, 0.0)
        check_hyperparameter("lr_decay", lr_decay, 0.0)
        check_hyperparameter("weight_decay", weight_decay, 0.0)
        check_hyperparameter("initial_accumulator_value", initial_accumulator_value, 0.0)
        check_hyperparameter("eps", eps, 0.0)
        defaults = dict(
            lr=lr,
            lr_decay=lr_decay,
            weight_decay=weight_decay,
            initial_accumulator_value=initial_accumulator_value,
            eps=eps,
        )
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p].update(self.init_state(group, p))

    def init_state(self, group, param):  # type: ignore[no-untyped-def]
        value = group["initial_accumulator_value"]
        return {"step": 0, "sum": torch.full_like(param, value, memory_format=torch.preserve_format)}

    def update(self, group, params, grads, states):  # type: ignore[no-untyped-def]
        grads = with_weight_decay(grads, params, group["weight_decay"])
        sums = [s["sum"] for s in states]
        for state in states:
            state["step"] += 1
        # Gₜ = Gₜ₋₁ + g²
        torch._foreach_addcmul_(sums, grads, grads, 1)
        std = torch._foreach_sqrt(sums)
        torch._foreach_add_(std, group["eps"])
        # x′ = x − ηₜ g / (√Gₜ + ε)
        minus_lr = [-group["lr"] / (1 + (s["step"] - 1) * group["lr_decay"]) for s in states]
        torch._foreach_addcdiv_(params, torch._foreach_mul(grads, minus_lr), std)


class RMSprop(UpdateRule):
    """v′ = α v + (1 − α) g²;  x′ = x − η g / (√v′ + ε).

    ``centered`` subtracts the squared running mean of g under the root; ``momentum`` μ keeps
    b′ = μ b + g / (√v′ + ε) and steps x′ = x − η b′.
    """

    def __init__(
        self,
        params: Params,
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
    ) -> None:
        check_hyperparameter("lr", lr, 0.0)
        check_hyperparameter("alpha", alpha, 0.0)
        check_hyperparameter("eps", eps, 0.0)
        check_hyperparameter("weight_decay", weight_decay, 0.0)
        check_hyperparameter("momentum", momentum, 0.0)
        defaults = dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum, centered=centered)
        super().__init__(params, defaults)

    def init_state(self, group, param):  # type: ignore[no-untyped-def]
        state = {"step": 0, "square_avg": torch.zeros_like(param)}
        if group["momentum"] > 0:
            state["momentum_buffer"] = torch.zeros_like(param)
        if group["centered"]:
            state["grad_avg"] = torch.zeros_like(param)
        return state

    def update(self, group, params, grads, states):  # type: ignore[no-untyped-def]
        grads = with_weight_decay(grads, params, group["weight_decay"])
        alpha, eps = group["alpha"], group["eps"]
        for state in states:
            state["step"] += 1
        square_avgs = [s["square_avg"] for s in states]
        # v′ = α v + (1 − α) g²
        torch._foreach_mul_(square_avgs, alpha)
        torch._foreach_addcmul_(square_avgs, grads, grads, value=1 - alpha)
        if group["centered"]:
            grad_avgs = [s["grad_avg"] for s in states]
            # m′ = α m + (1 − α) g;  denominator √(v′ − m′²) + ε
            torch._foreach_lerp_(grad_avgs, grads, 1 - alpha)
            denominator = torch._foreach_addcmul(square_avgs, grad_avgs, grad_avgs, value=-1)
            torch._foreach_sqrt_(denominator)
        else:
            denominator = torch._foreach_sqrt(square_avgs)
        torch._foreach_add_(denominator, eps)
        if group["momentum"] > 0:
            buffers = [s["momentum_buffer"] for s in states]
            # b′ = μ b + g / (√v′ + ε);  x′ = x − η b′
            torch._foreach_mul_(buffers, group["momentum"])
            torch._foreach_addcdiv_(buffers, grads, denominator)
            torch._foreach_add_(params, buffers, alpha=-group["lr"])
        else:
            # x′ = x − η g / (√v′ + ε)
            torch._foreach_addcdiv_(params, grads, denominator, value=-group["lr"])


class Adam(UpdateRule):
    """m′ = β₁ m + (1 − β₁) g;  v′ = β₂ v + (1 − β₂) g²;  x′ = x − η m̂ / (√v̂ + ε).

    m̂ = m′ / (1 − β₁ᵗ), v̂ = v′ / (1 − β₂ᵗ). ``weight_decay`` λ adds λx to g (L2);
    ``amsgrad`` uses the running maximum of v′. ``AdamW`` decouples the decay instead.
    """

    decoupled_weight_decay = False

    def __init__(
        self,
        params: Params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
    ) -> None:
        check_hyperparameter("lr", lr, 0.0)
        check_hyperparameter("betas[0]", betas[0], 0.0, 1.0)
        check_hyperparameter("betas[1]", betas[1], 0.0, 1.0)
        check_hyperparameter("eps", eps, 0.0)
        check_hyperparameter("weight_decay", weight_decay, 0.0)
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)
        super().__init__(params, defaults)

    def init_state(self, group, param):  # type: ignore[no-untyped-def]
        state = {"step": 0, "exp_avg": torch.zeros_like(param), "exp_avg_sq": torch.zeros_like(param)}
        if group["amsgrad"]:
            state["max_exp_avg_sq"] = torch.zeros_like(param)
        return state

    def update(self, group, params, grads, states):  # type: ignore[no-untyped-def]
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        if self.decoupled_weight_decay:
            # x ← x (1 − η λ)
            torch._foreach_mul_(params, 1 - lr * group["weight_decay"])
        else:
            grads = with_weight_decay(grads, params, group["weight_decay"])
        for state in states:
            state["step"] += 1
        exp_avgs = [s["exp_avg"] for s in states]
        exp_avg_sqs = [s["exp_avg_sq"] for s in states]
        # m′ = β₁ m + (1 − β₁) g;  v′ = β₂ v + (1 − β₂) g²
        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
        if group["amsgrad"]:
            second = [s["max_exp_avg_sq"] for s in states]
            torch._foreach_maximum_(second, exp_avg_sqs)
        else:
            second = exp_avg_sqs
        # x′ = x − (η / (1 − β₁ᵗ)) m′ / (√v′ / √(1 − β₂ᵗ) + ε)
        denominator = torch._foreach_sqrt(second)
        torch._foreach_div_(denominator, [(1 - beta2 ** s["step"]) ** 0.5 for s in states])
        torch._foreach_add_(denominator, eps)
        step_sizes = [-lr / (1 - beta1 ** s["step"]) for s in states]
        torch._foreach_addcdiv_(params, exp_avgs, denominator, step_sizes)


class AdamW(Adam):
    """Adam with decoupled weight decay: x ← x (1 − ηλ) before the Adam step (default λ = 0.01)."""

    decoupled_weight_decay = True

    def __init__(
        self,
        params: Params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad)


RULES = [
    RuleSpec("sgd", "x′ = x − η∇f, with momentum, dampening, Nesterov and weight decay", SGD),
    RuleSpec("adagrad", "per-coordinate steps η/√(Σ g²), with lr decay", Adagrad),
    RuleSpec("rmsprop", "steps η/√(running mean of g²), optionally centered and with momentum", RMSprop),
    RuleSpec("adam", "bias-corrected first and second moments, L2 weight decay, AMSGrad", Adam),
    RuleSpec("adamw", "Adam with decoupled weight decay", AdamW),
]


@hookimpl
def torchbp_rules() -> list[RuleSpec]:
    return RULES
