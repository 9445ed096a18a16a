"""A feedback rule put into a model: each layer's B (buffer ``feedback_weight``) and its use.

``attach`` (what ``convert(model, feedback=…)`` and ``MLP(…, feedback=…)`` call) gives each
layer with a weight (``Linear``, ``Dense``, ``Conv1d``, ``Conv2d``, the layers of an ``MLP``) a
``LayerFeedback``, numbered in ``model.modules()`` order. At each forward pass that records
a graph, the layer asks it for this batch's B and runs its equations wrapped in
``WithFeedback`` (or hands the Bˡ to the fused MLP node); without a
graph (evaluation, ``no_grad``) the layers run exactly as without a rule.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..derivatives.base import Derivatives
from ..derivatives.dense import StackFeedback
from ..feedback.base import FeedbackRule, OutputError
from ..feedback.layer_equations import WithFeedback
from .link import Linked

_MIX = 1_000_003  # mixes the seed, the layer's number and a batch count into one generator seed


class LayerFeedback:
    """One layer's part in a model's feedback rule.

    Attributes:
        rule: the model's rule (shared by its layers).
        module: the layer; its B is ``module.feedback_weight``.
        index: the layer's number among the model's layers with feedback (seeds its B).
        output_error: where a direct rule reads e; ``None`` for the others.
        outputs: a direct rule's number of network outputs.
    """

    def __init__(
        self, rule: FeedbackRule, module: Any, index: int, output_error: OutputError | None, outputs: int
    ) -> None:
        self.rule, self.module, self.index = rule, module, index
        self.output_error, self.outputs = output_error, outputs
        self.learns = type(rule).learn is not FeedbackRule.learn
        self.derives = type(rule).matrix is not FeedbackRule.matrix
        self.pending = False
        """Whether a backward pass that reads the stored B is still to run (an in-place rule then
        writes this batch's B into a copy, not over the B that backward pass reads)."""
        self.stale = False
        """Whether the stored B is out of date: the rule derives B each batch, and the layer's last
        forward pass ran no BP2 (its input took no gradient), so it derived none."""

    def generator(self, device: torch.device, draws: int = 0) -> torch.Generator:
        """The layer's own random stream: seeded from (seed, layer, draws), nothing else."""
        seed = ((self.rule.seed * _MIX + self.index) * _MIX + draws) % (2**63)
        return torch.Generator(device=device).manual_seed(seed)

    def shape(self, x: Tensor | None) -> tuple[int, ...] | None:
        """B's shape: W's, or ``(outputs, values per example of x)`` for a direct rule (``None``
        while x is not known and the layer's inputs cannot be read off it)."""
        weight = _weight(self.module)
        if not self.rule.direct:
            return tuple(weight.shape)
        if weight.dim() == 2:  # linear and dense layers: inputs are (*, in_features)
            return self.outputs, weight.shape[1]
        if x is None:
            return None
        per_example = x[0].numel() if x.dim() == weight.dim() else x.numel()
        return self.outputs, per_example

    def create(self, x: Tensor | None = None) -> None:
        """Register (or fill in) the layer's buffers: B drawn by the rule, the rule's own state
        (drawn next from the same stream) and a batch count, where the rule has them."""
        module, weight = self.module, _weight(self.module).detach()
        shape = self.shape(x)
        generator = self.generator(weight.device)
        matrix = (
            torch.empty(0, dtype=weight.dtype, device=weight.device)
            if shape is None
            else self.rule.initial(weight, shape, generator)
        )
        module.register_buffer("feedback_weight", matrix)
        state = self.rule.state(weight, generator)
        if state is not None and "feedback_state" not in module._buffers:
            module.register_buffer("feedback_state", state)
        if self.rule.redraws and "feedback_draws" not in module._buffers:
            module.register_buffer("feedback_draws", torch.zeros((), dtype=torch.int64, device=weight.device))

    def matrix(self, x: Tensor, used: bool = True) -> Tensor:
        """This batch's B (drawn, derived or as stored, as the rule says), kept in ``feedback_weight``.

        ``used=False`` says the layer's BP2 will not run (its input takes no gradient): the stored
        B is returned as it is, and a rule that derives B each batch skips the pass (so
        ``feedback_weight`` keeps the last B a backward pass used)."""
        buffers = self.module._buffers
        matrix = self.stored(x)
        if self.derives:
            self.stale = not used  # B is not derived for a layer whose BP2 does not run
        if not self.derives or not used:
            return matrix
        draws = 0
        if self.rule.redraws:
            count = buffers["feedback_draws"]
            assert count is not None
            draws = int(count)
            count.add_(1)
        weight = _weight(self.module).detach()
        if self.rule.in_place and self.pending:
            matrix = matrix.clone()  # the stored B is still to be read by a backward pass
        generator = self.generator(weight.device, draws + 1)  # draw 0 made B's start
        matrix = self.rule.matrix(weight, matrix, generator, **self.state())
        buffers["feedback_weight"] = matrix
        self.pending = True
        return matrix

    def stored(self, x: Tensor) -> Tensor:
        """``feedback_weight`` as it is, drawn first where it waits for the first input (a direct
        rule's B for a convolution)."""
        matrix = self.module._buffers["feedback_weight"]
        assert matrix is not None
        if matrix.numel() == 0:
            self.create(x)
            matrix = self.module._buffers["feedback_weight"]
            assert matrix is not None
        return matrix

    def state(self) -> dict[str, Tensor]:
        """``{"state": the rule's own state}`` for a rule that keeps one, else ``{}``."""
        state = self.module._buffers.get("feedback_state")
        return {} if state is None else {"state": state}

    def check(self, x: Tensor, matrix: Tensor) -> None:
        """A direct rule's B must fit x: ``(outputs, values per example)``."""
        expected = self.shape(x)
        if expected is not None and tuple(matrix.shape) != expected:
            raise ValueError(
                f"feedback {self.rule.name or type(self.rule).__name__!r}: {type(self.module).__name__} has B of shape "
                f"{tuple(matrix.shape)} but an input of shape {tuple(x.shape)} needs {expected}; direct rules draw B "
                "for the input size of the first batch"
            )

    def learn(self, grad_weight: Tensor | None) -> None:
        """After the backward pass: hand the rule this batch's ∂C/∂W (rules that learn B), and
        free the stored B to be overwritten by the next batch (rules that write it in place)."""
        self.pending = False
        if self.learns and grad_weight is not None:
            matrix = self.module._buffers["feedback_weight"]
            assert matrix is not None
            with torch.no_grad():
                self.rule.learn(matrix, _weight(self.module).detach(), grad_weight)

    def wrap(self, derivatives: Derivatives, x: Tensor) -> WithFeedback:
        """The layer's equations for input x, with BP2 through this batch's B (drawn when the
        forward pass saves, and only where BP2 runs)."""
        error = None
        if self.rule.direct:
            self.check(x, self.stored(x))
            assert self.output_error is not None
            error = self.output_error.read
        return WithFeedback(derivatives, self.matrix, tuple(x.shape), error, self.learn_or_none(), self.rule.in_place)

    def linked(self, x: Tensor, params: tuple[Tensor | None, ...]) -> Derivatives:
        """The layer's own checked equations (``Linked.linked``, remembered per input signature),
        with BP2 through this batch's B. ``attach`` puts it on the layer as the layer's ``linked``
        (an instance attribute, so that a layer without a rule pays nothing for it); callers run it
        only where a graph is recorded: a chain node's forward, inside its Function, runs without one."""
        return self.wrap(Linked.linked(self.module, x, params), x)

    def learn_or_none(self) -> Any:
        return self.learn if self.learns or self.rule.in_place else None


class FeedbackLayer(Linked):
    """Mixin of the twins a feedback rule acts in (those whose BP2 reads a weight W)."""

    _feedback: LayerFeedback | None = None

    def link_is_pure(self) -> bool:
        """``link`` gives the layer's own equations, which a rule does not change: they may be
        remembered (``LayerFeedback.linked`` wraps them in this batch's B at every call)."""
        return True


def stack_feedback(layers: list[Any], x: Tensor) -> StackFeedback | None:
    """The Bˡ of a stack of dense layers for the fused node, or ``None`` when they run backprop."""
    first: LayerFeedback | None = layers[0]._feedback
    if first is None or not torch.is_grad_enabled():
        return None
    feedbacks: list[LayerFeedback] = [layer._feedback for layer in layers]
    # the first layer's BP2 runs only where x takes a gradient
    matrices = [feedback.matrix(x, used=l > 0 or x.requires_grad) for l, feedback in enumerate(feedbacks)]
    learn = None
    if first.learn_or_none() is not None:

        def learn(grad_weights: list[Tensor | None]) -> None:
            for feedback, grad_weight in zip(feedbacks, grad_weights):
                feedback.learn(grad_weight)

    error = first.output_error.read if first.output_error is not None else None
    check = None
    if first.rule.in_place:
        versions = [matrix._version for matrix in matrices]

        def check() -> None:
            if [matrix._version for matrix in matrices] != versions:
                raise RuntimeError(
                    "the feedback matrices B this backward pass reads were redrawn in place by a later forward "
                    "pass; run the backward pass (through a retained graph too) before the next forward pass"
                )

    return StackFeedback(matrices, error, first.rule.direct, learn, check)


def attach(model: torch.nn.Module, feedback: str | FeedbackRule = "backprop", **options: Any) -> FeedbackRule:
    """Put the feedback rule ``feedback`` (a registered name, with ``options``, or a rule object)
    into every layer of ``model`` with a weight, replacing any rule it had.

    Raises ``ValueError`` at once where the rule cannot act: a module whose backward reads a
    weight matrix but is not one of torchbp's (its backward stays native: an LSTM, a
    ``ConvTranspose2d``, an unconverted layer), a convolution whose padding is a layer of its own
    (``padding_mode`` other than zeros, uneven ``"same"`` padding), or, for a direct rule, a
    model whose number of outputs cannot be read off its last layer (pass ``outputs=``).

    Returns:
        the rule object the layers share.
    """
    from ..registry import get_feedback  # the plugin registry sits above the layers

    rule = get_feedback(feedback, **options) if isinstance(feedback, str) else feedback
    if not isinstance(rule, FeedbackRule):
        raise TypeError(f"feedback: expected a registered name or a FeedbackRule, got {type(rule).__name__}")
    layers: list[tuple[str, Any]] = [(name, m) for name, m in model.named_modules() if isinstance(m, FeedbackLayer)]
    if not rule.exact:
        _check_supported(model, rule)
    detach(model)
    if rule.exact:
        return rule
    output_error = None
    outputs = 0
    if rule.direct:
        outputs = _outputs(rule, layers)
        output_error = OutputError()
        model.__dict__["_output_error"] = output_error
        if not getattr(type(model), "captures_output_error", False):
            model.__dict__["_output_error_handle"] = model.register_forward_hook(_output_hook(output_error))
    for index, (_, layer) in enumerate(layers):
        layer_feedback = LayerFeedback(rule, layer, index, output_error, outputs)
        layer.__dict__["_feedback"] = layer_feedback
        layer.__dict__["linked"] = layer_feedback.linked
        layer_feedback.create()
        handle = layer._register_load_state_dict_pre_hook(_fit_loaded, with_module=True)
        layer.__dict__["_feedback_load_handle"] = handle
    return rule


def detach(model: torch.nn.Module) -> None:
    """Take any feedback rule out of ``model``: its layers run backprop and keep no B."""
    for module in model.modules():
        if "_feedback" in module.__dict__:
            del module.__dict__["_feedback"], module.__dict__["linked"]
            module.__dict__.pop("_feedback_load_handle").remove()
            module._buffers.pop("feedback_weight", None)
            module._buffers.pop("feedback_draws", None)
            module._buffers.pop("feedback_state", None)
        module.__dict__.pop("_output_error", None)
        handle = module.__dict__.pop("_output_error_handle", None)
        if handle is not None:
            handle.remove()


def feedback_of(model: torch.nn.Module) -> FeedbackRule | None:
    """The rule attached to ``model``'s layers, or ``None`` (backprop)."""
    for module in model.modules():
        feedback = module.__dict__.get("_feedback")
        if feedback is not None:
            rule: FeedbackRule = feedback.rule
            return rule
    return None


_NO_INPUT_GRADIENT = (torch.nn.Embedding, torch.nn.EmbeddingBag)
"""Modules with a weight matrix whose input (indices) takes no gradient: no δ goes below them."""


def _check_supported(model: torch.nn.Module, rule: FeedbackRule) -> None:
    refused = []
    for name, module in model.named_modules():
        weight = module._parameters.get("weight")
        if isinstance(module, FeedbackLayer):
            linkable = getattr(module, "linkable", None)
            if weight is not None and weight.dim() > 2 and linkable is not None and not linkable():
                refused.append(f"{name or '(model)'} ({type(module).__name__}: its padding is a layer of its own)")
        elif not isinstance(module, _NO_INPUT_GRADIENT) and any(
            p is not None and p.dim() >= 2 for p in module._parameters.values()
        ):
            refused.append(f"{name or '(model)'} ({type(module).__name__}: its backward is not torchbp's)")
    if refused:
        raise ValueError(
            f"feedback {rule.name or type(rule).__name__!r} cannot act in: {', '.join(refused)}. Feedback rules act in "
            "torchbp's Linear, Dense, MLP, Conv1d and Conv2d (zero padding); convert the model first, or use "
            "feedback='backprop'"
        )


def _outputs(rule: FeedbackRule, layers: list[tuple[str, Any]]) -> int:
    outputs = getattr(rule, "outputs", None)
    if outputs is not None:
        return int(outputs)
    if not layers:
        raise ValueError("feedback 'dfa': the model has no layer with a weight")
    name, last = layers[-1]
    if _weight(last).dim() != 2:
        raise ValueError(
            f"feedback {rule.name or 'dfa'!r} cannot identify the network's outputs: its last layer with a weight, "
            f"{name or '(model)'} ({type(last).__name__}), does not give a number of outputs; pass outputs=N"
        )
    return int(_weight(last).shape[0])


def _output_hook(output_error: OutputError) -> Any:
    def capture(module: torch.nn.Module, args: Any, output: Any) -> None:
        if not isinstance(output, Tensor):
            raise TypeError(
                f"a direct feedback rule (dfa) takes e from the model's output, which must be one tensor; "
                f"{type(module).__name__} returned {type(output).__name__}"
            )
        if output.requires_grad:
            output.register_hook(output_error.capture)

    return capture


def _fit_loaded(module: torch.nn.Module, state_dict: dict[str, Any], prefix: str, *_: Any) -> None:
    """A B not drawn yet (a direct rule's, for a convolution, waits for the first input) takes the
    shape of the one being loaded."""
    loaded = state_dict.get(prefix + "feedback_weight")
    own = module._buffers.get("feedback_weight")
    if loaded is not None and own is not None and own.numel() == 0:
        module._buffers["feedback_weight"] = torch.empty_like(loaded, device=own.device, dtype=own.dtype)


def _weight(module: torch.nn.Module) -> Tensor:
    weight = module._parameters["weight"]
    assert weight is not None
    return weight
