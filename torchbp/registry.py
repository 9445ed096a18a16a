"""Looking up and listing costs, update rules, layers and feedback rules, whoever provides them."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from .feedback.base import FeedbackRule
from .functional import cost as cost_function
from .functional.cost import mean_of_values
from .options import declared, declared_options, parse_options
from .plugins import PluginEntry, listing, lookup
from .specs import CostSpec, FeedbackSpec, RuleSpec
from .targets import check_output


class Cost(torch.nn.Module):
    """A registered cost bound to its options: ``cost(a, y)`` returns C = (1/n) Σₖ C(aₖ, yₖ).

    Use it like ``torch.nn.MSELoss``: the result is a scalar whose backward is the cost's
    explicit gradient ∇ₐC / n. Floating-point targets are cast to the output's dtype.
    """

    def __init__(self, spec: CostSpec, options: dict[str, Any]) -> None:
        super().__init__()
        self.spec = spec
        self.options = options
        # plain callables (not bound methods), which torch.compile traces without a break
        self.value = functools.partial(spec.value, **options)
        """Cₖ for each example, shape ``(n,)``."""
        self.gradient = functools.partial(spec.gradient, **options)
        """∇ₐCₖ for each example, shaped like ``a`` (not divided by n)."""
        self.mean = (
            functools.partial(spec.mean, **options)
            if spec.mean is not None
            else functools.partial(mean_of_values, self.value)
        )
        """C = (1/n) Σₖ Cₖ, a 0-d tensor."""

    def forward(self, output: Tensor, target: Tensor) -> Tensor:
        a = check_output(output)
        y = target
        if isinstance(y, Tensor) and y.is_floating_point() and y.dtype != a.dtype:
            y = y.to(a.dtype)
        if self.spec.check is not None:
            self.spec.check(a, y, **self.options)
        return cost_function(a, y, self.value, self.gradient, self.mean)

    def extra_repr(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{self.spec.name!r}" + (f", {options}" if options else "")


def get_cost(name: str, **options: Any) -> Cost:
    """The registered cost ``name`` with its options, as a callable module.

    Examples:
        >>> import torch
        >>> get_cost("quadratic")(torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 0.0]]))
        tensor(2.5000)
    """
    spec = lookup("cost", name).spec
    assert isinstance(spec, CostSpec)
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        accepted = ", ".join(f"{k}={v!r}" for k, v in spec.options.items()) or "none"
        raise TypeError(f"cost {name!r}: unknown option(s) {', '.join(unknown)}; accepted: {accepted}")
    return Cost(spec, {**spec.options, **cost_options(name, options)})


def cost_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """The options of cost ``name`` read by their declared types (those of their defaults) and checked
    by the cost's ``check_options``: text such as ``"no"`` becomes ``False``; what does not parse, or
    lies out of range, is an error naming the option."""
    spec = lookup("cost", name).spec
    assert isinstance(spec, CostSpec)
    types = {key: declared(None, default) for key, default in spec.options.items()}
    parsed = parse_options(f"cost {name!r}", options, types)
    if spec.check_options is not None:
        try:
            spec.check_options(**{**spec.options, **parsed})
        except ValueError as error:
            raise ValueError(f"cost {name!r}: {error}") from None
    return parsed


def list_costs(pattern: str = "*") -> list[PluginEntry]:
    """Every registered cost whose name matches the shell-style ``pattern``, with its provider."""
    return listing("cost", pattern)


def rule_options(name: str, hyperparameters: dict[str, Any]) -> dict[str, Any]:
    """The hyperparameters of rule ``name`` read by their declared types (the constructor's annotations,
    else its defaults): ``"no"`` becomes ``False`` for a bool, ``"abc"`` for a float is an error naming
    the option. Unknown names are refused with the accepted ones."""
    spec = lookup("rule", name).spec
    assert isinstance(spec, RuleSpec)
    accepted = rule_hyperparameters(spec)
    unknown = sorted(set(hyperparameters) - set(accepted))
    if unknown:
        listed = ", ".join(
            name if default is inspect.Parameter.empty else f"{name}={default!r}" for name, default in accepted.items()
        )
        raise TypeError(f"rule {name!r}: unknown hyperparameter(s) {', '.join(unknown)}; accepted: {listed}")
    return parse_options(f"rule {name!r}", hyperparameters, declared_options(spec.optimizer.__init__))


def rule_hyperparameters(spec: RuleSpec) -> dict[str, Any]:
    """The hyperparameters a rule accepts, with their defaults (``inspect.Parameter.empty`` if none)."""
    signature = inspect.signature(spec.optimizer.__init__)
    return {
        name: parameter.default
        for name, parameter in signature.parameters.items()
        if name not in ("self", "params")
        and parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
    }


def _param_groups(model: torch.nn.Module, decays: bool) -> list[Any]:
    """Weight decay for matrices only: biases and normalisation weights (1-D) get none."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not decays:
        return params
    return [
        {"params": [p for p in params if p.ndim > 1]},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]


def create_rule(
    name: str,
    params: torch.nn.Module | Iterable[Tensor] | Iterable[dict[str, Any]],
    **hyperparameters: Any,
) -> torch.optim.Optimizer:
    """Build the registered update rule ``name`` over ``params``.

    ``params`` is what ``torch.optim`` takes (tensors or param-group dicts), or a model: then
    weight decay skips its one-dimensional parameters (biases, normalisation weights), as
    timm's optimizer factory does (one group when there is no weight decay at all).

    Examples:
        >>> import torch
        >>> rule = create_rule("sgd", torch.nn.Linear(2, 1), lr=0.1, weight_decay=1e-4)
        >>> [len(group["params"]) for group in rule.param_groups]
        [1, 1]
    """
    spec = lookup("rule", name).spec
    assert isinstance(spec, RuleSpec)
    accepted = rule_hyperparameters(spec)
    hyperparameters = rule_options(name, hyperparameters)
    if isinstance(params, torch.nn.Module):
        decay = hyperparameters.get("weight_decay", accepted.get("weight_decay", 0.0))
        params = _param_groups(params, decay not in (0, 0.0, inspect.Parameter.empty))
    return spec.optimizer(params, **hyperparameters)


def list_rules(pattern: str = "*") -> list[PluginEntry]:
    """Every registered update rule whose name matches the shell-style ``pattern``, with its provider."""
    return listing("rule", pattern)


def list_layers(pattern: str = "*") -> list[PluginEntry]:
    """Every registered explicit-δ layer whose name matches the shell-style ``pattern``, with its provider.

    Examples:
        >>> [entry.spec.module.__name__ for entry in list_layers("Conv*")]
        ['Conv1d', 'Conv2d']
    """
    return listing("layer", pattern)


def feedback_options(spec: FeedbackSpec) -> dict[str, Any]:
    """The options a feedback rule accepts (``seed`` first), with their defaults."""
    signature = inspect.signature(spec.rule.__init__)
    return {
        name: parameter.default
        for name, parameter in signature.parameters.items()
        if name != "self" and parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
    }


def parsed_feedback_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """The options of feedback rule ``name`` read by their declared types (``"0.5"`` → ``0.5``,
    ``"no"`` → ``False``); an unknown option is a ``TypeError`` listing the accepted ones."""
    spec = lookup("feedback", name).spec
    assert isinstance(spec, FeedbackSpec)
    accepted = feedback_options(spec)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        listed = ", ".join(f"{k}={v!r}" for k, v in accepted.items())
        raise TypeError(f"feedback {name!r}: unknown option(s) {', '.join(unknown)}; accepted: {listed}")
    return parse_options(f"feedback {name!r}", options, declared_options(spec.rule.__init__, skip=("self",)))


def get_feedback(name: str, **options: Any) -> FeedbackRule:
    """The registered feedback rule ``name``, built with its options (``seed`` among them).

    An unknown name is a ``ValueError`` listing the registered ones; an unknown option a
    ``TypeError`` listing the accepted ones with their defaults.

    Examples:
        >>> rule = get_feedback("fa", seed=3)
        >>> type(rule).__name__, rule.seed
        ('FeedbackAlignment', 3)
    """
    spec = lookup("feedback", name).spec
    assert isinstance(spec, FeedbackSpec)
    rule = spec.rule(**parsed_feedback_options(name, options))
    rule.name = name
    return rule


def list_feedback(pattern: str = "*") -> list[PluginEntry]:
    """Every registered feedback rule whose name matches the shell-style ``pattern``, with its provider.

    Examples:
        >>> [entry.name for entry in list_feedback("*sf")]
        ['brsf', 'frsf', 'usf']
    """
    return listing("feedback", pattern)
