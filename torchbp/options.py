"""Option values of costs and update rules, read by each option's declared type.

A value may come as text (``--rule-option amsgrad=no``, an old ``config.toml``) or as a Python
value (``fit(..., momentum=0.9)``). Either way it ends as the type the option declares — its
annotation, else the type of its default — or as an error naming the option, the type and what
came. Booleans read ``true``/``false``/``yes``/``no``/``1``/``0`` in any case; real numbers must
be finite.
"""

from __future__ import annotations

import inspect
import math
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor

_TRUE = ("true", "yes", "1")
_FALSE = ("false", "no", "0")


@dataclass(frozen=True)
class Declared:
    """What an option takes: ``bool``, ``int``, ``float``, ``str``, a tuple of those, or ``None`` (anything)."""

    kind: type | None
    items: tuple[type, ...] = ()
    optional: bool = False

    def describe(self) -> str:
        if self.kind is tuple:
            return "a pair" if len(self.items) == 2 else f"{len(self.items)} values"
        names = {bool: "a bool (true/false/yes/no/1/0)", int: "an int", float: "a finite float", str: "text"}
        text = names.get(self.kind, "a value") if self.kind is not None else "a value"
        return text + (" or none" if self.optional else "")


def _scalar_kind(annotation: Any) -> tuple[type | None, bool]:
    """(bool / int / float / str or None, whether None is allowed) for one annotation."""
    if annotation in (bool, int, float, str):
        return annotation, False
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        members = typing.get_args(annotation)
        optional = type(None) in members
        for kind in (bool, float, int, str):
            if kind in members:
                return kind, optional
        return None, optional
    return None, False


def declared(annotation: Any, default: Any) -> Declared:
    """The declared type of an option, from its annotation when it names one, else from its default."""
    if typing.get_origin(annotation) in (tuple, typing.Tuple):  # noqa: UP006
        items = tuple(_scalar_kind(a)[0] or float for a in typing.get_args(annotation) if a is not Ellipsis)
        return Declared(tuple, items)
    kind, optional = _scalar_kind(annotation)
    if kind is not None:
        return Declared(kind, optional=optional or default is None)
    if isinstance(default, tuple):
        return Declared(tuple, tuple(float if type(v) is int else type(v) for v in default))
    if isinstance(default, bool | int | float | str):
        return Declared(type(default))
    return Declared(None)


def declared_options(function: Callable[..., Any], skip: tuple[str, ...] = ("self", "params")) -> dict[str, Declared]:
    """The declared type of each keyword of ``function`` (a rule's constructor)."""
    signature = inspect.signature(function)
    try:
        hints = typing.get_type_hints(function)
    except Exception:  # a plugin's annotation that does not resolve: fall back on the defaults
        hints = {}
    return {
        name: declared(hints.get(name), None if parameter.default is inspect.Parameter.empty else parameter.default)
        for name, parameter in signature.parameters.items()
        if name not in skip and parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
    }


def _scalar(owner: str, name: str, kind: type | None, value: Any, what: str) -> Any:
    def refuse() -> ValueError:
        return ValueError(f"{owner}: option {name} expects {what}, got {value!r}")

    if isinstance(value, str) and kind is not str:
        text = value.strip()
        if kind is bool:
            if text.lower() in _TRUE:
                return True
            if text.lower() in _FALSE:
                return False
            raise refuse()
        if kind is int:
            try:
                return int(text)
            except ValueError:
                raise refuse() from None
        if kind is float:
            try:
                value = float(text)
            except ValueError:
                raise refuse() from None
        else:
            return value
    if kind is bool and not isinstance(value, bool):
        raise refuse()
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise refuse()
    if kind is float:
        if isinstance(value, Tensor) and value.numel() == 1:
            number = float(value)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
        else:
            raise refuse()
        if not math.isfinite(number):
            raise ValueError(f"{owner}: option {name} must be finite, got {value!r}")
        return value if isinstance(value, Tensor) else number
    if kind is str and not isinstance(value, str):
        raise refuse()
    return value


def parse_option(owner: str, name: str, value: Any, declared_type: Declared) -> Any:
    """``value`` as ``declared_type``; text is parsed, other values checked. ``owner`` names who asks
    (``"rule 'adam'"``) in the error."""
    what = declared_type.describe()
    if value is None and declared_type.optional:
        return None
    if declared_type.kind is tuple:
        items = value
        if isinstance(value, str):
            text = value.strip()
            try:
                items = tomllib.loads(f"v = {text}")["v"]
            except tomllib.TOMLDecodeError:
                items = [part for part in text.strip("[]()").split(",") if part.strip()]
        if not isinstance(items, list | tuple) or len(items) != len(declared_type.items):
            raise ValueError(f"{owner}: option {name} expects {what} like [0.9, 0.999], got {value!r}")
        return tuple(
            _scalar(owner, f"{name}[{i}]", kind, item, Declared(kind).describe())
            for i, (kind, item) in enumerate(zip(declared_type.items, items))
        )
    if declared_type.kind is None:
        if isinstance(value, str):
            try:
                value = tomllib.loads(f"v = {value}")["v"]
            except tomllib.TOMLDecodeError:
                return value
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{owner}: option {name} must be finite, got {value!r}")
        return value
    return _scalar(owner, name, declared_type.kind, value, what)


def parse_options(owner: str, options: Mapping[str, Any], types_: Mapping[str, Declared]) -> dict[str, Any]:
    """Every option of ``options`` read by its declared type (names not in ``types_`` pass as they are)."""
    return {
        name: parse_option(owner, name, value, types_[name]) if name in types_ else value
        for name, value in options.items()
    }
