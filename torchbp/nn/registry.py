"""The one registry of twins (``torch.nn`` class → torchbp twin), and ``convert`` / ``revert``.

The registry is fed by the ``torchbp_layers`` hook: torchbp's own layers and any plugin's, the
same way. It is read afresh whenever the set of plugins changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..feedback.base import FeedbackRule
from ..functional.factory import function_for
from ..plugins import PluginError, every_entry
from ..specs import LayerSpec
from .feedback import attach, detach


def _specs() -> list[LayerSpec]:
    specs = []
    for entry in every_entry("layer"):
        assert isinstance(entry.spec, LayerSpec)
        specs.append(entry.spec)
    return specs


def twins() -> dict[type[torch.nn.Module], type[torch.nn.Module]]:
    """``torch.nn`` class → its torchbp twin, over every registered layer.

    Raises ``PluginError`` when two layers claim one ``torch.nn`` class.
    """
    table: dict[type[torch.nn.Module], LayerSpec] = {}
    for spec in _specs():
        other = table.get(spec.module)
        if other is not None:
            raise PluginError(
                f"torch.nn.{spec.module.__name__} has two twins, {other.name!r} ({other.twin.__qualname__}) and "
                f"{spec.name!r} ({spec.twin.__qualname__}); uninstall or unregister one of their plugins"
            )
        table[spec.module] = spec
        if spec.derivatives is not None:
            function_for(spec.derivatives)
    return {module: spec.twin for module, spec in table.items()}


def _replace(model: torch.nn.Module, table: dict[type[torch.nn.Module], type[torch.nn.Module]]) -> torch.nn.Module:
    """Every module of ``model`` (itself included) whose class is in ``table`` turned, in place, into
    the class it maps to.

    Twins share one layout (torchbp's classes subclass torch's and add no state), so a module
    changes class and nothing else: the same object, ``Parameter`` objects, buffers, hooks and
    flags; optimizers keep their parameters and a layer shared between two places stays shared.
    """
    for module in model.modules():
        cls = table.get(type(module))
        if cls is not None:
            module.__class__ = cls
    return model


@dataclass
class Conversion:
    """What ``convert`` left explicit and what stays native, by qualified module name.

    Attributes:
        converted: ``name → class name`` of the torchbp layers in the model.
        native: ``name → class name`` of modules that hold parameters or buffers of their own
            (or are leaves) and are not torchbp's: their backward stays in ATen.
    """

    converted: dict[str, str] = field(default_factory=dict)
    native: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        lines = [f"explicit δ: {len(self.converted)} module(s); native: {len(self.native)} module(s)"]
        lines += [f"  explicit  {name or '(model)'}: {cls}" for name, cls in self.converted.items()]
        lines += [f"  native    {name or '(model)'}: {cls}" for name, cls in self.native.items()]
        return "\n".join(lines)


def _is_torchbp(module: torch.nn.Module, twin_classes: set[type[torch.nn.Module]]) -> bool:
    return type(module) in twin_classes or type(module).__module__.startswith("torchbp.")


def conversion(model: torch.nn.Module) -> Conversion:
    """Which modules of ``model`` run an explicit-δ backward and which stay native.

    Containers (``Sequential``, ``ModuleList``, a model class whose children do the work) are in
    neither list, unless they hold parameters or buffers of their own: those stay native, but for
    a torchbp twin's (``MultiheadAttention`` holds its input projection and a child output one).

    Examples:
        >>> model = convert(torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.LSTM(2, 2)))
        >>> conversion(model).native
        {'1': 'LSTM'}
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    twin_classes = set(twins().values())
    report = Conversion()
    for name, module in model.named_modules():
        if module._modules:  # a container: its layers are counted one by one, its own parameters here
            if module._parameters or module._buffers:
                native = not _is_torchbp(module, twin_classes)  # a twin with its own (multi-head attention)
                (report.native if native else report.converted)[name] = type(module).__name__
        elif _is_torchbp(module, twin_classes):
            report.converted[name] = type(module).__name__
        else:
            report.native[name] = type(module).__name__
    return report


def convert(
    model: torch.nn.Module, strict: bool = False, feedback: str | FeedbackRule | None = None, **options: Any
) -> torch.nn.Module:
    """Replace, in place and recursively, each ``torch.nn`` layer that has a torchbp twin.

    The twins are those of every registered layer (``torchbp plugins --kind layer``): exact
    classes only, user subclasses stay as they are. Each module only changes class: it keeps its
    ``Parameter`` objects, buffers and hooks, so outputs, gradients and ``state_dict`` are
    unchanged, optimizers built before go on working, and a layer shared between two places stays
    shared. ``conversion`` says afterwards what was converted and what stays native.

    Args:
        model: any ``torch.nn.Module``.
        strict: raise ``ValueError`` naming every module with parameters that stays native
            (the model is then left as it was).
        feedback: a feedback rule to carry δ down (``torchbp.feedback``, ``torchbp plugins
            --kind feedback``): a registered name such as ``"fa"`` or ``"dfa"``, with its
            ``options`` (``seed=``, …), or a rule object. Each layer with a weight then keeps its B
            in a buffer ``feedback_weight``. ``None`` leaves the model's rule as it was (backprop
            for a model never given one). A module the rule cannot act in is a ``ValueError``.
        options: the feedback rule's options, e.g. ``seed=1``.

    Returns:
        ``model`` itself.

    Examples:
        >>> model = convert(torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Sigmoid()))
        >>> [type(m).__module__ for m in model]
        ['torchbp.nn.linear', 'torchbp.nn.activation']
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    table = twins()
    if strict:
        twin_classes = set(table.values())
        left = [
            f"{name or '(model)'} ({type(module).__name__})"
            for name, module in model.named_modules()
            if module._parameters and type(module) not in table and not _is_torchbp(module, twin_classes)
        ]
        if left:
            raise ValueError(
                "convert(strict=True): these modules have parameters and no torchbp twin, so their backward "
                f"would stay native: {', '.join(left)}; convert without strict, or register a layer plugin for them"
            )
    converted = _replace(model, table)
    if feedback is not None:
        attach(converted, feedback, **options)
    elif options:
        raise TypeError(f"convert: options {', '.join(sorted(options))} are a feedback rule's; pass feedback= too")
    return converted


def revert(model: torch.nn.Module) -> torch.nn.Module:
    """Undo ``convert``: each torchbp twin becomes its ``torch.nn`` layer again, in place.

    ``Dense`` and ``MLP`` have no single ``torch.nn`` twin and
    are left as they are. A feedback rule is taken out first (its ``feedback_weight`` buffers go).
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    detach(model)
    return _replace(model, {twin: module for module, twin in twins().items()})
