"""Per-call callbacks: plugins on the training hooks that listen to one ``fit`` call only.

``fit(..., callbacks=[obj, …])`` registers each object with the plugin manager for the length
of the call and unregisters it afterwards, whatever happens, so a callback of one ``fit`` never
fires in the next (a plugin registered with ``torchbp.register_plugin`` listens to every run).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import pluggy

from ..plugins import PluginError, get_plugin_manager

TRAINING_HOOKS = ("torchbp_train_start", "torchbp_step_end", "torchbp_epoch_end", "torchbp_train_end")


def _hooks_of(callback: object) -> list[str]:
    """The names of ``callback``'s attributes that are marked with ``torchbp.hookimpl``."""
    return [
        name
        for name in dir(callback)
        if name.startswith("torchbp_") and hasattr(getattr(callback, name, None), "torchbp_impl")
    ]


@contextmanager
def registered(callbacks: Sequence[object]) -> Iterator[None]:
    """``callbacks`` registered with torchbp's plugin manager inside the block, unregistered after it.

    Each must implement at least one training hook (``torchbp_train_start``, ``torchbp_step_end``,
    ``torchbp_epoch_end``, ``torchbp_train_end``) marked with ``torchbp.hookimpl``, and no other
    hook; a misspelt hook name or a wrong argument is an error naming the callback.
    """
    if isinstance(callbacks, str | bytes) or not isinstance(callbacks, Sequence):
        raise TypeError(f"callbacks: expected a list of objects with torchbp.hookimpl methods, got {callbacks!r}")
    manager = get_plugin_manager()
    names: list[str] = []
    try:
        for index, callback in enumerate(callbacks):
            hooks = _hooks_of(callback)
            others = sorted(set(hooks) - set(TRAINING_HOOKS))
            if not hooks or others:
                what = f"has {', '.join(others)}" if others else "has none"
                raise PluginError(
                    f"callbacks[{index}] ({type(callback).__name__}): expected methods marked with "
                    f"@torchbp.hookimpl among {', '.join(TRAINING_HOOKS)}; it {what}"
                )
            if manager.is_registered(callback):
                raise PluginError(
                    f"callbacks[{index}] ({type(callback).__name__}) is already registered as a plugin; "
                    f"it would fire twice: pass it to fit or register it, not both"
                )
            name = f"torchbp.fit.callbacks[{index}]:{id(callback)}"
            try:
                manager.register(callback, name=name)
                names.append(name)
                manager.check_pending()
            except (ValueError, pluggy.PluginValidationError) as error:
                reason = str(error).splitlines()[-1]  # pluggy's first lines name the internal registration
                raise PluginError(f"callbacks[{index}] ({type(callback).__name__}): {reason}") from None
        yield
    finally:
        for name in names:
            if manager.has_plugin(name):
                manager.unregister(name=name)


def check_callbacks(callbacks: Sequence[object]) -> None:
    """Raise the error ``registered`` would, before anything is written (registers nothing)."""
    with registered(callbacks):
        pass
