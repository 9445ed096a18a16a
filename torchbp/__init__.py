"""torchbp: backpropagation written out equation by equation, inside PyTorch."""

from importlib.metadata import PackageNotFoundError, version

from . import feedback, functional, nn
from .hookspecs import hookimpl
from .per_example_quantities import PerExample, PerExampleError, per_example, per_example_norm
from .plugins import (
    PluginEntry,
    PluginError,
    PluginWarning,
    get_plugin_manager,
    register_plugin,
    unregister_plugin,
)
from .predict import load_model
from .registry import (
    Cost,
    create_rule,
    get_cost,
    get_feedback,
    list_costs,
    list_feedback,
    list_layers,
    list_rules,
)
from .specs import CostSpec, FeedbackSpec, LayerSpec, RuleSpec
from .training import fit
from .update_rule import UpdateRule

try:
    __version__ = version("torchbp")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "Cost",
    "CostSpec",
    "FeedbackSpec",
    "LayerSpec",
    "PerExample",
    "PerExampleError",
    "PluginEntry",
    "PluginError",
    "PluginWarning",
    "RuleSpec",
    "UpdateRule",
    "__version__",
    "create_rule",
    "feedback",
    "fit",
    "functional",
    "get_cost",
    "get_feedback",
    "get_plugin_manager",
    "hookimpl",
    "list_costs",
    "list_feedback",
    "list_layers",
    "list_rules",
    "load_model",
    "nn",
    "per_example",
    "per_example_norm",
    "register_plugin",
    "unregister_plugin",
]
