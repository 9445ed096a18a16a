"""signSGD with momentum: x′ = x − η sign(m′), m′ = β m + (1 − β) g."""

import torch

import torchbp
from torchbp.update_rule import check_hyperparameter


class SignSGD(torchbp.UpdateRule):
    def __init__(self, params, lr=0.01, beta=0.9):
        check_hyperparameter("lr", lr, 0.0)
        check_hyperparameter("beta", beta, 0.0, 1.0)
        super().__init__(params, {"lr": lr, "beta": beta})

    def init_state(self, group, param):
        return {"momentum": torch.zeros_like(param)}

    def update(self, group, params, grads, states):
        momenta = [state["momentum"] for state in states]
        # m′ = β m + (1 − β) g
        torch._foreach_lerp_(momenta, grads, 1 - group["beta"])
        # x′ = x − η sign(m′)
        torch._foreach_add_(params, torch._foreach_sign(momenta), alpha=-group["lr"])


@torchbp.hookimpl
def torchbp_rules():
    return [torchbp.RuleSpec("signsgd", "sign of the momentum, every coordinate moves by lr", SignSGD)]
