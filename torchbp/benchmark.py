"""Benchmarks: torchbp against torch.nn + torch.optim (and NumPy for small nets), side by side.

First, what a user does (layers only): a ``torch.nn`` model, its ``convert``-ed copy and, for a
plain stack of linear layers, ``torchbp.nn.MLP``, each trained with the user's own
``torch.nn.CrossEntropyLoss`` and ``torch.optim`` (SGD with momentum, Adam), eager and under
``torch.compile(model)``. Then torchbp's own paths on MLPs: the full training step (zero grads,
forward, cost, backward, update) with torchbp's cost and rule, and the graph-free step, against
native, SGD and the quadratic cost. Every case starts all contenders from the same weights on the
same data; contenders run in one process, round by round (A B C A B C …), and the report gives
medians, ratios of the medians and the median of the per-round ratios to native PyTorch. Run it
as ``torchbp bench`` or ``python scripts/bench.py``.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .nn import MLP, convert, revert
from .nn.models import lenet, small_resnet
from .registry import create_rule, get_cost
from .training.datasets import digits
from .training.graph_free import GraphFreeStep

Step = Callable[[], Any]


@dataclass(frozen=True)
class Case:
    """One network and batch: ``sizes`` widths, σ, batch size, and where the inputs come from."""

    name: str
    sizes: tuple[int, ...]
    activation: str
    batch: int
    bias: bool = True
    data: str = "random"
    numpy: bool = False
    roofline: bool = False


CASES = [
    Case("3-2-1 (seeds)", (3, 2, 1), "sigmoid", 4, bias=False, numpy=True),
    Case("64-30-10 digits b10", (64, 30, 10), "sigmoid", 10, data="digits", numpy=True),
    Case("64-30-10 digits b64", (64, 30, 10), "sigmoid", 64, data="digits", numpy=True),
    Case("784-256-256-10 sigmoid", (784, 256, 256, 10), "sigmoid", 128),
    Case("784-256-256-10 relu", (784, 256, 256, 10), "relu", 128),
    Case("1024-4096-4096-10 relu", (1024, 4096, 4096, 10), "relu", 512, roofline=True),
]
QUICK_CASES = [
    Case("3-2-1 (seeds)", (3, 2, 1), "sigmoid", 4, bias=False, numpy=True),
    Case("16-32-8 relu", (16, 32, 8), "relu", 8, numpy=True, roofline=True),
]


@dataclass(frozen=True)
class LayersOnlyCase:
    """A user's model, built from ``torch.nn`` layers, and its batch: ``input_shape`` per example.

    ``mlp`` gives ``(sizes, activation)`` when the model is a plain stack of ``Linear`` layers with
    that σ between them (logits out), so that ``torchbp.nn.MLP`` can stand in for it too; ``data``
    is ``"digits"`` for the digits' own rows and labels, else random; ``compile`` says whether the
    ``torch.compile`` rows run by default (off where the compile warm-up is long on a small CPU).
    """

    name: str
    build: Callable[[], torch.nn.Module]
    input_shape: tuple[int, ...]
    batch: int
    classes: int = 10
    mlp: tuple[tuple[int, ...], str] | None = None
    data: str = "random"
    compile: bool = True


def _mlp_case(sizes: tuple[int, ...], activation: str, batch: int, data: str = "random") -> LayersOnlyCase:
    name = f"{'-'.join(map(str, sizes))} {activation} b{batch}"
    return LayersOnlyCase(
        name, lambda: _native_mlp(sizes, activation), sizes[:1], batch, sizes[-1], (sizes, activation), data
    )


LAYERS_ONLY_CASES = [
    _mlp_case((64, 30, 10), "sigmoid", 10, "digits"),
    _mlp_case((64, 30, 10), "sigmoid", 64, "digits"),
    _mlp_case((784, 256, 256, 10), "relu", 64),
    _mlp_case((1024, 2048, 2048, 10), "relu", 128),
    LayersOnlyCase("LeNet digits b64", lambda: revert(lenet(8)), (64,), 64, data="digits", compile=False),
    LayersOnlyCase("ResNet-style 1×28×28 b32", lambda: revert(small_resnet()), (1, 28, 28), 32, compile=False),
    LayersOnlyCase(
        "Transformer encoder 2×(d128, 4 heads) seq 64 b16", lambda: EncoderClassifier(), (64, 128), 16, compile=False
    ),
]
QUICK_LAYERS_ONLY_CASES = [
    replace(_mlp_case((16, 32, 8), "relu", 8), compile=False),
    LayersOnlyCase("LeNet digits b8", lambda: revert(lenet(8)), (64,), 8, data="digits", compile=False),
]

OPTIMIZERS: dict[str, tuple[str, Callable[[Any], torch.optim.Optimizer]]] = {
    "sgd": ("SGD(lr=0.01, momentum=0.9)", lambda params: torch.optim.SGD(params, lr=0.01, momentum=0.9)),
    "adam": ("Adam(lr=1e-3)", lambda params: torch.optim.Adam(params, lr=1e-3)),
}
"""The user's ``torch.optim`` optimisers of the layers-only table: key → (label, factory)."""


class EncoderClassifier(torch.nn.Module):
    """A user's transformer classifier: a 2-layer ``torch.nn.TransformerEncoder`` (width 128, 4 heads,
    feed-forward 512, ReLU, batch first, no dropout), the mean over the sequence, and a linear head.
    Input ``(N, T, 128)``, output logits ``(N, classes)``."""

    def __init__(self, width: int = 128, heads: int = 4, layers: int = 2, classes: int = 10) -> None:
        super().__init__()
        layer = torch.nn.TransformerEncoderLayer(width, heads, 4 * width, 0.0, batch_first=True)
        self.encoder = torch.nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = torch.nn.Linear(width, classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(x).mean(1))  # type: ignore[no-any-return]


def _native_mlp(sizes: tuple[int, ...], activation: str) -> torch.nn.Sequential:
    """``Linear`` layers with σ between them (none after the last: logits), as a user writes it."""
    sigma = {"sigmoid": torch.nn.Sigmoid, "relu": torch.nn.ReLU, "tanh": torch.nn.Tanh}[activation]
    layers: list[torch.nn.Module] = []
    for n_in, n_out in itertools.pairwise(sizes):
        layers += [torch.nn.Linear(n_in, n_out), sigma()]
    return torch.nn.Sequential(*layers[:-1])


def layers_only_contenders(case: LayersOnlyCase, device: torch.device) -> dict[str, torch.nn.Module]:
    """The case's contenders, all with the same weights: ``native`` (the ``torch.nn`` model),
    ``converted`` (``convert`` of a copy) and, for a plain stack, ``mlp`` (``torchbp.nn.MLP``)."""
    torch.manual_seed(0)
    native = case.build().to(device)
    models = {"native": native, "converted": convert(copy.deepcopy(native))}
    if case.mlp is not None:
        sizes, activation = case.mlp
        mlp = MLP(list(sizes), activation, output_activation="identity").to(device)
        with torch.no_grad():
            for ours, theirs in zip(mlp.parameters(), native.parameters(), strict=True):
                ours.copy_(theirs)
        models["mlp"] = mlp
    return models


def _layers_only_batch(case: LayersOnlyCase, device: torch.device) -> tuple[Tensor, Tensor]:
    if case.data == "digits":
        data = digits()
        x, y = data.inputs[: case.batch], data.targets[: case.batch]
    else:
        generator = torch.Generator().manual_seed(0)
        x = torch.rand(case.batch, *case.input_shape, generator=generator)
        y = torch.randint(case.classes, (case.batch,), generator=generator)
    return x.reshape(case.batch, *case.input_shape).to(device), y.to(device)


Timer = Callable[[Step, int], float]
"""Times ``steps`` calls of a step; returns µs per step."""


def interleave(contenders: dict[str, Step], steps: int, repeats: int, timer: Timer) -> dict[str, list[float]]:
    """``repeats`` rounds, each timing every contender once in turn (A B C A B C …): µs per step,
    one list per contender, the i-th entry from round i."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, step in contenders.items():
            times[name].append(timer(step, steps))
    return times


def summarise(times: dict[str, list[float]], baseline: str = "native") -> dict[str, dict[str, float]]:
    """Medians of rounds' times, each contender's median over ``baseline``'s, and the median of
    the per-round ratios (each round's time over ``baseline``'s in the same round: steadier when
    the machine's speed drifts between rounds)."""
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {
        "median_us": medians,
        "ratio_of_medians": {name: medians[name] / medians[baseline] for name in medians},
        "median_round_ratio": {
            name: statistics.median(t / b for t, b in zip(values, times[baseline], strict=True))
            for name, values in times.items()
        },
    }


def run_layers_only(
    case: LayersOnlyCase,
    device: torch.device,
    repeats: int,
    target_seconds: float,
    optimizers: Sequence[str] = tuple(OPTIMIZERS),
    compile: bool = True,
    compiler: Callable[[torch.nn.Module], Callable[[Tensor], Tensor]] = torch.compile,
) -> dict[str, Any]:
    """Layers only: the native model, its ``convert``-ed copy and (for a plain stack) ``torchbp.nn.MLP``,
    each trained with the user's own ``torch.nn.CrossEntropyLoss`` and ``torch.optim`` optimiser,
    eager and (``compile``) through ``compiler(model)``. One group of timings per optimiser and mode;
    every group starts every contender from the same weights. A contender whose compiled model fails
    is left out of that group, with its error."""
    models = layers_only_contenders(case, device)
    start = {name: copy.deepcopy(model.state_dict()) for name, model in models.items()}
    x, y = _layers_only_batch(case, device)
    loss = torch.nn.CrossEntropyLoss()
    compiled: dict[str, Callable[[Tensor], Tensor] | BaseException] = {}
    groups: list[dict[str, Any]] = []

    def timer(step: Step, steps: int) -> float:
        return _time(step, steps, device)

    for mode in ("eager", "compile") if compile else ("eager",):
        if mode == "compile":
            torch.compiler.reset()  # a case's compiled graphs never meet another case's shapes or limits
        for key in optimizers:
            group: dict[str, Any] = {"optimizer": key, "mode": mode}
            contenders: dict[str, Step] = {}
            for name, model in models.items():
                model.load_state_dict(start[name])
                forward: Callable[[Tensor], Tensor] | BaseException = model
                if mode == "compile":
                    if name not in compiled:
                        began = time.perf_counter()
                        compiled[name] = _compiled(compiler, model, x, y, loss)
                        group.setdefault("compile_seconds", {})[name] = time.perf_counter() - began
                        model.load_state_dict(start[name])
                    forward = compiled[name]
                if isinstance(forward, BaseException):
                    group.setdefault("errors", {})[name] = f"{type(forward).__name__}: {forward}"
                    continue
                contenders[name] = _user_step(forward, OPTIMIZERS[key][1](model.parameters()), loss, x, y)
            if "native" not in contenders:
                groups.append(group)
                continue
            for step in contenders.values():
                step()  # warm up (and the optimiser's state made)
            steps = _steps_for(contenders["native"], device, target_seconds)
            times = interleave(contenders, steps, repeats, timer)
            group.update(steps_per_timing=steps, repeats=repeats, times_us=times, **summarise(times))
            groups.append(group)
    return {"case": case.name, "contenders": list(models), "groups": groups}


def _user_step(
    forward: Callable[[Tensor], Tensor],
    optimizer: torch.optim.Optimizer,
    loss: torch.nn.Module,
    x: Tensor,
    y: Tensor,
) -> Step:
    def step() -> None:
        optimizer.zero_grad()
        loss(forward(x), y).backward()
        optimizer.step()

    return step


def _compiled(
    compiler: Callable[[torch.nn.Module], Callable[[Tensor], Tensor]],
    model: torch.nn.Module,
    x: Tensor,
    y: Tensor,
    loss: torch.nn.Module,
) -> Callable[[Tensor], Tensor] | BaseException:
    """``compiler(model)`` after its compilation (forward and backward, run twice), or its error."""
    try:
        forward = compiler(model)
        for _ in range(2):
            loss(forward(x), y).backward()
        model.zero_grad(set_to_none=True)
        return forward
    except Exception as error:  # whatever compiling raised, the report names it
        model.zero_grad(set_to_none=True)
        return error


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _batch(case: Case, device: torch.device) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(0)
    if case.data == "digits":
        data = digits()
        x = data.inputs[: case.batch]
        y = torch.nn.functional.one_hot(data.targets[: case.batch], case.sizes[-1]).float()
    else:
        x = torch.rand(case.batch, case.sizes[0], generator=generator)
        y = torch.rand(case.batch, case.sizes[-1], generator=generator)
    return x.to(device), y.to(device)


def _native_twin(model: MLP) -> torch.nn.Sequential:
    """The same network in torch.nn layers, with a copy of ``model``'s weights."""
    layers: list[torch.nn.Module] = []
    for dense in model.dense_layers:
        linear = torch.nn.Linear(dense.in_features, dense.out_features, bias=dense.bias is not None)
        linear.to(dense.weight.device)
        with torch.no_grad():
            linear.weight.copy_(dense.weight)
            if dense.bias is not None:
                linear.bias.copy_(dense.bias)
        layers += [linear, torch.nn.Sigmoid() if dense.activation.name == "sigmoid" else torch.nn.ReLU()]
    return torch.nn.Sequential(*layers)


class NumpyNet:
    """The same equations in NumPy (float32), batched: the textbook's code with rows = examples."""

    def __init__(self, model: MLP, activation: str) -> None:
        self.weights = [d.weight.detach().cpu().numpy().copy() for d in model.dense_layers]
        self.biases = [None if d.bias is None else d.bias.detach().cpu().numpy().copy() for d in model.dense_layers]
        self.sigmoid = activation == "sigmoid"

    def step(self, x: np.ndarray, y: np.ndarray, lr: float) -> float:
        a, activations = x, [x]
        for w, b in zip(self.weights, self.biases):
            z = a @ w.T + (b if b is not None else 0)
            a = _sigmoid(z) if self.sigmoid else np.maximum(z, 0)
            activations.append(a)
        n = len(x)
        cost = 0.5 * float(((a - y) ** 2).sum()) / n
        grad = (a - y) / n  # ∇ₐC
        for l in reversed(range(len(self.weights))):
            a_l = activations[l + 1]
            delta = grad * (a_l * (1 - a_l) if self.sigmoid else (a_l > 0))  # δ = ∇ ⊙ σ′(z)
            grad = delta @ self.weights[l]  # BP2 (before ⊙ σ′)
            self.weights[l] -= lr * (delta.T @ activations[l])  # BP4
            if self.biases[l] is not None:
                self.biases[l] -= lr * delta.sum(0)  # BP3
        return cost


class NielsenNetwork:
    """The training step of Nielsen's ``network.py`` as published: column vectors, one example at a
    time (``backprop``), σ′(z) = σ(z)(1 − σ(z)) recomputed from z, and gradients summed into new
    lists (``update_mini_batch``). Float64, as NumPy's default."""

    def __init__(self, weights: list[np.ndarray], biases: list[np.ndarray]) -> None:
        self.weights, self.biases = weights, biases
        self.num_layers = len(weights) + 1

    def update_mini_batch(self, mini_batch: list[tuple[np.ndarray, np.ndarray]], eta: float) -> None:
        nabla_b = [np.zeros(b.shape) for b in self.biases]
        nabla_w = [np.zeros(w.shape) for w in self.weights]
        for x, y in mini_batch:
            delta_nabla_b, delta_nabla_w = self.backprop(x, y)
            nabla_b = [nb + dnb for nb, dnb in zip(nabla_b, delta_nabla_b)]
            nabla_w = [nw + dnw for nw, dnw in zip(nabla_w, delta_nabla_w)]
        self.weights = [w - (eta / len(mini_batch)) * nw for w, nw in zip(self.weights, nabla_w)]
        self.biases = [b - (eta / len(mini_batch)) * nb for b, nb in zip(self.biases, nabla_b)]

    def backprop(self, x: np.ndarray, y: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        nabla_b = [np.zeros(b.shape) for b in self.biases]
        nabla_w = [np.zeros(w.shape) for w in self.weights]
        activation, activations, zs = x, [x], []
        for b, w in zip(self.biases, self.weights):
            z = np.dot(w, activation) + b
            zs.append(z)
            activation = _sigmoid(z)
            activations.append(activation)
        delta = (activations[-1] - y) * _sigmoid_prime(zs[-1])  # BP1, quadratic cost
        nabla_b[-1] = delta  # BP3
        nabla_w[-1] = np.dot(delta, activations[-2].transpose())  # BP4
        for l in range(2, self.num_layers):
            delta = np.dot(self.weights[-l + 1].transpose(), delta) * _sigmoid_prime(zs[-l])  # BP2
            nabla_b[-l] = delta
            nabla_w[-l] = np.dot(delta, activations[-l - 1].transpose())
        return nabla_b, nabla_w


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _sigmoid_prime(z: np.ndarray) -> np.ndarray:
    return _sigmoid(z) * (1 - _sigmoid(z))


def _saved_bytes(step: Step) -> int:
    """Bytes the autograd graph of one step keeps for backward (a tensor saved twice counted once)."""
    seen: dict[tuple[int, int, tuple[int, ...]], int] = {}

    def pack(tensor: Tensor) -> Tensor:
        size = tensor.numel() * tensor.element_size()
        seen[(tensor.data_ptr(), size, tuple(tensor.stride()))] = size
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        step()
    return sum(seen.values())


def _time(step: Step, steps: int, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return (time.perf_counter() - start) / steps * 1e6


def _steps_for(step: Step, device: torch.device, target_seconds: float) -> int:
    once = _time(step, 3, device) / 1e6
    return max(3, min(2000, int(target_seconds / max(once, 1e-7))))


def run_case(case: Case, device: torch.device, repeats: int, target_seconds: float, lr: float = 0.1) -> dict[str, Any]:
    """Time one case; returns medians (µs per step), ratios to native, saved bytes and more."""
    torch.manual_seed(0)
    model = MLP(list(case.sizes), case.activation, bias=case.bias).to(device)
    native = _native_twin(model)
    x, y = _batch(case, device)
    cost = get_cost("quadratic")
    rule = create_rule("sgd", model.parameters(), lr=lr)
    fast_model = MLP(list(case.sizes), case.activation, bias=case.bias).to(device)
    fast_model.load_state_dict(model.state_dict())
    fast_rule = create_rule("sgd", fast_model.parameters(), lr=lr)
    fast_step = GraphFreeStep(fast_model, cost)
    native_rule = torch.optim.SGD(native.parameters(), lr=lr)

    def torchbp_step() -> None:
        rule.zero_grad()
        cost(model(x), y).backward()
        rule.step()

    def graph_free() -> None:
        cost.mean(fast_step(x, y), y)  # sets every .grad afresh; C as well, as the others compute it
        fast_rule.step()

    def native_step() -> None:
        native_rule.zero_grad()
        (0.5 * torch.nn.functional.mse_loss(native(x), y, reduction="sum") / len(x)).backward()
        native_rule.step()

    contenders: dict[str, Step] = {"native": native_step, "torchbp": torchbp_step, "graph-free": graph_free}
    if case.numpy and device.type == "cpu":
        net, x_np, y_np = NumpyNet(model, case.activation), x.cpu().numpy(), y.cpu().numpy()
        contenders["numpy"] = lambda: net.step(x_np, y_np, lr)
    for step in contenders.values():
        step()  # warm up
    steps = _steps_for(native_step, device, target_seconds)
    summary = summarise(interleave(contenders, steps, repeats, lambda step, n: _time(step, n, device)))
    medians = summary["median_us"]
    result: dict[str, Any] = {
        "case": case.name,
        "steps_per_timing": steps,
        "repeats": repeats,
        "median_us": medians,
        "ratio_to_native": summary["ratio_of_medians"],
        "median_round_ratio": summary["median_round_ratio"],
        "saved_bytes": {"torchbp": _saved_bytes(torchbp_step), "native": _saved_bytes(native_step)},
    }
    if device.type == "cuda":
        peaks = {}
        for name in ("native", "torchbp", "graph-free"):
            torch.cuda.reset_peak_memory_stats(device)
            contenders[name]()
            _sync(device)
            peaks[name] = torch.cuda.max_memory_allocated(device)
        result["peak_cuda_bytes"] = peaks
    if case.roofline:
        result["roofline"] = _roofline(model, x, device, steps, repeats, medians)
    return result


def _roofline(
    model: MLP, x: Tensor, device: torch.device, steps: int, repeats: int, medians: dict[str, float]
) -> dict[str, Any]:
    """The time of each layer's three matrix products alone (forward, ∂x, ∂W), and the step's over it."""
    inputs, a = [], x
    with torch.no_grad():
        for dense in model.dense_layers:
            inputs.append(a)
            a = a @ dense.weight.t()
    deltas = [torch.rand(len(x), dense.out_features, device=device) for dense in model.dense_layers]

    def products() -> None:
        for a_in, dense, delta in zip(inputs, model.dense_layers, deltas):
            torch.mm(a_in, dense.weight.t())
            torch.mm(delta, dense.weight)
            torch.mm(delta.t(), a_in)

    products()
    matmul = statistics.median(_time(products, steps, device) for _ in range(repeats))
    return {
        "matmul_us": matmul,
        "step_over_matmul": {name: medians[name] / matmul for name in ("torchbp", "graph-free", "native")},
    }


def digits_end_to_end(epochs: int = 30, batch_size: int = 10, lr: float = 3.0, repeats: int = 5) -> dict[str, Any]:
    """The digits run (64-30-10 sigmoid, quadratic, SGD η=3, batch 10): ``torchbp.fit`` vs a native
    loop (on torch's threads, and on one thread as ``fit`` runs such a small net) vs Nielsen's
    ``network.py`` in NumPy (as published, and a leaner variant); wall time and validation accuracy."""
    from .training import fit
    from .training.loop import intra_op_threads

    data = digits()
    train, val = data.split(0.2, seed=0)
    y_train = torch.nn.functional.one_hot(train.targets, 10).float()
    results: dict[str, list[tuple[float, float]]] = {}

    def accuracy(outputs: Tensor) -> float:
        return float((outputs.argmax(1) == val.targets).float().mean())

    def torchbp_fit() -> float:
        torch.manual_seed(0)
        model = MLP([64, 30, 10])
        fit(model, (train.inputs, train.targets), lr=lr, epochs=epochs, batch_size=batch_size, seed=0, verbose=False)
        with torch.no_grad():
            return accuracy(model(val.inputs))

    def native_loop() -> float:
        torch.manual_seed(0)
        native = _native_twin(MLP([64, 30, 10]))
        rule = torch.optim.SGD(native.parameters(), lr=lr)
        for epoch in range(epochs):
            order = torch.randperm(len(train.inputs), generator=torch.Generator().manual_seed(epoch))
            inputs, targets = train.inputs[order], y_train[order]
            for start in range(0, len(order), batch_size):
                x, y = inputs[start : start + batch_size], targets[start : start + batch_size]
                rule.zero_grad()
                (0.5 * torch.nn.functional.mse_loss(native(x), y, reduction="sum") / len(x)).backward()
                rule.step()
        with torch.no_grad():
            return accuracy(native(val.inputs))

    def numpy_start() -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray, np.ndarray]:
        torch.manual_seed(0)
        model = MLP([64, 30, 10])
        weights = [d.weight.detach().numpy().astype(np.float64) for d in model.dense_layers]
        biases = [d.bias.detach().numpy().astype(np.float64)[:, None] for d in model.dense_layers if d.bias is not None]
        return weights, biases, train.inputs.numpy().astype(np.float64), y_train.numpy().astype(np.float64)

    def numpy_accuracy(weights: list[np.ndarray], biases: list[np.ndarray]) -> float:
        a = val.inputs.numpy().astype(np.float64).T
        for w, b in zip(weights, biases):
            a = _sigmoid(w @ a + b)
        return float((a.argmax(0) == val.targets.numpy()).mean())

    def network_py() -> float:
        weights, biases, x_all, y_all = numpy_start()
        nielsen = NielsenNetwork(weights, biases)
        rng = np.random.default_rng(0)
        data = [(x[:, None], y[:, None]) for x, y in zip(x_all, y_all)]
        for _ in range(epochs):
            order = rng.permutation(len(data))
            shuffled = [data[i] for i in order]
            for start in range(0, len(shuffled), batch_size):
                nielsen.update_mini_batch(shuffled[start : start + batch_size], lr)
        return numpy_accuracy(nielsen.weights, nielsen.biases)

    def network_py_lean() -> float:
        weights, biases, x_all, y_all = numpy_start()
        rng = np.random.default_rng(0)
        for _ in range(epochs):
            order = rng.permutation(len(x_all))
            for start in range(0, len(order), batch_size):
                batch = order[start : start + batch_size]
                nabla_w = [np.zeros_like(w) for w in weights]
                nabla_b = [np.zeros_like(b) for b in biases]
                for i in batch:  # still one example at a time, but σ′ = a(1 − a) and sums in place
                    a, activations = x_all[i][:, None], [x_all[i][:, None]]
                    for w, b in zip(weights, biases):
                        a = _sigmoid(w @ a + b)
                        activations.append(a)
                    delta = (a - y_all[i][:, None]) * a * (1 - a)
                    for l in range(len(weights) - 1, -1, -1):
                        nabla_b[l] += delta
                        nabla_w[l] += delta @ activations[l].T
                        if l:
                            delta = (weights[l].T @ delta) * activations[l] * (1 - activations[l])
                for l in range(len(weights)):
                    weights[l] -= lr / len(batch) * nabla_w[l]
                    biases[l] -= lr / len(batch) * nabla_b[l]
        return numpy_accuracy(weights, biases)

    def native_one_thread() -> float:
        with intra_op_threads(1):
            return native_loop()

    runs = {
        "torchbp.fit": torchbp_fit,
        "native": native_loop,
        "native, 1 thread": native_one_thread,
        "numpy network.py": network_py,
        "numpy network.py, leaner": network_py_lean,
    }
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            acc = run()
            results.setdefault(name, []).append((time.perf_counter() - start, acc))
    medians = {name: statistics.median(t for t, _ in values) for name, values in results.items()}
    return {
        "median_seconds": medians,
        "val_accuracy": {name: values[-1][1] for name, values in results.items()},
        "ratio": {
            "torchbp.fit / native": medians["torchbp.fit"] / medians["native"],
            "torchbp.fit / native, 1 thread": medians["torchbp.fit"] / medians["native, 1 thread"],
            "torchbp.fit / numpy network.py": medians["torchbp.fit"] / medians["numpy network.py"],
            "torchbp.fit / numpy network.py, leaner": medians["torchbp.fit"] / medians["numpy network.py, leaner"],
        },
    }


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


END_TO_END = "digits end to end"
"""The name ``cases`` selects the 30-epoch digits comparison by."""

COMPILE_CHOICES = ("default", "all", "none")
"""Which layers-only cases get the ``torch.compile`` column: those marked for it, every one, none."""


def select_cases(patterns: Sequence[str] | None, quick: bool = False) -> tuple[list[LayersOnlyCase], list[Case], bool]:
    """The layers-only cases, the full-stack cases and whether the end-to-end run is in, for
    ``patterns`` (substrings of case names, any case; ``None``: every case)."""
    layers_only = QUICK_LAYERS_ONLY_CASES if quick else LAYERS_ONLY_CASES
    full_stack = QUICK_CASES if quick else CASES
    names = [case.name for case in layers_only] + [case.name for case in full_stack] + [END_TO_END]
    if patterns is None:
        return list(layers_only), list(full_stack), True
    for pattern in patterns:
        if not any(pattern.lower() in name.lower() for name in names):
            known = ", ".join(repr(name) for name in names)
            raise ValueError(f"cases: {pattern!r} is part of no case name; expected a part of one of {known}")

    def chosen(name: str) -> bool:
        return any(pattern.lower() in name.lower() for pattern in patterns)

    return (
        [case for case in layers_only if chosen(case.name)],
        [case for case in full_stack if chosen(case.name)],
        chosen(END_TO_END),
    )


def benchmark(
    device: str = "cpu",
    repeats: int = 10,
    quick: bool = False,
    end_to_end: bool = True,
    target_seconds: float = 0.05,
    cases: Sequence[str] | None = None,
    optimizers: Sequence[str] = tuple(OPTIMIZERS),
    compile: str = "default",
) -> dict[str, Any]:
    """Run every case (or the tiny ``quick`` ones) on ``device``; returns the whole report.

    ``cases``: parts of case names (any case, case-insensitive; ``None``: all); ``optimizers``:
    keys of ``OPTIMIZERS`` for the layers-only table; ``compile``: one of ``COMPILE_CHOICES``.
    """
    if repeats < 1:
        raise ValueError(f"repeats: expected at least 1, got {repeats}")
    if not optimizers or any(key not in OPTIMIZERS for key in optimizers):
        raise ValueError(f"optimizers: expected some of {', '.join(OPTIMIZERS)}, got {', '.join(optimizers) or 'none'}")
    if compile not in COMPILE_CHOICES:
        raise ValueError(f"compile: expected one of {', '.join(COMPILE_CHOICES)}, got {compile!r}")
    where = torch.device(device)
    if where.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: 'cuda' was asked for, but torch sees no CUDA device")
    layers_only, full_stack, chosen_end_to_end = select_cases(cases, quick)
    report: dict[str, Any] = {
        "machine": machine(),
        "device": str(where),
        "optimizers": {key: OPTIMIZERS[key][0] for key in optimizers},
        "layers_only": [],
        "cases": [],
    }
    for layers_case in layers_only:
        compiled = compile == "all" or (compile == "default" and layers_case.compile)
        result = run_layers_only(layers_case, where, repeats, target_seconds, optimizers, compiled)
        if not compiled:
            result["compile_skipped"] = (
                "--no-compile"
                if compile == "none"
                else "a smoke-test case; --compile-all compiles it"
                if quick
                else "a long compile warm-up on a small CPU (40–120 s cold on a shared 2-CPU machine); "
                "--compile-all compiles it"
            )
        report["layers_only"].append(result)
    for case in full_stack:
        report["cases"].append(run_case(case, where, repeats, target_seconds))
    if end_to_end and not quick and chosen_end_to_end:
        report["digits_end_to_end"] = digits_end_to_end()
    return report


CONTENDER_LABELS = {"native": "native", "converted": "converted", "mlp": "MLP"}


def format_report(report: dict[str, Any]) -> str:
    """The report as Markdown tables: layers only first, then the full torchbp stack and the
    graph-free step, then the roofline and end-to-end lines."""
    lines = [
        f"machine: {report['machine']['processor']}, {report['machine']['cpu_count']} CPUs, "
        f"torch {report['machine']['torch']}, {report['machine']['threads']} threads, device {report['device']}",
    ]
    if report["layers_only"]:
        lines += ["", *_layers_only_table(report)]
    if report["cases"]:
        lines += [
            "",
            "full torchbp stack — not the drop-in scenario: torchbp.nn.MLP with torchbp's own quadratic cost and SGD "
            "rule, and the graph-free step torchbp.fit takes; native: torch.nn layers, the same cost, torch.optim.SGD "
            "(ratios: of the medians):",
            "",
            "| case | native µs | torchbp µs | graph-free µs | NumPy µs | torchbp/native | graph-free/native | "
            "saved bytes torchbp / native |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
    for result in report["cases"]:
        m, r, saved = result["median_us"], result["ratio_to_native"], result["saved_bytes"]
        numpy_time = f"{m['numpy']:.1f}" if "numpy" in m else "—"
        lines.append(
            f"| {result['case']} | {m['native']:.1f} | {m['torchbp']:.1f} | {m['graph-free']:.1f} | {numpy_time} | "
            f"{r['torchbp']:.2f} | {r['graph-free']:.2f} | {saved['torchbp']:,} / {saved['native']:,} |"
        )
    for result in report["cases"]:
        if "roofline" in result:
            roof = result["roofline"]
            over = ", ".join(f"{k} {v:.2f}×" for k, v in roof["step_over_matmul"].items())
            lines.append(
                f"\nroofline {result['case']}: matrix products alone {roof['matmul_us']:.1f} µs; step / that: {over}"
            )
        if "peak_cuda_bytes" in result:
            lines.append(f"peak CUDA bytes {result['case']}: {result['peak_cuda_bytes']}")
    if "digits_end_to_end" in report:
        e2e = report["digits_end_to_end"]
        times = ", ".join(f"{k} {v:.3f} s" for k, v in e2e["median_seconds"].items())
        accs = ", ".join(f"{k} {100 * v:.1f}%" for k, v in e2e["val_accuracy"].items())
        ratios = ", ".join(f"{k} = {v:.2f}" for k, v in e2e["ratio"].items())
        lines.append(f"\ndigits end to end (30 epochs, batch 10, η=3): {times}\naccuracy: {accs}\nratios: {ratios}")
    return "\n".join(lines)


def _layers_only_table(report: dict[str, Any]) -> list[str]:
    """The first table: a row per case and mode, per optimiser native's median µs and each other
    contender's median µs with the median of its per-round ratios to native; then the footnotes."""
    optimizers = report["optimizers"]
    others = [
        name for name in ("converted", "mlp") if any(name in result["contenders"] for result in report["layers_only"])
    ]
    labels = ", ".join(f"{key}: torch.optim.{label}" for key, label in optimizers.items())
    lines = [
        "layers only — what a user does: the model's torch.nn layers swapped (convert(model); torchbp.nn.MLP for "
        f"a plain stack), the user's own torch.nn.CrossEntropyLoss and torch.optim ({labels}); eager, and "
        "torch.compile(model); µs per step (medians), in brackets the median of the per-round ratios to native:",
        "",
        "| model | mode | "
        + " | ".join(
            f"{key} {CONTENDER_LABELS[name]}{' µs' if name == 'native' else ''}"
            for key in optimizers
            for name in ("native", *others)
        )
        + " |",
        "| --- | --- |" + " ---: |" * (len(optimizers) * (1 + len(others))),
    ]
    notes: list[str] = []
    for result in report["layers_only"]:
        for mode in ("eager", "compile"):
            groups = {group["optimizer"]: group for group in result["groups"] if group["mode"] == mode}
            if not groups:
                continue
            cells = []
            for key in optimizers:
                group = groups[key]
                for name in ("native", *others):
                    cells.append(_layers_only_cell(group, name, name in result["contenders"], notes))
            lines.append(f"| {result['case']} | {mode} | " + " | ".join(cells) + " |")
    for result in report["layers_only"]:
        seconds = {}
        for group in result["groups"]:
            seconds.update(group.get("compile_seconds", {}))
        if seconds:
            spent = ", ".join(f"{CONTENDER_LABELS[name]} {value:.1f}" for name, value in seconds.items())
            notes.append(f"torch.compile warm-up, {result['case']} (s): {spent}")
        if "compile_skipped" in result:
            notes.append(f"torch.compile not run for {result['case']}: {result['compile_skipped']}")
    return lines + (["", *notes] if notes else [])


def _layers_only_cell(group: dict[str, Any], name: str, present: bool, notes: list[str]) -> str:
    if not present:
        return "—"
    if name in group.get("errors", {}):
        error = group["errors"][name].strip().splitlines()[0][:300]  # the whole message is in the JSON
        notes.append(f"[{len(notes) + 1}] {group['mode']}, {group['optimizer']}, {name}: {error}")
        return f"failed [{len(notes)}]"
    if "median_us" not in group:
        return "—"
    median = group["median_us"][name]
    if name == "native":
        return f"{median:.1f}"
    return f"{median:.1f} ({group['median_round_ratio'][name]:.2f}×)"


def write_json(report: dict[str, Any], path: str) -> None:
    with open(path, "w") as file:
        json.dump(report, file, indent=2)
