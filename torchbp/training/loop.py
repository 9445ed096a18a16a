"""``fit``: the training loop, its run directory, checkpoints and resumption.

Training events go through the plugin hooks (``torchbp_train_start``, ``torchbp_step_end``,
``torchbp_epoch_end``, ``torchbp_train_end``): the console output and TensorBoard logging are
plugins on them.
"""

from __future__ import annotations

import inspect
import os
import random
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
import torch.distributed as dist
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from ..functional.internals import any_autocast
from ..nn import MLP
from ..nn.feedback import attach, feedback_of
from ..per_example_quantities import PerExample
from ..plugins import get_plugin_manager, lookup, reporting_plugin
from ..registry import Cost, create_rule, get_cost, parsed_feedback_options, rule_hyperparameters
from ..registry import cost_options as cost_options_for
from ..registry import rule_options as rule_options_for
from ..specs import RuleSpec
from .callbacks import check_callbacks, registered
from .checkpoints import CheckpointError, load_checkpoint, remove_stale_temporaries, save_checkpoint
from .config import CONFIG, dump_config
from .divergence import DivergenceError, NonFiniteCost, first_non_finite
from .graph_free import GraphFreeStep, supports
from .resume import check_scheduler, resumed_settings
from .run_directory import closed_on_failure, new_run_directory
from .schedules import SchedulerFactory, make_scheduler, step_scheduler
from .signals import StopRequest, TrainingInterrupted, stop_requests
from .stopping import EarlyStopping
from .validate import check_finite_data, check_fit_arguments, warn_if_probabilities_into_logit_cost

TrainData = tuple[Tensor, Tensor] | Dataset | DataLoader


@dataclass
class Run:
    """One training run, as the training hooks see it.

    Attributes:
        model, rule, cost: what is trained, how it steps, what it minimises.
        config: the resolved settings (saved as ``config.toml`` in the run directory).
        directory: ``runs/<name>/version_N``, or ``None`` when nothing is logged.
        device: where training happens.
        epochs, steps_per_epoch, start_epoch: the plan (``start_epoch`` > 0 after a resume).
        verbose: whether console output is wanted.
        rank, world_size: this process and how many train together (1 without torchrun).
        state: a scratch dict for plugins, one key per plugin.
        per_example: the ``torchbp.per_example`` context opened around each backward pass
            (the quantities ``fit`` was asked for and those its rule reads), or ``None``.
        status: ``"running"``, then how it ended: ``"finished"``, ``"stopped early"``,
            ``"interrupted"`` (SIGINT/SIGTERM) or ``"failed"`` (an exception), as
            ``torchbp_train_end`` sees it.
        stop_reason: why an early stop happened, for the console (else ``""``).
    """

    model: torch.nn.Module
    rule: torch.optim.Optimizer
    cost: Cost
    config: dict[str, Any]
    directory: Path | None
    device: torch.device
    epochs: int
    steps_per_epoch: int
    start_epoch: int = 0
    verbose: bool = True
    rank: int = 0
    world_size: int = 1
    state: dict[str, Any] = field(default_factory=dict)
    per_example: PerExample | None = None
    status: str = "running"
    stop_reason: str = ""


def _batches(
    data: TrainData, batch_size: int, seed: int, epoch: int, rank: int = 0, world: int = 1
) -> Iterator[tuple[Tensor, Tensor]]:
    """The epoch's mini-batches; their order depends only on (seed, epoch), so a resumed run repeats it.

    With several processes each takes every ``world``-th example of the epoch's order (its shard;
    the remainder is dropped so that all shards take the same number of steps).
    """
    if isinstance(data, DataLoader):
        yield from data
        return
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    if isinstance(data, TensorDataset) and len(data.tensors) == 2:
        data = (data.tensors[0], data.tensors[1])
    size = len(data[0]) if isinstance(data, tuple) else len(data)  # type: ignore[arg-type]
    order = torch.randperm(size, generator=generator)
    if world > 1:
        order = order[: size - size % world][rank::world]
    if isinstance(data, tuple):
        yield from zip(data[0][order].split(batch_size), data[1][order].split(batch_size))
        return
    yield from DataLoader(Subset(data, order.tolist()), batch_size=batch_size)


def _in_order(data: TrainData, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
    """The data in its own order, in batches (for evaluation)."""
    if isinstance(data, tuple):
        for start in range(0, len(data[0]), batch_size):
            yield data[0][start : start + batch_size], data[1][start : start + batch_size]
        return
    yield from data if isinstance(data, DataLoader) else DataLoader(data, batch_size=batch_size)


def _steps_per_epoch(data: TrainData, batch_size: int, world: int = 1) -> int:
    if isinstance(data, DataLoader):
        return len(data)
    size = len(data[0]) if isinstance(data, tuple) else len(data)  # type: ignore[arg-type]
    return -(-(size // world) // batch_size)


def _process_group(device: torch.device) -> tuple[int, int, bool]:
    """(rank, world size, whether this call started the group): under torchrun, join the others."""
    if not dist.is_available():
        return 0, 1, False
    started = False
    if not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        started = True
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), started
    return 0, 1, False


def _average_gradients(model: torch.nn.Module, world: int) -> None:
    """What DistributedDataParallel does for the autograd path: ∂C/∂θ averaged over the processes."""
    for parameter in model.parameters():
        if parameter.grad is not None:
            dist.all_reduce(parameter.grad)
            parameter.grad /= world


def _check_train_data(name: str, data: Any) -> None:
    if isinstance(data, tuple):
        if len(data) != 2 or not all(isinstance(t, Tensor) for t in data):
            raise TypeError(f"{name}: expected an (inputs, targets) pair of tensors, a Dataset or a DataLoader")
        if len(data[0]) != len(data[1]):
            raise ValueError(f"{name}: inputs have {len(data[0])} rows but targets have {len(data[1])}")
    elif not isinstance(data, Dataset | DataLoader):
        raise TypeError(
            f"{name}: expected an (inputs, targets) pair of tensors, a Dataset or a DataLoader, "
            f"got {type(data).__name__}"
        )


def targets_for(cost: Cost, targets: Tensor, classes: int, dtype: torch.dtype) -> Tensor:
    """Targets in the form the cost takes, for outputs of ``dtype``: floating-point targets in that
    dtype (as ``Cost`` casts them; the graph-free step has no such cast),
    integer class targets one-hot encoded (``classes`` wide) for costs that compare outputs with
    vectors, and as they are for costs that take class indices."""
    if targets.is_floating_point():
        return targets.to(dtype)
    if cost.spec.class_targets:
        return targets
    return torch.nn.functional.one_hot(targets.long(), classes).to(dtype)


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, cost: Cost, data: TrainData, device: torch.device, batch_size: int = 1024
) -> dict[str, float]:
    """The mean cost over ``data`` and, for integer class targets, the accuracy (argmax)."""
    was_training = model.training
    model.eval()
    total, correct, count = 0.0, 0, 0
    for inputs, targets in _in_order(data, batch_size):
        inputs, targets = inputs.to(device), targets.to(device)
        output, targets = per_position(model(inputs), targets)
        total += cost(output, targets_for(cost, targets, output.shape[-1], output.dtype)).item() * len(output)
        if not targets.is_floating_point():
            correct += int((output.argmax(-1) == targets).sum())
        count += len(output)
    model.train(was_training)
    metrics = {"loss": total / count}
    if not targets.is_floating_point():
        metrics["accuracy"] = correct / count
    return metrics


def per_position(output: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Sequence outputs ``(N, T, C)`` with class-index targets ``(N, T)`` as ``N·T`` examples
    (``(N·T, C)`` and ``(N·T,)``): each position is scored as one example. Others as they are."""
    if output.dim() > 2 and not targets.is_floating_point() and targets.shape == output.shape[:-1]:
        return output.reshape(-1, output.shape[-1]), targets.reshape(-1)
    return output, targets


def _encoded(model: torch.nn.Module, cost: Cost, inputs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Tensor data with its targets put in the cost's form once, as ``targets_for`` would per batch."""
    if (cost.spec.class_targets and not targets.is_floating_point()) or len(inputs) == 0:
        return inputs, targets
    was_training = model.training
    model.eval()
    with torch.no_grad():
        output = model(inputs[:1])
    model.train(was_training)
    return inputs, targets_for(cost, targets, output.shape[-1], output.dtype)


def threads_for(model: MLP, batch_size: int, device: torch.device) -> int | None:
    """One intra-op thread for a CPU ``MLP`` whose every layer is small, else ``None`` (torch's own).

    Below some 2²¹ multiply–adds per product (batch × in × out) a matrix product, split over
    threads, spends more waking and joining them than it saves (about twice as long as on one
    thread for 64-30-10 at batch 10, on a 2-core machine); beyond some 2²² threads win.
    """
    if device.type != "cpu":
        return None
    largest = max(batch_size * n_in * n_out for n_in, n_out in zip(model.sizes[:-1], model.sizes[1:]))
    return 1 if largest < 2**21 else None


@contextmanager
def intra_op_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op thread count set to ``threads`` inside the block (``None``: left alone)."""
    if threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class _EpochCost:
    """Σₖ Cₖ over an epoch's examples, each at the weights of its own step, from the batches' outputs.

    The cost's value is not needed for a step (the gradients need ∇ₐC only), so it is computed
    here once for many batches together: outputs are kept until some 2²⁰ elements are waiting.
    A sum that is not finite is traced back to the first step whose cost was not
    (``NonFiniteCost``).
    """

    def __init__(self, cost: Cost) -> None:
        self.cost = cost
        self.outputs: list[Tensor] = []
        self.targets: list[Tensor] = []
        self.steps: list[int] = []
        self.waiting = 0
        self.sums: list[Tensor] = []
        self.count = 0

    def add(self, output: Tensor, targets: Tensor, step: int) -> None:
        self.outputs.append(output.detach())
        self.targets.append(targets)
        self.steps.append(step)
        self.waiting += output.numel()
        if self.waiting >= 2**20:
            self.reduce()

    def reduce(self) -> None:
        if not self.outputs:
            return
        output, targets = torch.cat(self.outputs), torch.cat(self.targets)
        with torch.no_grad():
            total = self.cost(output, targets).to(torch.float64) * output.shape[0]
            if not bool(torch.isfinite(total)):
                costs = [self.cost.mean(a, y) for a, y in zip(self.outputs, self.targets)]
                index = first_non_finite(costs)
                if index is not None:
                    raise NonFiniteCost(self.steps[index], costs[index].item())
        self.sums.append(total)
        self.count += output.shape[0]
        self.outputs, self.targets, self.steps, self.waiting = [], [], [], 0

    def total(self, device: torch.device) -> tuple[Tensor, int]:
        """(Σₖ Cₖ, the number of examples)."""
        self.reduce()
        if not self.sums:
            return torch.zeros((), device=device, dtype=torch.float64), 0
        return torch.stack(self.sums).sum(), self.count


def _train_epoch(
    run: Run,
    network: torch.nn.Module,
    graph_free_step: GraphFreeStep | None,
    data: TrainData,
    batch_size: int,
    seed: int,
    epoch: int,
    stop: StopRequest,
    skip_nonfinite: bool = False,
) -> tuple[Tensor, int]:
    """One pass over ``data``, stepping ``run.rule`` after each batch; returns (Σₖ Cₖ, n) over the epoch.

    Tensor data is already on the device with its targets encoded; other data is moved per batch.
    A graph-free step computes its batch's cost only while a step listener takes ``loss`` (or
    ``skip_nonfinite`` asks for it). A cost (or, on the graph-free path without one, an output)
    that is not finite raises ``DivergenceError`` naming its step before that step's update, or,
    with ``skip_nonfinite``, that step is not taken (a warning counts such steps).
    A stop request (SIGINT, SIGTERM) raises ``TrainingInterrupted`` after the step it came in.
    Under ``torch.autocast`` every step sees the updated weights (the cache of casts is cleared).
    """
    try:
        return _epoch_steps(run, network, graph_free_step, data, batch_size, seed, epoch, stop, skip_nonfinite)
    except NonFiniteCost as found:
        last = epoch if run.directory is not None and epoch > 0 else None
        raise DivergenceError(
            epoch + 1,
            found.step + 1,
            run.steps_per_epoch,
            found.value,
            float(run.rule.param_groups[0]["lr"]),
            run.directory,
            last,
        ) from None


def _epoch_steps(
    run: Run,
    network: torch.nn.Module,
    graph_free_step: GraphFreeStep | None,
    data: TrainData,
    batch_size: int,
    seed: int,
    epoch: int,
    stop: StopRequest,
    skip_nonfinite: bool,
) -> tuple[Tensor, int]:
    model, rule, cost, device = run.model, run.rule, run.cost, run.device
    on_device = isinstance(data, tuple)
    hooks = get_plugin_manager().hook
    step_end = hooks.torchbp_step_end
    wants_loss = any("loss" in listener.argnames for listener in step_end.get_hookimpls())
    report_step = reporting_plugin(step_end)
    before_update = hooks.torchbp_before_update if hooks.torchbp_before_update.get_hookimpls() else None
    tapped = run.per_example if run.per_example is not None else nullcontext()  # per-example rows of each backward
    autocast = any_autocast()
    model.train()
    if graph_free_step is not None:
        # tensor data: every row's targets were checked in the first epoch
        graph_free_step.check_targets = not (on_device and epoch > run.start_epoch)
    epoch_cost = _EpochCost(cost)
    loss: Tensor | None = None
    skipped = 0
    with torch.set_grad_enabled(graph_free_step is None):
        for step, (inputs, targets) in enumerate(_batches(data, batch_size, seed, epoch, run.rank, run.world_size)):
            output: Tensor | None = None
            if not on_device:
                inputs, targets = inputs.to(device), targets.to(device)
            try:
                if graph_free_step is not None:
                    if not on_device:
                        targets = targets_for(cost, targets, cast(MLP, model).sizes[-1], inputs.dtype)
                    # sets every .grad afresh: no zero_grad needed
                    with tapped:
                        output = graph_free_step(inputs, targets)
                    if wants_loss or skip_nonfinite:
                        loss = cost.mean(output, targets)
                    if run.world_size > 1:
                        _average_gradients(model, run.world_size)
                else:
                    rule.zero_grad(set_to_none=True)
                    output, targets = per_position(network(inputs), targets)
                    targets = targets_for(cost, targets, output.shape[-1], output.dtype)
                    loss = cost(output, targets)
                    with tapped:
                        loss.backward()
                    loss = loss.detach()
            except ValueError:
                # a cost's own check (probabilities in [0, 1], …) fails on NaN outputs: that is divergence
                if output is None or bool(torch.isfinite(output.detach()).all()):
                    raise
                if not skip_nonfinite:
                    raise NonFiniteCost(step, float("nan")) from None
                loss = torch.tensor(float("nan"))
            if skip_nonfinite and loss is not None and not bool(torch.isfinite(loss)):
                rule.zero_grad(set_to_none=True)
                skipped += 1
                continue
            # divergence stops the run at its step, before its update: no step follows a non-finite cost
            if loss is not None and not bool(torch.isfinite(loss)):
                raise NonFiniteCost(step, loss.item())
            if loss is None and not bool(torch.isfinite(cast(Tensor, output)).all()):
                raise NonFiniteCost(step, float("nan"))
            if before_update is not None:
                before_update(run=run, epoch=epoch, step=step, inputs=inputs, targets=targets)
            rule.step()
            if autocast:
                # autocast keeps its casts of the parameters until its block ends: drop them, now stale
                torch.clear_autocast_cache()
            epoch_cost.add(cast(Tensor, output), targets, step)
            report_step(run=run, epoch=epoch, step=step, loss=loss)
            stop.check()
    if skipped:
        if skipped == run.steps_per_epoch:
            raise NonFiniteCost(0, float("nan"))
        warnings.warn(
            f"epoch {epoch + 1}: skipped {skipped} of {run.steps_per_epoch} steps whose cost was not finite "
            "(skip_nonfinite=True); the epoch's loss is over the other steps",
            RuntimeWarning,
            stacklevel=4,
        )
    return epoch_cost.total(device)


def _check_rule_keywords(rule: str, rule_options: dict[str, Any]) -> None:
    """Keywords that are neither fit's nor the rule's are fit's error, as Python reports them."""
    spec = lookup("rule", rule).spec
    assert isinstance(spec, RuleSpec)
    accepted = rule_hyperparameters(spec)
    unknown = sorted(set(rule_options) - set(accepted))
    if unknown:
        own = [name for name in inspect.signature(fit).parameters if name != "rule_options"]
        raise TypeError(
            f"fit() got unexpected keyword argument(s) {', '.join(unknown)}: neither an argument of fit "
            f"({', '.join(own[2:])}) nor a hyperparameter of rule {rule!r} ({', '.join(accepted)})"
        )


def _restore(directory: Path, checkpoint: dict[str, Any], model: torch.nn.Module, rule: torch.optim.Optimizer) -> None:
    """The model's and the rule's state from ``checkpoint``; one of another architecture is a clear error."""
    try:
        model.load_state_dict(checkpoint["model"])
        rule.load_state_dict(checkpoint["rule"])
    except (RuntimeError, ValueError, KeyError) as error:
        saved = {key: tuple(value.shape) for key, value in checkpoint["model"].items()}
        own = {key: tuple(value.shape) for key, value in model.state_dict().items()}
        differences = [
            f"{key}: saved {saved.get(key, 'absent')}, model {own.get(key, 'absent')}"
            for key in sorted(saved.keys() | own.keys())
            if saved.get(key) != own.get(key)
        ]
        found = "; ".join(differences[:4]) + (" …" if len(differences) > 4 else "")
        raise CheckpointError(
            f"--resume {directory}: the checkpoint is of another model than this one "
            f"({found or str(error).splitlines()[0]}); resume with the model the run was trained with "
            f"(its {CONFIG} records it)"
        ) from None


_DEVICES = "'cpu', 'cuda', 'cuda:N', 'mps', 'auto' or a torch.device"


def _device(device: str | torch.device | None, model: torch.nn.Module) -> torch.device:
    if device is None:
        parameter = next(model.parameters(), None)
        return parameter.device if parameter is not None else torch.device("cpu")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, str | torch.device):
        raise TypeError(f"device: expected {_DEVICES}, got {device!r} ({type(device).__name__})")
    try:
        device = torch.device(device)
    except RuntimeError:
        raise ValueError(f"device: expected {_DEVICES}, got {device!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: 'cuda' was asked for, but torch sees no CUDA device; use 'cpu' or 'auto'")
    return device


def fit(
    model: torch.nn.Module,
    train_data: TrainData,
    *,
    cost: str = "quadratic",
    rule: str = "sgd",
    lr: float = 3.0,
    epochs: int = 30,
    batch_size: int = 10,
    val_data: TrainData | None = None,
    logdir: str | Path | None = None,
    name: str = "torchbp-run",
    seed: int | None = None,
    device: str | torch.device | None = None,
    resume: str | Path | None = None,
    cost_options: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    verbose: bool = True,
    graph_free: bool | None = None,
    threads: int | None = None,
    skip_nonfinite: bool = False,
    feedback: str | None = None,
    feedback_options: dict[str, Any] | None = None,
    alignment_every: int = 100,
    per_example: Sequence[str] = (),
    callbacks: Sequence[object] = (),
    scheduler: SchedulerFactory | None = None,
    patience: int | None = None,
    monitor: str = "val_loss",
    restore_best: bool = False,
    **rule_options: Any,
) -> list[dict[str, float]]:
    """Train ``model`` on ``train_data`` with a registered cost and update rule.

    Args:
        model: any ``nn.Module`` mapping inputs ``(n, *)`` to outputs ``(n, k)``, or to sequence
            outputs ``(n, T, k)`` for class targets ``(n, T)``, each position scored as an example.
        train_data: an ``(inputs, targets)`` pair of tensors, a ``Dataset`` or a ``DataLoader``.
            Integer class targets are one-hot encoded for costs that need vectors (quadratic, mse…).
        cost: a registered cost (see ``torchbp plugins``), built with ``cost_options``.
        rule: a registered update rule, built with ``lr`` and ``**rule_options``.
        lr: the update rule's learning rate.
        epochs: passes over the training data.
        batch_size: examples per step.
        val_data: evaluated after every epoch (loss, and accuracy for class targets).
        logdir: where run directories go (``logdir/name/version_N``: TensorBoard events,
            ``config.toml``, ``checkpoint.pt``); ``None`` logs and saves nothing.
        seed: seeds the shuffling and torch's RNG; ``None`` draws one (recorded in the config).
        device: ``"cpu"``, ``"cuda"``, ``"auto"``, or ``None`` for the model's own device.
        resume: a run directory to continue from its last checkpoint, with its own settings:
            only ``epochs`` and ``device`` may change; a cost, rule, ``lr``, ``batch_size``,
            ``seed``, ``name``, ``patience``, ``monitor`` or ``restore_best`` other than the run's
            is an error (one left at its default takes the run's value), and so is a
            ``scheduler`` the run did not have, or the lack of the one it had.
            Under ``torchrun`` every process trains on its shard of each epoch (gradients
            averaged across processes, as DistributedDataParallel does) and process 0 alone
            prints, logs and writes checkpoints.
        config: extra settings recorded in ``config.toml`` (the command line passes its own).
        name: the run's name, the middle part of ``logdir/name/version_N``: one directory level
            (no path separators, not ``..``). The default, ``torchbp-run``, cannot be imported,
            so a run directory in the working directory never shadows a Python package.
        cost_options: keyword options of the cost.
        rule_options: hyperparameters of the update rule besides ``lr``.
        feedback: a registered feedback rule (``torchbp plugins --kind feedback``) put into the
            model's layers (``torchbp.nn.convert``), built with ``feedback_options``; its B
            seed is the run's ``seed`` unless the options give one. ``None`` keeps the model's own
            (backprop unless it was given one), or, on ``resume``, the run's. Recorded in
            ``config.toml``; B is in checkpoints, so a resumed run is the unbroken one.
        feedback_options: the feedback rule's options, e.g. ``{"scale": 0.5}``.
        alignment_every: with a feedback rule other than backprop and a run directory, every this
            many steps TensorBoard gets the angle between each layer's gradient under the rule
            and the true backprop gradient on the same batch (0: never).
        verbose: print a progress bar and a summary line per epoch.
        graph_free: train a torchbp ``MLP`` without an autograd graph (the same numbers, faster);
            ``None`` does so whenever the model allows it (no module hooks on it or its layers
            once the ``torchbp_train_start`` hooks have run), ``False`` always goes through autograd.
        threads: torch's intra-op threads while training (restored afterwards). ``None`` keeps
            torch's setting, except for a torchbp ``MLP`` whose every layer is small (batch ×
            in × out < 2²¹) on the CPU: that trains on one thread, because handing such small
            products to other threads costs more than the arithmetic (see ``threads_for``).
        skip_nonfinite: skip the steps whose cost is NaN or ±inf (their gradients are dropped and
            a warning counts them) instead of stopping. Off by default: a cost that stops being
            finite raises ``DivergenceError`` naming the epoch
            and step, and the last finite checkpoint stays as it was.
        per_example: quantities of ``torchbp.per_example`` to compute in every step, besides
            those the rule reads (``dp_sgd``: ``"grad"`` and ``"norm"``); with ``"norm"`` and a
            ``logdir``, TensorBoard shows each layer's per-example gradient norms (``per_example_norm/…``).
        callbacks: objects with training hooks (``torchbp_train_start``, ``torchbp_step_end``,
            ``torchbp_epoch_end``, ``torchbp_train_end``, marked with ``torchbp.hookimpl``),
            registered for this call only.
        scheduler: ``lambda rule: <a torch.optim.lr_scheduler scheduler on rule>``, stepped after
            every epoch (``ReduceLROnPlateau`` with the validation loss, else the training loss);
            its state is checkpointed and restored on resume.
        patience: stop once ``monitor`` has not improved for this many epochs (``None``: never).
        monitor: what early stopping watches: ``"val_loss"``, ``"val_accuracy"`` or ``"train_loss"``.
        restore_best: with ``patience``, load the best epoch's weights into ``model`` at the end.

    Returns:
        One dict per epoch: ``epoch``, ``train_loss``, ``lr`` (the rate the epoch trained with),
        ``seconds`` and, with validation data, ``val_loss`` and ``val_accuracy``.

    Raises:
        TypeError, ValueError: an argument of the wrong type or out of range, named; non-finite
            numbers in tensor data, with their index; an unknown keyword (neither ``fit``'s nor
            the rule's).
        DivergenceError: the cost became NaN or ±inf (see ``skip_nonfinite``).
        CheckpointError: ``resume`` is not a run of this model, or a checkpoint cannot be written.
        PluginError: a training hook (a logger, a callback) raised; the plugin is named.
        TrainingInterrupted: SIGINT (Ctrl-C) or SIGTERM stopped the run at a step boundary, after
            the ``torchbp_train_end`` hooks ran; it names the last checkpointed epoch. Any other
            exception during training also runs ``torchbp_train_end`` (with ``run.status``
            ``"failed"``) before it propagates.

    Examples:
        >>> x, y = torch.rand(40, 2), torch.randint(0, 2, (40,))
        >>> steps = lambda rule: torch.optim.lr_scheduler.StepLR(rule, step_size=1, gamma=0.5)
        >>> history = fit(MLP([2, 3, 2]), (x, y), epochs=3, lr=1.0, scheduler=steps, verbose=False)
        >>> [h["lr"] for h in history]
        [1.0, 0.5, 0.25]
    """
    check_fit_arguments(
        lr=lr,
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        threads=threads,
        cost=cost,
        rule=rule,
        logdir=logdir,
        resume=resume,
        name=name,
        cost_options=cost_options,
        config=config,
        verbose=verbose,
        graph_free=graph_free,
    )
    _check_rule_keywords(rule, rule_options)
    _check_train_data("train_data", train_data)
    check_finite_data("train_data", train_data)
    if val_data is not None:
        _check_train_data("val_data", val_data)
        check_finite_data("val_data", val_data)
    check_callbacks(callbacks)  # a bad callback is an error before any run directory is made
    if isinstance(alignment_every, bool) or not isinstance(alignment_every, int) or alignment_every < 0:
        raise ValueError(f"alignment_every: expected a non-negative int, got {alignment_every!r}")
    checkpoint = load_checkpoint(Path(resume)) if resume is not None else None
    if checkpoint is not None and feedback is None:  # a resumed run keeps its feedback rule
        feedback = checkpoint["config"].get("feedback")
        feedback_options = checkpoint["config"].get("feedback_options")
    settings = {
        **(config or {}),
        "cost": cost,
        "cost_options": cost_options_for(cost, dict(cost_options or {})),
        "rule": rule,
        "rule_options": rule_options_for(rule, rule_options),
        "lr": lr,
        "epochs": epochs,
        "batch_size": batch_size,
        "seed": seed,
        "name": name,
        "patience": patience or 0,
        "monitor": monitor,
        "restore_best": restore_best,
    }
    if per_example:
        settings["per_example"] = list(per_example)
    if checkpoint is not None:
        settings = resumed_settings(checkpoint, settings, scheduler is not None)
    elif settings["seed"] is None:
        settings["seed"] = random.SystemRandom().randrange(2**31)
    seed, batch_size = int(settings["seed"]), int(settings["batch_size"])
    if checkpoint is None and settings["restore_best"] and not settings["patience"]:
        # a new run only: one saved so by an earlier version resumes as it was saved, restoring nothing
        raise ValueError(
            "restore_best: the best epoch's weights are kept by early stopping; give patience too (--patience N), "
            f"got patience {patience!r}"
        )
    stopping = None
    if settings["patience"]:
        stopping = EarlyStopping(settings["patience"], settings["monitor"], settings["restore_best"])
        stopping.check_monitor(val_data is not None)
    device = _device(device, model)
    model.to(device)
    rank, world, started_group = _process_group(device)
    verbose = verbose and rank == 0
    if graph_free and not supports(model):
        raise ValueError("graph_free=True needs a torchbp.nn.MLP without module hooks; got " + type(model).__name__)
    if threads is None and isinstance(model, MLP):
        threads = threads_for(model, batch_size, device)
    if feedback is not None:
        feedback_options = parsed_feedback_options(feedback, {"seed": seed, **(feedback_options or {})})
        attach(model, feedback, **feedback_options)
    else:
        rule_in_model = feedback_of(model)
        feedback = rule_in_model.name if rule_in_model is not None else "backprop"
    settings.update(feedback=feedback, feedback_options=dict(feedback_options or {}), alignment_every=alignment_every)
    cost_module = get_cost(settings["cost"], **settings["cost_options"])
    update_rule = create_rule(settings["rule"], model, lr=settings["lr"], **settings["rule_options"])
    warn_if_probabilities_into_logit_cost(model, settings["cost"])
    lr_scheduler = make_scheduler(scheduler, update_rule) if scheduler is not None else None
    quantities = tuple(dict.fromkeys((*getattr(update_rule, "per_example", ()), *per_example)))
    recording = PerExample(model, *quantities) if quantities else None
    if isinstance(train_data, tuple):
        train_data = _encoded(model, cost_module, train_data[0].to(device), train_data[1].to(device))
    history: list[dict[str, float]] = []
    start_epoch = 0
    saved_epoch: int | None = None  # the last epoch (from 1) in the run's checkpoint
    if checkpoint is not None:
        _restore(Path(cast(Path, resume)), checkpoint, model, update_rule)
        remove_stale_temporaries(Path(cast(Path, resume)))
        if lr_scheduler is not None:
            check_scheduler(checkpoint, lr_scheduler)
            lr_scheduler.load_state_dict(checkpoint["scheduler"]["state"])
        if stopping is not None and "stopping" in checkpoint:
            stopping.load_state_dict(checkpoint["stopping"])
        torch.set_rng_state(checkpoint["rng"])
        history = list(checkpoint["history"])
        start_epoch = saved_epoch = int(checkpoint["epoch"]) + 1
        directory: Path | None = Path(resume) if rank == 0 else None  # type: ignore[arg-type]
    else:
        torch.manual_seed(seed)
        directory = new_run_directory(logdir, name) if logdir is not None and rank == 0 else None
    if directory is not None:
        (directory / CONFIG).write_text(dump_config(settings))
    run = Run(
        model,
        update_rule,
        cost_module,
        settings,
        directory,
        device,
        epochs,
        _steps_per_epoch(train_data, batch_size, world),
        start_epoch,
        verbose,
        rank,
        world,
        per_example=recording,
    )
    hooks = get_plugin_manager().hook
    with registered(callbacks), stop_requests() as stop, closed_on_failure(run, history, fresh=checkpoint is None):
        try:
            reporting_plugin(hooks.torchbp_train_start)(run=run)
            # chosen now: a train_start hook may have put module hooks on the model, which must fire
            use_graph_free = supports(model) if graph_free is None else graph_free
            if use_graph_free and not supports(model):
                raise ValueError(
                    "graph_free=True: a torchbp_train_start hook put module hooks on the model, which the "
                    "graph-free step never calls; pass graph_free=None to train through autograd instead"
                )
            network = DistributedDataParallel(model) if world > 1 and not use_graph_free else model
            graph_free_step = GraphFreeStep(cast(MLP, model), cost_module) if use_graph_free else None
            for epoch in range(start_epoch, epochs):
                stop.check()
                started = time.perf_counter()
                rate = float(update_rule.param_groups[0]["lr"])
                with intra_op_threads(threads):
                    total, count = _train_epoch(
                        run, network, graph_free_step, train_data, batch_size, seed, epoch, stop, skip_nonfinite
                    )
                if world > 1:
                    totals = torch.stack([total, torch.tensor(float(count), dtype=total.dtype, device=device)])
                    dist.all_reduce(totals)
                    total, count = totals[0], int(totals[1].item())
                metrics: dict[str, float] = {
                    "epoch": epoch + 1,
                    "train_loss": total.item() / max(count, 1),
                    "lr": rate,
                }
                if val_data is not None:
                    metrics.update({f"val_{k}": v for k, v in evaluate(model, cost_module, val_data, device).items()})
                if lr_scheduler is not None:
                    step_scheduler(lr_scheduler, metrics)
                stop_early = stopping is not None and stopping.update(metrics, model)
                metrics["seconds"] = time.perf_counter() - started
                history.append(metrics)
                if directory is not None:
                    payload = {
                        "epoch": epoch,
                        "model": model.state_dict(),
                        "rule": update_rule.state_dict(),
                        "history": history,
                        "rng": torch.get_rng_state(),
                        "config": settings,
                    }
                    if lr_scheduler is not None:
                        payload["scheduler"] = {"name": type(lr_scheduler).__name__, "state": lr_scheduler.state_dict()}
                    if stopping is not None:
                        payload["stopping"] = stopping.state_dict()
                    save_checkpoint(directory, payload)
                    saved_epoch = epoch + 1
                reporting_plugin(hooks.torchbp_epoch_end)(run=run, epoch=epoch, metrics=metrics)
                if stop_early:
                    assert stopping is not None
                    run.status, run.stop_reason = "stopped early", stopping.reason()
                    break
            if stopping is not None:
                stopping.restore(model)
            if run.status == "running":
                run.status = "finished"
        except KeyboardInterrupt as error:
            run.status = "interrupted"
            hooks.torchbp_train_end(run=run, history=history)
            if isinstance(error, TrainingInterrupted):
                raise TrainingInterrupted(error.signal_number, directory, saved_epoch) from None
            raise
        reporting_plugin(hooks.torchbp_train_end)(run=run, history=history)
    if started_group:
        dist.barrier()  # every process done (and process 0's files written) before any leaves
        dist.destroy_process_group()
    return history
