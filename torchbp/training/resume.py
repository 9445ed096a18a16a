"""Resuming a run: its saved settings win, and a setting that cannot change is refused, never ignored."""

from __future__ import annotations

from typing import Any

FIXED: dict[str, Any] = {
    "cost": "quadratic",
    "cost_options": {},
    "rule": "sgd",
    "rule_options": {},
    "lr": 3.0,
    "batch_size": 10,
    "seed": None,
    "name": "torchbp-run",
    "patience": 0,
    "monitor": "val_loss",
    "restore_best": False,
}
"""The settings a resumed run keeps, with ``fit``'s defaults: a value left at its default takes the run's."""


def resumed_settings(checkpoint: dict[str, Any], given: dict[str, Any], has_scheduler: bool) -> dict[str, Any]:
    """``given`` with every fixed setting replaced by the run's (``checkpoint["config"]``).

    Raises ``ValueError`` naming each setting given with a value other than its default and the
    run's, and when a scheduler is given to a run trained without one, or the other way round.
    """
    saved = checkpoint["config"]
    changed = [
        f"{key}={given[key]!r} (the run has {saved[key]!r})"
        for key, default in FIXED.items()
        if key in saved and given[key] != default and given[key] != saved[key]
    ]
    if changed:
        raise ValueError(
            "resume: a resumed run keeps its saved settings; only epochs and device may change, "
            f"got {', '.join(changed)}"
        )
    schedule = checkpoint.get("scheduler")
    if schedule is not None and not has_scheduler:
        raise ValueError(
            f"resume: the run was trained with a {schedule['name']} learning-rate scheduler; "
            "pass the same scheduler= to continue it"
        )
    if schedule is None and has_scheduler:
        raise ValueError("resume: the run was trained without a learning-rate scheduler; a scheduler cannot be added")
    return {**given, **{key: saved[key] for key in FIXED if key in saved}}


def check_scheduler(checkpoint: dict[str, Any], scheduler: object) -> None:
    """Refuse a scheduler of another class than the one the run was trained with."""
    schedule = checkpoint.get("scheduler")
    if schedule is not None and schedule["name"] != type(scheduler).__name__:
        raise ValueError(
            f"resume: the run was trained with a {schedule['name']} learning-rate scheduler, "
            f"got a {type(scheduler).__name__}"
        )
