"""Hook specifications: the plugin author's reference.

A plugin is any Python object (usually a module) with functions named after these hooks and
marked with ``torchbp.hookimpl``. torchbp's own costs, update rules and loggers are plugins
of exactly this kind. A distribution makes its plugin known through the ``torchbp`` entry-point
group::

    # pyproject.toml of your distribution
    [project.entry-points.torchbp]
    my_plugin = "my_package.plugin"

and Python code can register one at run time with ``torchbp.register_plugin``. A hook
implementation may accept any subset of the arguments its specification lists.
"""

from __future__ import annotations

from typing import Any

import pluggy
from torch import Tensor

from .specs import CostSpec, FeedbackSpec, LayerSpec, RuleSpec

hookspec = pluggy.HookspecMarker("torchbp")
hookimpl = pluggy.HookimplMarker("torchbp")


@hookspec
def torchbp_costs() -> list[CostSpec]:
    """Return the cost functions this plugin provides.

    Called when torchbp first looks up or lists costs (and again after a plugin is registered
    or unregistered). Each ``CostSpec`` gives the value C(a, y) per example and
    its gradient ∇ₐC; torchbp does the batch averaging and the autograd wrapping. A name may be
    provided by one plugin only: a second provider makes that name an error naming both.

    Returns:
        A list of ``CostSpec``.
    """


@hookspec
def torchbp_rules() -> list[RuleSpec]:
    """Return the update rules this plugin provides.

    Called when torchbp first looks up or lists update rules. Each ``RuleSpec``
    names a ``torch.optim.Optimizer`` subclass; ``torchbp.create_rule(name, params, **hp)``
    builds it as ``optimizer(params, **hp)``. A name may be provided by one plugin only.

    Returns:
        A list of ``RuleSpec``.
    """


@hookspec
def torchbp_layers() -> list[LayerSpec]:
    """Return the explicit-δ layers this plugin provides.

    Called when torchbp first converts a model or lists layers. Each ``LayerSpec``
    pairs a ``torch.nn`` class with its twin, a subclass whose backward is written out (usually
    through a ``torchbp.derivatives.Derivatives`` object and
    ``torchbp.functional.apply_layer``). ``torchbp.nn.convert`` then replaces every
    module of that exact class with the twin, and the test suite checks the layer (gradcheck,
    gradgradcheck, forward AD over the derivatives' ``samples()``; outputs and gradients against
    the ``torch.nn`` original over ``examples``). A ``torch.nn`` class may have one twin only:
    a second provider makes converting it an error naming both. A spec's ``name`` is its label in
    ``list_layers`` (two plugins giving one name are left out of the listing, with a warning);
    ``convert`` finds twins by class, so such a clash of names takes no layer out of use. A
    malformed spec (a twin that does not subclass its ``module``, …) skips the plugin's layers
    with a ``PluginWarning`` naming the field.

    Returns:
        A list of ``LayerSpec``.
    """


@hookspec
def torchbp_feedback() -> list[FeedbackSpec]:
    """Return the feedback rules this plugin provides: ways for δ to reach the layer below.

    Called when torchbp first looks up or lists feedback rules. Each ``FeedbackSpec``
    names a ``torchbp.feedback.FeedbackRule`` subclass, which says what stands in for Wˡ in
    BP2, ∂C/∂aˡ⁻¹ = δˡ Wˡ: a matrix Bˡ shaped like Wˡ (its ``initial`` B, the ``matrix`` used
    for each batch, and optionally how it learns B from ∂C/∂Wˡ), or, for a ``direct`` rule,
    a matrix ``(network outputs, layer inputs)`` that carries the output error e. torchbp keeps B
    in each layer's ``feedback_weight`` buffer, seeds it, saves it in checkpoints and runs it in
    the backward passes of ``Linear``, ``Dense``, ``MLP`` (fused and graph-free) and the
    convolutions; the parameter gradients of each layer stay exact. A name may be provided by one
    plugin only.

    Returns:
        A list of ``FeedbackSpec``.
    """


# Training events. ``run`` is the ``torchbp.training.Run`` being trained: it holds the model,
# the update rule, the cost, the resolved config, the run directory (``None`` when nothing is
# logged), the device and a ``state`` dict in which a plugin may keep what it needs per run.
# TensorBoard logging and the console progress bar are built-in plugins on these hooks.


@hookspec
def torchbp_train_start(run: Any) -> None:
    """Called once before the first step (and again when a run is resumed).

    ``run.start_epoch`` says where training starts (0, or the epoch after the checkpoint).
    A logger opens its files here; a plugin may register hooks on ``run.model``: ``fit`` picks
    its graph-free fast path only after this hook, and only while the model has no module hooks,
    so forward and backward hooks put on here fire at every step. Pass an object to
    ``fit(callbacks=[…])`` to have it called for that run only.
    """


@hookspec
def torchbp_before_update(run: Any, epoch: int, step: int, inputs: Tensor, targets: Tensor) -> None:
    """Called after a batch's gradients are in every ``.grad`` and before the update rule steps.

    For plugins that compare those gradients with something computed on the same batch (the
    feedback-alignment monitor compares them with the exact backprop gradients). ``fit`` calls
    this hook only while some plugin implements it; leave the model, its gradients and torch's
    random state as you found them.

    Args:
        inputs: the batch's inputs, on ``run.device``.
        targets: its targets, in the form the cost takes.
    """


@hookspec
def torchbp_step_end(run: Any, epoch: int, step: int, loss: Tensor) -> None:
    """Called after every update step.

    Args:
        epoch: the epoch, counting from 0.
        step: the step within the epoch, counting from 0 (``run.steps_per_epoch`` in all).
        loss: the batch's cost, a 0-d tensor on ``run.device`` (call ``.item()`` only if you
            need the number: on CUDA it waits for the device). A graph-free step needs no cost
            value, only ∇ₐC, so ``fit`` computes this one only while some implementation takes
            a ``loss`` argument: leave it out of yours if you do not read it.
    """


@hookspec
def torchbp_epoch_end(run: Any, epoch: int, metrics: dict[str, float]) -> None:
    """Called after each epoch, once the validation data has been evaluated.

    ``metrics`` holds ``train_loss``, ``lr``, ``seconds`` and, with validation data,
    ``val_loss`` and (for class targets) ``val_accuracy``. The checkpoint of this epoch has
    already been written when the run has a directory.
    """


@hookspec
def torchbp_train_end(run: Any, history: list[dict[str, float]]) -> None:
    """Called once when training ends, with every epoch's metrics; a logger closes its files here.

    It runs however training ends: ``run.status`` is ``"finished"``, ``"stopped early"``
    (``fit(patience=…)``), ``"interrupted"`` (SIGINT or SIGTERM; ``fit`` then raises
    ``torchbp.training.TrainingInterrupted``) or ``"failed"`` (an exception, which
    propagates after this hook), so remove here whatever ``torchbp_train_start`` put on the model.
    """
