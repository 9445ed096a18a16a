"""A bounded cache of checked layer settings, so that a layer's call checks its settings once.

A key tells ``1`` from ``1.0``, ``True`` and ``numpy.int64(1)`` (which hash alike), so that a
setting of the wrong type is refused on every call, not only on the first.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

import torch

_V = TypeVar("_V")


def settings_key(*values: object) -> Hashable | None:
    """A key for a call's settings that includes the type of each value and of each entry of a tuple
    value; ``None`` when one is unhashable (a list), and under torch.compile, whose traced graph looks
    nothing up."""
    if torch.compiler.is_compiling():
        return None
    types = [tuple(map(type, v)) if type(v) is tuple else type(v) for v in values]
    key = (values, tuple(types))
    try:
        hash(key)
    except TypeError:
        return None
    return key


class SettingsCache(Generic[_V]):
    """At most ``size`` entries: full, it starts afresh. Nothing is written under torch.compile
    (Dynamo breaks its graph at a mutated global dict, and a compiled graph looks nothing up)."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self.entries: dict[Hashable, _V] = {}

    def get(self, key: Hashable | None) -> _V | None:
        return None if key is None else self.entries.get(key)

    def remember(self, key: Hashable | None, value: _V) -> _V:
        """Keep ``value`` under ``key`` (where it has one) and return it."""
        if key is not None and not torch.compiler.is_compiling():
            if len(self.entries) >= self.size:
                self.entries.clear()
            self.entries[key] = value
        return value
