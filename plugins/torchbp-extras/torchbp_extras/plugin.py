"""The plugin object torchbp loads through the entry point ``extras = torchbp_extras.plugin``."""

from __future__ import annotations

import torchbp
from torchbp import CostSpec, RuleSpec

from .costs import COSTS
from .rules import Adadelta, Adamax, Lion


@torchbp.hookimpl
def torchbp_costs() -> list[CostSpec]:
    return COSTS


@torchbp.hookimpl
def torchbp_rules() -> list[RuleSpec]:
    return [
        RuleSpec("adadelta", "steps scaled by RMS of past updates over RMS of gradients", Adadelta),
        RuleSpec("adamax", "Adam with the infinity norm of past gradients", Adamax),
        RuleSpec("lion", "sign of interpolated momentum, every coordinate moves by lr", Lion),
    ]
