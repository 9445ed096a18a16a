"""The one place that owns torchbp's ``pluggy.PluginManager``.

Built-in plugins are registered first, through the same hooks as everyone else's; then the
distributions that declare an entry point in the group ``torchbp`` are loaded. A plugin that
fails to load, or raises in a hook, is reported with a ``PluginWarning`` naming it and the
exception, and the others keep working.

Environment variables:
    ``TORCHBP_DISABLE_PLUGIN_AUTOLOAD=1``: load no entry points (only built-ins and plugins
    registered from Python), for debugging a broken install.
    ``TORCHBP_TRACE_HOOKS=1``: print every hook call and its result to stderr.
"""

from __future__ import annotations

import fnmatch
import importlib.metadata
import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pluggy

from . import hookspecs
from .specs import CostSpec, FeedbackSpec, LayerSpec, RuleSpec

ENTRY_POINT_GROUP = "torchbp"


class PluginWarning(UserWarning):
    """A plugin could not be loaded or failed in a hook; the other plugins keep working."""


class PluginError(RuntimeError):
    """A plugin problem that makes a request impossible, e.g. a name provided twice."""


@dataclass(frozen=True)
class PluginEntry:
    """One registered cost, update rule, layer or feedback rule, and who provides it.

    Attributes:
        name: the name to look it up by.
        kind: ``"cost"``, ``"rule"``, ``"layer"`` or ``"feedback"``.
        description: its one-line description.
        plugin: the name of the plugin that provides it (the entry point's name for an
            installed distribution).
        distribution: the distribution that ships the plugin, or ``None`` for one registered
            from Python.
        version: that distribution's version, or ``None``.
        spec: the ``CostSpec``, ``RuleSpec``,
            ``LayerSpec`` or ``FeedbackSpec`` itself.
    """

    name: str
    kind: str
    description: str
    plugin: str
    distribution: str | None
    version: str | None
    spec: CostSpec | RuleSpec | LayerSpec | FeedbackSpec


_KINDS = {
    "cost": ("torchbp_costs", CostSpec),
    "rule": ("torchbp_rules", RuleSpec),
    "layer": ("torchbp_layers", LayerSpec),
    "feedback": ("torchbp_feedback", FeedbackSpec),
}
_BUILTINS = (
    "torchbp.costs",
    "torchbp.rules",
    "torchbp.feedback.rules",
    "torchbp.dp_sgd",
    "torchbp.nn.linear",
    "torchbp.nn.activation",
    "torchbp.nn.conv",
    "torchbp.nn.batchnorm",
    "torchbp.nn.pool",
    "torchbp.nn.dropout",
    "torchbp.nn.sequential",
    "torchbp.nn.norm",
    "torchbp.nn.embedding",
    "torchbp.nn.attention",
    "torchbp.nn.transformer",
    "torchbp.training.console",
    "torchbp.training.tensorboard",
    "torchbp.training.alignment",
)


class _Plugins:
    """The plugin manager, where each plugin came from, and the collected registry."""

    def __init__(self) -> None:
        self.manager = pluggy.PluginManager("torchbp")
        self.manager.add_hookspecs(hookspecs)
        self.sources: dict[str, tuple[str | None, str | None]] = {}
        self.cache: dict[str, tuple[dict[str, PluginEntry], dict[str, list[PluginEntry]]]] = {}
        own = importlib.metadata.version("torchbp") if _installed("torchbp") else None
        for module_name in _BUILTINS:
            module = importlib.import_module(module_name)
            self.manager.register(module, name=module_name)
            self.sources[module_name] = ("torchbp", own)
        if os.environ.get("TORCHBP_DISABLE_PLUGIN_AUTOLOAD", "") in ("", "0"):
            self.load_entry_points()
        self.manager.check_pending()
        self.tracing = os.environ.get("TORCHBP_TRACE_HOOKS", "") not in ("", "0")
        if self.tracing:
            self.manager.trace.root.setwriter(sys.stderr.write)
            self.manager.enable_tracing()

    def load_entry_points(self) -> None:
        for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if self.manager.has_plugin(entry_point.name):
                continue
            dist = entry_point.dist
            where = f"entry point {entry_point.name!r} ({entry_point.value}"
            where += f", from {dist.name} {dist.version})" if dist else ")"
            try:
                plugin = entry_point.load()
                self.manager.register(plugin, name=entry_point.name)
            except Exception as error:
                warnings.warn(
                    f"torchbp plugin {where} failed to load and was skipped: {type(error).__name__}: {error}",
                    PluginWarning,
                    stacklevel=4,
                )
                continue
            self.sources[entry_point.name] = (dist.name, dist.version) if dist else (None, None)

    def collect(self, kind: str) -> tuple[dict[str, PluginEntry], dict[str, list[PluginEntry]]]:
        """All entries of one kind by name, and the names provided more than once."""
        if kind in self.cache:
            return self.cache[kind]
        hook_name, spec_type = _KINDS[kind]
        found: dict[str, list[PluginEntry]] = {}
        for impl in getattr(self.manager.hook, hook_name).get_hookimpls():
            try:
                answer = impl.function()
                if isinstance(answer, spec_type):
                    raise TypeError(f"expected a list of {spec_type.__name__}, got one {spec_type.__name__}")
                specs = list(answer)
                for spec in specs:
                    if not isinstance(spec, spec_type):
                        raise TypeError(f"expected {spec_type.__name__} items, got {type(spec).__name__}")
            except Exception as error:
                warnings.warn(
                    f"torchbp plugin {impl.plugin_name!r} raised in {hook_name}() and its "
                    f"{kind}s were skipped: {type(error).__name__}: {error}",
                    PluginWarning,
                    stacklevel=4,
                )
                continue
            if self.tracing:
                names = ", ".join(spec.name for spec in specs)
                sys.stderr.write(f"torchbp: {impl.plugin_name}.{hook_name}() -> [{names}]\n")
            distribution, version = self.sources.get(impl.plugin_name, (None, None))
            for spec in specs:
                entry = PluginEntry(spec.name, kind, spec.description, impl.plugin_name, distribution, version, spec)
                found.setdefault(spec.name, []).append(entry)
        unique = {name: entries[0] for name, entries in found.items() if len(entries) == 1}
        conflicts = {name: entries for name, entries in found.items() if len(entries) > 1}
        self.cache[kind] = (unique, conflicts)
        return unique, conflicts


def _installed(distribution: str) -> bool:
    try:
        importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


_plugins: _Plugins | None = None


def _get() -> _Plugins:
    global _plugins
    if _plugins is None:
        _plugins = _Plugins()
    return _plugins


def get_plugin_manager() -> pluggy.PluginManager:
    """torchbp's plugin manager, created (built-ins registered, entry points loaded) on first use."""
    return _get().manager


def listen(name: str, listener: object | None) -> None:
    """Register ``listener`` under ``name``, in place of whatever had that name (``None``: remove it).

    For hooks a built-in plugin answers only while it is active — the progress bar on a terminal,
    step logging to TensorBoard — so that ``torchbp.fit`` computes nothing per step for
    listeners that are not there.
    """
    manager = get_plugin_manager()
    if manager.has_plugin(name):
        manager.unregister(name=name)
    if listener is not None:
        manager.register(listener, name=name)


def register_plugin(plugin: object, name: str | None = None) -> str:
    """Register a plugin object (a module, class or instance with ``@torchbp.hookimpl`` functions).

    Returns the name it was registered under. Raises ``PluginError`` when the name is taken
    or a hook function is misspelt or has a wrong signature.
    """
    state = _get()
    if name is not None and state.manager.has_plugin(name):
        raise PluginError(f"cannot register plugin {name!r}: that name is taken; choose another or unregister it first")
    try:
        registered = state.manager.register(plugin, name=name)
        state.manager.check_pending()
    except (ValueError, pluggy.PluginValidationError) as error:
        if state.manager.is_registered(plugin):
            state.manager.unregister(plugin)
        raise PluginError(f"cannot register plugin {name or plugin!r}: {error}") from None
    if registered is None:
        raise PluginError(f"plugin {name or plugin!r} is blocked and was not registered")
    state.sources[registered] = (None, None)
    state.cache.clear()
    return registered


def unregister_plugin(plugin: object | str) -> None:
    """Unregister a plugin, given the object or the name it was registered under."""
    state = _get()
    if isinstance(plugin, str):
        if not state.manager.has_plugin(plugin):
            raise PluginError(
                f"no plugin named {plugin!r}; registered: "
                f"{', '.join(sorted(n for n, _ in state.manager.list_name_plugin()))}"
            )
        state.manager.unregister(name=plugin)
    else:
        state.manager.unregister(plugin)
    state.cache.clear()


def _raising_plugin(hook: pluggy.HookCaller, error: BaseException) -> str | None:
    """The name of the plugin whose implementation of ``hook`` raised ``error`` (read off its traceback)."""
    codes = {}
    for impl in hook.get_hookimpls():
        function = getattr(impl.function, "__func__", impl.function)
        code = getattr(function, "__code__", None)
        if code is not None:
            codes[code] = impl.plugin_name
    traceback = error.__traceback__
    while traceback is not None:
        name = codes.get(traceback.tb_frame.f_code)
        if name is not None:
            return name
        traceback = traceback.tb_next
    return None


def reporting_plugin(hook: pluggy.HookCaller) -> Callable[..., Any]:
    """``hook`` as a callable whose failure in a plugin is a ``PluginError`` naming that plugin.

    For the training hooks, which fit calls while it trains: a logger or callback that raises
    stops the run (its results could not be trusted), and the message says whose it was.
    """

    def call(**kwargs: Any) -> Any:
        try:
            return hook(**kwargs)
        except Exception as error:
            name = _raising_plugin(hook, error)
            if name is None:
                raise
            distribution, version = _get().sources.get(name, (None, None))
            source = " ".join(filter(None, (distribution, version))) or "registered at run time"
            raise PluginError(
                f"torchbp plugin {name!r} ({source}) raised in {hook.name}(): {type(error).__name__}: {error}"
            ) from error

    return call


def lookup(kind: str, name: str) -> PluginEntry:
    """The entry registered as ``name`` of ``kind`` (``"cost"``, ``"rule"``, ``"layer"`` or
    ``"feedback"``), or an error that teaches."""
    unique, conflicts = _get().collect(kind)
    if name in conflicts:
        providers = " and ".join(_provider(entry) for entry in conflicts[name])
        raise PluginError(
            f"{kind} {name!r} is provided by two plugins, {providers}; uninstall or unregister one of them"
        )
    if name not in unique:
        known = ", ".join(sorted(unique)) or "none"
        noun = "feedback rule" if kind == "feedback" else kind
        raise ValueError(f"unknown {noun} {name!r}; registered {noun}s: {known}")
    return unique[name]


def listing(kind: str, pattern: str = "*") -> list[PluginEntry]:
    """The entries of one kind whose names match the shell-style ``pattern``, sorted by name.

    A name provided by two plugins is left out of the listing with a ``PluginWarning``.
    """
    unique, conflicts = _get().collect(kind)
    for name, entries in conflicts.items():
        providers = " and ".join(_provider(entry) for entry in entries)
        warnings.warn(
            f"{kind} {name!r} is provided by two plugins, {providers}; it is left out",
            PluginWarning,
            stacklevel=3,
        )
    return [unique[name] for name in sorted(unique) if fnmatch.fnmatchcase(name, pattern)]


def every_entry(kind: str) -> list[PluginEntry]:
    """Every entry of one kind, those whose name two plugins provide included, sorted by name: for
    what is looked up by something other than the name (``convert`` finds a layer by its torch
    class, so a clash of names leaves both layers in use)."""
    unique, conflicts = _get().collect(kind)
    entries = [*unique.values(), *(entry for clashing in conflicts.values() for entry in clashing)]
    return sorted(entries, key=lambda entry: entry.name)


def _provider(entry: PluginEntry) -> str:
    source = f"{entry.distribution} {entry.version}" if entry.distribution else "registered at run time"
    return f"{entry.plugin!r} ({source})"
