"""torchbp: backpropagation written out equation by equation, inside PyTorch."""

from importlib.metadata import PackageNotFoundError, version

from . import functional, nn
from .hookspecs import hookimpl
from .plugins import (
    PluginEntry,
    PluginError,
    PluginWarning,
    get_plugin_manager,
    register_plugin,
    unregister_plugin,
)
from .predict import load_model
from .registry import Cost, create_rule, get_cost, list_costs, list_layers, list_rules
from .specs import CostSpec, LayerSpec, RuleSpec
from .training import fit
from .update_rule import UpdateRule

try:
    __version__ = version("torchbp")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "Cost",
    "CostSpec",
    "LayerSpec",
    "PluginEntry",
    "PluginError",
    "PluginWarning",
    "RuleSpec",
    "UpdateRule",
    "__version__",
    "create_rule",
    "fit",
    "functional",
    "get_cost",
    "get_plugin_manager",
    "hookimpl",
    "list_costs",
    "list_layers",
    "list_rules",
    "load_model",
    "nn",
    "register_plugin",
    "unregister_plugin",
]
