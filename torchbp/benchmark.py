"""Benchmarks: torchbp against torch.nn + torch.optim (and NumPy for small nets), side by side.

First, what a user does: a model whose layers alone are converted (``torchbp.nn.convert``),
trained with the user's own ``torch.nn.CrossEntropyLoss`` and ``torch.optim.SGD`` (momentum 0.9),
against the same model left native. Then the MLP cases: the full training step (zero grads,
forward, cost, backward, update) with torchbp's cost and rule, and the graph-free step, against
native, SGD and the quadratic cost. Every case starts both contenders from the same weights on
the same data; contenders run in one process, alternating A B A B …, and the report gives
medians and ratios to native PyTorch. Run it as ``torchbp bench`` or ``python scripts/bench.py``.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
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
class DropInCase:
    """A user's model, built from ``torch.nn`` layers, and its batch: ``input_shape`` per example."""

    name: str
    build: Callable[[], torch.nn.Module]
    input_shape: tuple[int, ...]
    batch: int
    classes: int = 10


DROP_IN_CASES = [
    DropInCase("LeNet digits b64", lambda: revert(lenet(8)), (64,), 64),
    DropInCase("ResNet-style 1×28×28 b32", lambda: revert(small_resnet()), (1, 28, 28), 32),
    DropInCase("MLP 784-256-256-10 relu b64", lambda: _relu_mlp(784, 256, 256, 10), (784,), 64),
    DropInCase("Transformer encoder 2×(d128, 4 heads) seq 64 b16", lambda: EncoderClassifier(), (64, 128), 16),
]
QUICK_DROP_IN_CASES = [DropInCase("LeNet digits b8", lambda: revert(lenet(8)), (64,), 8)]


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


def _relu_mlp(*sizes: int) -> torch.nn.Sequential:
    layers: list[torch.nn.Module] = []
    for n_in, n_out in itertools.pairwise(sizes):
        layers += [torch.nn.Linear(n_in, n_out), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers[:-1])


def run_drop_in(case: DropInCase, device: torch.device, repeats: int, target_seconds: float) -> dict[str, Any]:
    """Layers only: the converted model against the native one, each with its own
    ``CrossEntropyLoss`` and ``SGD(lr=0.01, momentum=0.9)``; medians (µs per step) and the ratio."""
    torch.manual_seed(0)
    native = case.build().to(device)
    ours = convert(copy.deepcopy(native))
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(case.batch, *case.input_shape, generator=generator).to(device)
    y = torch.randint(case.classes, (case.batch,), generator=generator).to(device)
    loss = torch.nn.CrossEntropyLoss()

    def trainer(model: torch.nn.Module) -> Step:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def step() -> None:
            optimizer.zero_grad()
            loss(model(x), y).backward()
            optimizer.step()

        return step

    contenders = {"native": trainer(native), "torchbp": trainer(ours)}
    for step in contenders.values():
        step()  # warm up
    steps = _steps_for(contenders["native"], device, target_seconds)
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, step in contenders.items():
            times[name].append(_time(step, steps, device))
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {
        "case": case.name,
        "steps_per_timing": steps,
        "repeats": repeats,
        "median_us": medians,
        "ratio_to_native": medians["torchbp"] / medians["native"],
    }


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
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, step in contenders.items():
            times[name].append(_time(step, steps, device))
    medians = {name: statistics.median(values) for name, values in times.items()}
    result: dict[str, Any] = {
        "case": case.name,
        "steps_per_timing": steps,
        "repeats": repeats,
        "median_us": medians,
        "ratio_to_native": {name: medians[name] / medians["native"] for name in medians},
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


def benchmark(
    device: str = "cpu", repeats: int = 10, quick: bool = False, end_to_end: bool = True, target_seconds: float = 0.05
) -> dict[str, Any]:
    """Run every case (or the tiny ``quick`` ones) on ``device``; returns the whole report."""
    if repeats < 1:
        raise ValueError(f"repeats: expected at least 1, got {repeats}")
    where = torch.device(device)
    if where.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: 'cuda' was asked for, but torch sees no CUDA device")
    cases = QUICK_CASES if quick else CASES
    report: dict[str, Any] = {"machine": machine(), "device": str(where), "drop_in": [], "cases": []}
    for drop_in in QUICK_DROP_IN_CASES if quick else DROP_IN_CASES:
        report["drop_in"].append(run_drop_in(drop_in, where, repeats, target_seconds))
    for case in cases:
        report["cases"].append(run_case(case, where, repeats, target_seconds))
    if end_to_end and not quick:
        report["digits_end_to_end"] = digits_end_to_end()
    return report


def format_report(report: dict[str, Any]) -> str:
    """The report as a Markdown table (and the end-to-end and roofline lines)."""
    lines = [
        f"machine: {report['machine']['processor']}, {report['machine']['cpu_count']} CPUs, "
        f"torch {report['machine']['torch']}, {report['machine']['threads']} threads, device {report['device']}",
        "",
        "layers-only drop-in (convert(model); the user's own CrossEntropyLoss and torch.optim.SGD, momentum 0.9):",
        "",
        "| model | native µs | converted µs | converted/native |",
        "| --- | ---: | ---: | ---: |",
    ]
    for result in report.get("drop_in", []):
        m = result["median_us"]
        lines.append(f"| {result['case']} | {m['native']:.1f} | {m['torchbp']:.1f} | {result['ratio_to_native']:.2f} |")
    lines += [
        "",
        "full torchbp stack (torchbp.nn.MLP, torchbp's quadratic cost and SGD) and the graph-free step:",
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


def write_json(report: dict[str, Any], path: str) -> None:
    with open(path, "w") as file:
        json.dump(report, file, indent=2)
