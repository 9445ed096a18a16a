"""Learning-rate schedules: any ``torch.optim.lr_scheduler`` scheduler, stepped once per epoch.

``fit(..., scheduler=lambda rule: torch.optim.lr_scheduler.StepLR(rule, 10))`` builds the
scheduler on the update rule and steps it after every epoch (``ReduceLROnPlateau`` with the
epoch's validation loss, or its training loss when there is no validation data). Its state goes
into each checkpoint and comes back on resume. The command line names three
(``--lr-schedule step|cosine|plateau``), built here by ``named_schedule``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, LRScheduler, ReduceLROnPlateau, StepLR

from ..options import declared_options, parse_options

Scheduler = LRScheduler | ReduceLROnPlateau
SchedulerFactory = Callable[[torch.optim.Optimizer], Scheduler]

SCHEDULES: dict[str, tuple[type, str, dict[str, Any]]] = {
    "step": (StepLR, "multiply the rate by gamma every step_size epochs", {"step_size": 10, "gamma": 0.1}),
    "cosine": (CosineAnnealingLR, "cosine annealing from lr to eta_min over T_max epochs", {"eta_min": 0.0}),
    "plateau": (
        ReduceLROnPlateau,
        "multiply the rate by factor once the validation loss has not improved for patience epochs",
        {"factor": 0.1, "patience": 10},
    ),
}
"""The command line's schedules: name → (torch class, what it does, torchbp's defaults)."""

_RANGES: dict[str, tuple[Callable[[float], bool], str]] = {
    "step_size": (lambda v: v >= 1, ">= 1 (epochs between steps)"),
    "T_max": (lambda v: v >= 1, ">= 1 (epochs of one annealing)"),
    "gamma": (lambda v: v > 0, "> 0 (a factor of the rate)"),
    "factor": (lambda v: 0 <= v < 1, "in [0, 1) (a factor of the rate)"),
    "eta_min": (lambda v: v >= 0, ">= 0 (a learning rate)"),
    "min_lr": (lambda v: v >= 0, ">= 0 (a learning rate)"),
    "patience": (lambda v: v >= 0, ">= 0 (epochs)"),
    "cooldown": (lambda v: v >= 0, ">= 0 (epochs)"),
}
"""The range of each numeric schedule option, checked before training: a step size of 0 or a
negative factor would otherwise fail, or turn the rate negative, after the first epoch."""


def make_scheduler(factory: SchedulerFactory, rule: torch.optim.Optimizer) -> Scheduler:
    """``factory(rule)``, checked to be a torch scheduler driving ``rule``."""
    if not callable(factory):
        raise TypeError(
            "scheduler: expected a function of the update rule returning a torch scheduler, "
            f"e.g. lambda rule: torch.optim.lr_scheduler.StepLR(rule, 10); got {factory!r}"
        )
    scheduler = factory(rule)
    if not isinstance(scheduler, LRScheduler | ReduceLROnPlateau):
        raise TypeError(
            "scheduler: the function must return a torch.optim.lr_scheduler scheduler built on the rule "
            f"it is given, got {type(scheduler).__name__}"
        )
    if scheduler.optimizer is not rule:
        raise ValueError("scheduler: the returned scheduler drives another optimizer; build it on the rule it is given")
    return scheduler


def step_scheduler(scheduler: Scheduler, metrics: dict[str, float]) -> None:
    """One epoch's step: ``ReduceLROnPlateau`` reads the validation loss (else the training loss)."""
    if isinstance(scheduler, ReduceLROnPlateau):
        scheduler.step(metrics.get("val_loss", metrics["train_loss"]))
    else:
        scheduler.step()


def schedule_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """The options of ``--lr-schedule name`` read by the scheduler's declared types (``step_size=5``
    from the command line is the int 5); unknown names and options are errors listing the known ones."""
    if name not in SCHEDULES:
        raise ValueError(f"lr-schedule: unknown schedule {name!r}; known: {', '.join(SCHEDULES)}")
    cls = SCHEDULES[name][0]
    accepted = [p for p in inspect.signature(cls).parameters if p not in ("self", "optimizer", "verbose", "mode")]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"lr-schedule {name}: unknown option(s) {', '.join(unknown)}; {cls.__name__} takes {', '.join(accepted)}"
        )
    init = cls.__init__  # type: ignore[misc]
    parsed = parse_options(f"lr-schedule {name!r}", options, declared_options(init, skip=("self", "optimizer")))
    for key, value in parsed.items():
        if key in _RANGES and isinstance(value, int | float) and not isinstance(value, bool):
            valid, expected = _RANGES[key]
            if not valid(value):
                raise ValueError(f"lr-schedule {name}: option {key} expects a value {expected}, got {value!r}")
    return parsed


def named_schedule(name: str, options: dict[str, Any], epochs: int) -> SchedulerFactory:
    """The factory for ``--lr-schedule name`` with ``--lr-schedule-option key=value`` options.

    ``cosine`` anneals over the run's ``epochs`` unless ``T_max`` is given. Unknown names and
    options are errors listing the known ones.
    """
    options = schedule_options(name, options)
    cls, _, defaults = SCHEDULES[name]
    settings = {**defaults, **({"T_max": max(epochs, 1)} if name == "cosine" else {}), **options}

    def factory(rule: torch.optim.Optimizer) -> Scheduler:
        try:
            return cls(rule, **settings)  # type: ignore[no-any-return]
        except (TypeError, ValueError) as error:
            given = ", ".join(f"{k}={v!r}" for k, v in settings.items())
            raise ValueError(f"lr-schedule {name} ({given}): {error}") from None

    return factory
