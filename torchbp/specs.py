"""What a plugin hands to torchbp: the description of one cost, update rule, layer or feedback rule."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .derivatives.base import Derivatives
from .feedback.base import FeedbackRule


@dataclass(frozen=True)
class CostSpec:
    """A cost function C(a, y), given as its maths only.

    torchbp averages it over the examples (rows, the first dimension), C = (1/n) Σₖ Cₖ, and
    wraps it in an autograd Function whose backward returns ``gradient`` / n: the ∇ₐC that is the
    first factor of the output error δᴸ = ∇ₐC ⊙ σ′(zᴸ).

    Attributes:
        name: the name users pass to ``torchbp.get_cost``, e.g. ``"huber"``.
        description: one line saying what it computes.
        value: ``value(a, y, **options) -> Cₖ``, shape ``(n,)``: the cost of each example.
        gradient: ``gradient(a, y, **options) -> ∇ₐCₖ``, the shape of ``a``: each example's own
            gradient (not divided by n). Written with differentiable torch ops, so double
            backward works through it.
        options: the options and their defaults, e.g. ``{"delta": 1.0}``; other keywords are
            refused with an error listing these.
        sample: ``sample(n, dtype) -> (a, y)``: valid random outputs and targets for n
            examples. torchbp's test suite uses it to check every installed cost (gradcheck,
            ∇ₐC against autograd of the value), so a plugin is tested without writing a test.
        check: ``check(a, y, **options)``: raise ``ValueError``/``TypeError`` naming what was
            expected when the targets do not fit the outputs. ``None`` checks nothing.
        class_targets: whether it takes integer class indices as targets. For costs that do
            not, ``torchbp.fit`` one-hot encodes integer class targets.
        mean: optional ``mean(a, y, **options) -> C``, the batch mean (1/n) Σₖ Cₖ as a 0-d
            tensor, for a cost with a faster form of it than ``value(a, y).mean()`` (one reduction
            over all elements, or PyTorch's own loss kernel). It must equal that mean: torchbp's
            test suite checks it for every installed cost that gives one.
        check_options: optional ``check_options(**options)``: raise ``ValueError`` naming an
            option whose value is out of range (as torch does: Huber's ``delta`` > 0, …). Called
            once, when the cost is built, so a bad option fails before any training starts.
            Option values already have the types of their defaults and are finite.
    """

    name: str
    description: str
    value: Callable[..., Tensor]
    gradient: Callable[..., Tensor]
    sample: Callable[[int, torch.dtype], tuple[Tensor, Tensor]]
    options: Mapping[str, Any] = field(default_factory=dict)
    check: Callable[..., None] | None = None
    class_targets: bool = False
    mean: Callable[..., Tensor] | None = None
    check_options: Callable[..., None] | None = None


@dataclass(frozen=True)
class RuleSpec:
    """An update rule: a ``torch.optim.Optimizer`` subclass and what it is.

    Attributes:
        name: the name users pass to ``torchbp.create_rule``, e.g. ``"adam"``.
        description: one line saying what one step does.
        optimizer: the class; ``optimizer(params, **hyperparameters)`` builds it. Its
            constructor's keyword arguments and defaults are the rule's hyperparameters.
    """

    name: str
    description: str
    optimizer: type[torch.optim.Optimizer]


@dataclass(frozen=True)
class LayerSpec:
    """An explicit-δ layer: the ``torch.nn`` module it stands in for, and its twin.

    Attributes:
        name: the name it is listed under, e.g. ``"Conv2d"``.
        description: one line saying what it computes and how its backward goes.
        module: the ``torch.nn`` class that ``torchbp.nn.convert`` replaces (that exact
            class; user subclasses stay as they are).
        twin: the replacement, a subclass of ``module`` that adds no state of its own: same
            constructor, parameters, buffers, ``state_dict`` and ``repr``.
        derivatives: the layer's equations (``torchbp.derivatives.Derivatives``); torchbp's
            test suite runs gradcheck, gradgradcheck and forward-mode AD over its ``samples()``.
        examples: ``examples(dtype) -> [(module, input), …]``: ``torch.nn`` modules of class
            ``module`` with a valid input each. The test suite converts a copy of each and checks
            outputs, gradients and buffers against the original, and that no native backward
            node is left in the graph.
    """

    name: str
    description: str
    module: type[torch.nn.Module]
    twin: type[torch.nn.Module]
    derivatives: type[Derivatives] | None = None
    examples: Callable[[torch.dtype], list[tuple[torch.nn.Module, Tensor]]] | None = None

    def __post_init__(self) -> None:
        # checked when the plugin's hook builds it: a plugin whose spec is wrong is skipped with a
        # PluginWarning naming it, before convert could swap a module for a wrong class
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"LayerSpec name: expected a non-empty str, got {self.name!r}")
        where = f"LayerSpec {self.name!r}"
        if not isinstance(self.description, str):
            raise TypeError(f"{where}: description: expected a str, got {type(self.description).__name__}")
        if not (isinstance(self.module, type) and issubclass(self.module, torch.nn.Module)):
            raise TypeError(f"{where}: module: expected a torch.nn.Module subclass, got {self.module!r}")
        if not (isinstance(self.twin, type) and issubclass(self.twin, self.module)):
            raise TypeError(
                f"{where}: twin: expected a subclass of {self.module.__module__}.{self.module.__qualname__} "
                f"(convert swaps the module's class for it), got {self.twin!r}"
            )
        if self.derivatives is not None and not (
            isinstance(self.derivatives, type) and issubclass(self.derivatives, Derivatives)
        ):
            raise TypeError(
                f"{where}: derivatives: expected None or a torchbp.derivatives.base.Derivatives subclass, "
                f"got {self.derivatives!r}"
            )
        if self.examples is not None and not callable(self.examples):
            raise TypeError(f"{where}: examples: expected None or a function of a dtype, got {self.examples!r}")


@dataclass(frozen=True)
class FeedbackSpec:
    """A feedback rule: how δ reaches the layer below a layer with a weight (BP2 changed).

    Attributes:
        name: the name users pass to ``torchbp.nn.convert`` (``feedback="fa"``), ``MLP``,
            ``torchbp.fit`` and ``torchbp train --feedback``.
        description: one line giving the equation that replaces BP2's δˡ Wˡ.
        rule: a ``torchbp.feedback.FeedbackRule`` subclass; ``rule(seed=…, **options)``
            builds it, so its constructor's keyword arguments and defaults are the options.
    """

    name: str
    description: str
    rule: type[FeedbackRule]
