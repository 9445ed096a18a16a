"""Hook specifications: the plugin author's reference.

A plugin is any Python object (usually a module) with functions named after these hooks and
marked with :data:`torchbp.hookimpl`. torchbp's own costs, update rules and loggers are plugins
of exactly this kind. A distribution makes its plugin known through the ``torchbp`` entry-point
group::

    # pyproject.toml of your distribution
    [project.entry-points.torchbp]
    my_plugin = "my_package.plugin"

and Python code can register one at run time with :func:`torchbp.register_plugin`. A hook
implementation may accept any subset of the arguments its specification lists.
"""

from __future__ import annotations

import pluggy

from .specs import CostSpec, RuleSpec

hookspec = pluggy.HookspecMarker("torchbp")
hookimpl = pluggy.HookimplMarker("torchbp")


@hookspec
def torchbp_costs() -> list[CostSpec]:
    """Return the cost functions this plugin provides.

    Called when torchbp first looks up or lists costs (and again after a plugin is registered
    or unregistered). Each :class:`~torchbp.CostSpec` gives the value C(a, y) per example and
    its gradient ∇ₐC; torchbp does the batch averaging and the autograd wrapping. A name may be
    provided by one plugin only: a second provider makes that name an error naming both.

    Returns:
        A list of :class:`~torchbp.CostSpec`.
    """


@hookspec
def torchbp_rules() -> list[RuleSpec]:
    """Return the update rules this plugin provides.

    Called when torchbp first looks up or lists update rules. Each :class:`~torchbp.RuleSpec`
    names a :class:`torch.optim.Optimizer` subclass; ``torchbp.create_rule(name, params, **hp)``
    builds it as ``optimizer(params, **hp)``. A name may be provided by one plugin only.

    Returns:
        A list of :class:`~torchbp.RuleSpec`.
    """
