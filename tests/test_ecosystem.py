"""torchbp where torch.nn works: torch.func, torch.compile, autocast, DDP, torchrun, module tools, packaging."""

from __future__ import annotations

import copy
import gc
import os
import shutil
import subprocess
import sys
import weakref
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.func import functional_call, grad, jacfwd, jacrev, jvp, vmap

import torchbp
import torchbp.functional as F
import torchbp.nn as tnn
from torchbp.benchmark import EncoderClassifier
from torchbp.nn.models import lenet, small_resnet

ROOT = Path(__file__).resolve().parent.parent


def _twins() -> tuple[torch.nn.Module, torch.nn.Module]:
    """A torchbp MLP and the same network in torch.nn layers, same weights, float64."""
    torch.manual_seed(0)
    ours = tnn.MLP([3, 5, 2], activation="tanh", output_activation="sigmoid").double()
    theirs = torch.nn.Sequential(
        torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2), torch.nn.Sigmoid()
    ).double()
    theirs.load_state_dict(
        {k.replace("layers.1", "2").replace("layers.0", "0"): v for k, v in ours.state_dict().items()}
    )
    return ours, theirs


def _rename(params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k.replace("layers.1", "2").replace("layers.0", "0"): v for k, v in params.items()}


# torch.func


def test_vmap_over_functional_ops_equals_a_loop() -> None:
    x = torch.randn(6, 4, 3, dtype=torch.float64)
    weight, bias = torch.randn(2, 3, dtype=torch.float64), torch.randn(2, dtype=torch.float64)
    for function in (
        lambda x: F.linear(x, weight, bias),
        lambda x: F.dense(x, weight, bias, "gelu"),
        lambda x: F.softmax(x, -1),
        lambda x: F.mlp(x, [weight, torch.ones(1, 2, dtype=torch.float64)], [bias, None], ["relu", "sigmoid"]),
    ):
        torch.testing.assert_close(vmap(function)(x), torch.stack([function(xi) for xi in x]))


def test_per_example_gradients_with_vmap_of_grad() -> None:
    ours, theirs = _twins()
    x, y = torch.randn(7, 3, dtype=torch.float64), torch.rand(7, 2, dtype=torch.float64)

    def loss(model: torch.nn.Module, params: dict, xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        return ((functional_call(model, params, (xi,)) - yi) ** 2).sum()

    per_example = vmap(grad(lambda p, xi, yi: loss(ours, p, xi, yi)), in_dims=(None, 0, 0))(
        dict(ours.named_parameters()), x, y
    )
    expected = vmap(grad(lambda p, xi, yi: loss(theirs, p, xi, yi)), in_dims=(None, 0, 0))(
        dict(theirs.named_parameters()), x, y
    )
    for name, value in _rename(per_example).items():
        torch.testing.assert_close(value, expected[name])


def test_jacobians_and_jvp_match_native() -> None:
    ours, theirs = _twins()
    x = torch.randn(3, dtype=torch.float64)
    torch.testing.assert_close(jacrev(ours)(x), jacrev(theirs)(x))
    torch.testing.assert_close(jacfwd(ours)(x), jacfwd(theirs)(x))
    tangent = torch.randn(4, 3, dtype=torch.float64)
    batch = torch.randn(4, 3, dtype=torch.float64)
    torch.testing.assert_close(jvp(ours, (batch,), (tangent,)), jvp(theirs, (batch,), (tangent,)))


# torch.compile


def test_torch_compile_traces_torchbp_without_graph_breaks() -> None:
    import torch._dynamo as dynamo

    ours, _ = _twins()
    cost = torchbp.get_cost("mse")
    converted = tnn.convert(
        torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.GELU(), torch.nn.Linear(4, 2), torch.nn.Softmax(-1))
    )
    x = torch.randn(5, 3, dtype=torch.float64)
    for function, inputs in (
        (lambda x: cost(ours(x), x[:, :2]), x),
        (lambda x: converted(x).pow(2).sum(), x.float()),
    ):
        dynamo.reset()
        explanation = dynamo.explain(function)(inputs)
        assert explanation.graph_break_count == 0, explanation.break_reasons


def test_compiled_model_gives_eager_outputs_and_gradients() -> None:
    ours, _ = _twins()
    cost = torchbp.get_cost("quadratic")
    x, y = torch.randn(8, 3, dtype=torch.float64), torch.rand(8, 2, dtype=torch.float64)
    compiled = torch.compile(lambda x: cost(ours(x), y))
    loss = compiled(x)
    loss.backward()
    compiled_grads = [p.grad.clone() for p in ours.parameters()]
    ours.zero_grad()
    eager = cost(ours(x), y)
    eager.backward()
    torch.testing.assert_close(loss, eager)
    for compiled_grad, p in zip(compiled_grads, ours.parameters()):
        torch.testing.assert_close(compiled_grad, p.grad)


# autocast


@pytest.mark.parametrize("module", ["linear", "dense", "mlp"])
def test_autocast_cpu_bfloat16_behaves_like_torch_nn(module: str) -> None:
    torch.manual_seed(0)
    linear = torch.nn.Linear(4, 3)
    ours = {
        "linear": tnn.Linear(4, 3),
        "dense": tnn.Dense(4, 3, "identity"),
        "mlp": tnn.MLP([4, 3], activation="identity"),
    }[module]
    ours.load_state_dict(
        {k.replace("layers.0.", ""): v for k, v in linear.state_dict().items()}
        if module != "mlp"
        else {f"layers.0.{k}": v for k, v in linear.state_dict().items()}
    )
    x = torch.randn(5, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out_ours, out_theirs = ours(x), linear(x)
    assert out_ours.dtype == out_theirs.dtype == torch.bfloat16
    out_ours.float().sum().backward()
    out_theirs.float().sum().backward()
    for p, q in zip(ours.parameters(), linear.parameters()):
        assert p.grad.dtype == q.grad.dtype == torch.float32
        torch.testing.assert_close(p.grad, q.grad, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(out_ours, out_theirs, rtol=0, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_autocast_cuda_behaves_like_torch_nn(dtype: torch.dtype) -> None:
    linear = torch.nn.Linear(4, 3).cuda()
    ours = tnn.Linear(4, 3).cuda()
    ours.load_state_dict(linear.state_dict())
    x = torch.randn(5, 4, device="cuda")
    with torch.autocast("cuda", dtype=dtype):
        assert ours(x).dtype == linear(x).dtype == dtype


def _relative_error(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return float((ours.detach().float() - theirs.detach().float()).norm() / theirs.detach().float().norm())


class _MaskedSelfAttention(torch.nn.Module):
    """Self-attention with a key-padding mask and a causal mask."""

    def __init__(self) -> None:
        super().__init__()
        self.attention = torch.nn.MultiheadAttention(16, 2, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padding = torch.zeros(x.shape[:2], dtype=torch.bool, device=x.device)
        padding[:, -1] = True
        causal = torch.ones(x.shape[1], x.shape[1], dtype=torch.bool, device=x.device).triu(1)
        return self.attention(x, x, x, key_padding_mask=padding, attn_mask=causal)[0]  # type: ignore[no-any-return]


class _Attend(torch.nn.Module):
    """Self-attention by ``attention``, its output only."""

    def __init__(self, attention: torch.nn.MultiheadAttention) -> None:
        super().__init__()
        self.attention = attention

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attention(x, x, x)[0]  # type: ignore[no-any-return]


AUTOCAST_MODELS: dict[str, tuple[Callable[[], torch.nn.Module], tuple[int, ...]]] = {
    "linear and norms": (
        lambda: torch.nn.Sequential(
            torch.nn.Linear(8, 16),
            torch.nn.LayerNorm(16),
            torch.nn.ReLU(),
            torch.nn.Linear(16, 16),
            torch.nn.RMSNorm(16),
            torch.nn.Linear(16, 4),
        ),
        (5, 8),
    ),
    "masked self-attention": (_MaskedSelfAttention, (3, 5, 16)),
    "attention with bias_kv": (lambda: _Attend(torch.nn.MultiheadAttention(16, 2, add_bias_kv=True)), (5, 3, 16)),
    "lenet": (lambda: lenet(8), (6, 64)),
    "resnet-style, batch norm": (small_resnet, (4, 1, 28, 28)),
    "transformer encoder": (lambda: EncoderClassifier(width=32, heads=4, layers=1), (3, 5, 32)),
}


@pytest.mark.filterwarnings("ignore:Mismatch dtype between input and weight")  # torch's own RMSNorm, mixed
@pytest.mark.parametrize("name", AUTOCAST_MODELS)
def test_autocast_converted_models_train_like_torch_nn(device: str, name: str) -> None:
    """A converted CNN or transformer under autocast (CPU bfloat16, CUDA float16): the output in the
    same low precision, float32 gradients and batch-norm statistics, all near torch's own."""
    dtype, tolerance = (torch.bfloat16, 3e-2) if device == "cpu" else (torch.float16, 1e-2)
    build, shape = AUTOCAST_MODELS[name]
    torch.manual_seed(0)
    theirs = build().to(device)
    ours = tnn.convert(copy.deepcopy(theirs))
    x = torch.randn(shape, device=device)
    outputs = []
    for model in (ours, theirs):
        with torch.autocast(device, dtype=dtype):
            output = model(x)
        output.float().square().mean().backward()
        outputs.append(output)
    assert outputs[0].dtype == outputs[1].dtype == dtype
    assert _relative_error(*outputs) < tolerance
    for (label, p), q in zip(ours.named_parameters(), theirs.parameters()):
        assert p.grad.dtype == q.grad.dtype == torch.float32, label
        assert _relative_error(p.grad, q.grad) < tolerance, label
    for (label, a), b in zip(ours.named_buffers(), theirs.buffers()):
        assert a.dtype == b.dtype, label
        if a.is_floating_point():
            assert _relative_error(a, b) < tolerance, label


def test_autocast_scaled_dot_product_attention_is_torchs(device: str) -> None:
    """Under autocast Q, K, V and a float mask are cast to its dtype, as torch's attention is."""
    dtype = torch.bfloat16 if device == "cpu" else torch.float16
    q, k, v = (torch.randn(2, 3, 4, 8, device=device, requires_grad=True) for _ in range(3))
    mask = torch.randn(4, 4, device=device)
    delta = torch.randn(2, 3, 4, 8, device=device)
    results = []
    for attention in (F.scaled_dot_product_attention, torch.nn.functional.scaled_dot_product_attention):
        with torch.autocast(device, dtype=dtype):
            output = attention(q, k, v, attn_mask=mask)
        results.append((output, *torch.autograd.grad(output, (q, k, v), delta.to(dtype))))
    assert results[0][0].dtype == results[1][0].dtype == dtype
    for ours, theirs in zip(*results):
        assert ours.dtype == theirs.dtype
        assert _relative_error(ours, theirs) < 2e-2


def test_autocast_leaves_float64_alone(device: str) -> None:
    """autocast never casts float64: a float64 model computes in float64 under it, as torch's."""
    dtype = torch.bfloat16 if device == "cpu" else torch.float16
    x = torch.randn(3, 5, 8, dtype=torch.float64, device=device)
    modules: list[tuple[torch.nn.Module, Callable[[torch.nn.Module], torch.Tensor]]] = [
        (torch.nn.MultiheadAttention(8, 2, batch_first=True), lambda m: m(x, x, x)[0]),
        (torch.nn.Linear(8, 4), lambda m: m(x)),
        (torch.nn.LayerNorm(8), lambda m: m(x)),
        (torch.nn.RMSNorm(8), lambda m: m(x)),
    ]
    for theirs, call in modules:
        theirs = theirs.double().to(device)
        ours = tnn.convert(copy.deepcopy(theirs))
        with torch.autocast(device, dtype=dtype):
            z_ours, z_theirs = call(ours), call(theirs)
        assert z_ours.dtype == z_theirs.dtype == torch.float64, type(theirs).__name__
        torch.testing.assert_close(z_ours, z_theirs, rtol=1e-10, atol=1e-10)
    with torch.autocast(device, dtype=dtype):
        attended = F.scaled_dot_product_attention(x, x, x)
    assert attended.dtype == torch.float64


def test_autocast_copies_keep_no_activation_alive() -> None:
    """A layer's cast copy of its input does not hold the float32 activation until the backward
    pass (only copies of parameters remember where they came from), as torch's own casts."""
    layer = tnn.convert(torch.nn.Linear(8, 4))
    leaf = torch.randn(16, 8, requires_grad=True)
    x = leaf * 2
    activation = weakref.ref(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = layer(x)
    del x
    gc.collect()
    assert activation() is None
    z.float().sum().backward()
    assert leaf.grad is not None and layer.weight.grad is not None


# CUDA graphs


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize(
    "build",
    [
        lambda: tnn.MLP([8, 16, 4], "sigmoid"),
        lambda: torch.nn.Sequential(tnn.Linear(8, 16), tnn.Tanh(), tnn.Dense(16, 4)),
    ],
    ids=["mlp", "sequential"],
)
def test_drop_in_training_step_replays_as_a_cuda_graph_like_eager_steps(build: Callable[[], torch.nn.Module]) -> None:
    # the whole-network recipe of PyTorch's CUDA-graph notes: warm up on a side stream, capture
    # forward, cost, backward and update once, then replay it on new data copied into static inputs
    eager = build().cuda()
    graphed = copy.deepcopy(eager)
    initial = [p.detach().clone() for p in eager.parameters()]
    cost = torchbp.get_cost("quadratic")
    eager_rule, graphed_rule = (
        torchbp.create_rule("sgd", m.parameters(), lr=0.5, momentum=0.9) for m in (eager, graphed)
    )
    batches = [(torch.rand(16, 8, device="cuda"), torch.rand(16, 4, device="cuda")) for _ in range(8)]
    static_x, static_y = torch.empty_like(batches[0][0]), torch.empty_like(batches[0][1])

    def train(model: torch.nn.Module, rule: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> None:
        cost(model(x), y).backward()
        rule.step()

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for x, y in batches[:3]:
            static_x.copy_(x)
            static_y.copy_(y)
            graphed_rule.zero_grad(set_to_none=True)
            train(graphed, graphed_rule, static_x, static_y)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    graphed_rule.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        train(graphed, graphed_rule, static_x, static_y)
    for x, y in batches[3:]:
        static_x.copy_(x)
        static_y.copy_(y)
        graph.replay()
    for x, y in batches:
        eager_rule.zero_grad(set_to_none=True)
        train(eager, eager_rule, x, y)
    torch.cuda.synchronize()
    assert not any(torch.equal(p, p0) for p, p0 in zip(eager.parameters(), initial))
    for p, q in zip(graphed.parameters(), eager.parameters()):
        torch.testing.assert_close(p, q)


# distributed


def _ddp_worker(rank: int, world: int, rendezvous: str, x: torch.Tensor, y: torch.Tensor, out: str) -> None:
    # a file rendezvous: no port to pick, so no race with other processes for it
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(tnn.MLP([3, 5, 2]).double())
    shard = slice(rank * len(x) // world, (rank + 1) * len(x) // world)
    torchbp.get_cost("quadratic")(model(x[shard]), y[shard]).backward()
    if rank == 0:
        torch.save([p.grad for p in model.parameters()], out)
    dist.barrier()
    dist.destroy_process_group()
    # leave without the interpreter's teardown, where gloo's threads now and then abort the
    # process (SIGABRT, "terminate called without an active exception"), as `torchbp train` does
    os._exit(0)


def test_ddp_gradients_equal_one_process_on_the_whole_batch(tmp_path: Path) -> None:
    x, y = torch.randn(8, 3, dtype=torch.float64), torch.rand(8, 2, dtype=torch.float64)
    out = str(tmp_path / "grads.pt")
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "rendezvous"), x, y, out), nprocs=2, join=True)
    torch.manual_seed(0)
    single = tnn.MLP([3, 5, 2]).double()
    torchbp.get_cost("quadratic")(single(x), y).backward()
    for ddp_grad, p in zip(torch.load(out, weights_only=True), single.parameters()):
        torch.testing.assert_close(ddp_grad, p.grad)


def test_torchbp_train_under_torchrun(tmp_path: Path) -> None:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    command = [
        torchrun,
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "torchbp.cli",
        "train",
        "--dataset",
        "moons",
        "--layers",
        "2,16,2",
        "--activation",
        "tanh",
        "--epochs",
        "3",
        "--lr",
        "1",
        "--logdir",
        str(tmp_path),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("epoch   3/3") == 1  # rank 0 alone prints
    assert [p.name for p in (tmp_path / "moons").iterdir()] == ["version_0"]  # and logs
    checkpoint = torchbp.training.load_checkpoint(tmp_path / "moons" / "version_0")
    assert checkpoint["epoch"] == 2 and checkpoint["history"][-1]["train_loss"] > 0


# modules


def test_to_device_and_dtype_like_torch_nn(device: str) -> None:
    for module in (tnn.Linear(3, 2), tnn.Dense(3, 2), tnn.MLP([3, 4, 2])):
        moved = copy.deepcopy(module).to(device, torch.float64)
        assert all(p.dtype == torch.float64 and p.device.type == device for p in moved.parameters())
        assert moved(torch.randn(2, 3, dtype=torch.float64, device=device)).dtype == torch.float64


@pytest.mark.parametrize("parametrize", ["orthogonal", "weight_norm", "spectral_norm"])
def test_parametrizations_on_torchbp_layers(parametrize: str) -> None:
    torch.manual_seed(0)
    ours, theirs = tnn.Linear(4, 4).double(), torch.nn.Linear(4, 4).double()
    theirs.load_state_dict(ours.state_dict())
    apply = getattr(torch.nn.utils.parametrizations, parametrize)
    apply(ours)
    apply(theirs)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(3, 4, dtype=torch.float64)
    torch.testing.assert_close(ours(x), theirs(x))
    ours(x).sum().backward()
    theirs(x).sum().backward()
    for p, q in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(p.grad, q.grad)


def test_hooks_on_torchbp_modules_behave_like_torch_nn() -> None:
    seen: list[str] = []
    for module in (tnn.Linear(3, 2), tnn.Dense(3, 2), tnn.Sigmoid()):
        module.register_forward_pre_hook(lambda m, args: seen.append("pre"))
        module.register_forward_hook(lambda m, args, out: seen.append("forward"))
        module.register_full_backward_hook(lambda m, gin, gout: seen.append("backward"))
        x = torch.randn(2, 3, requires_grad=True)
        module(x).sum().backward()
    assert seen == ["pre", "forward", "backward"] * 3


# packaging


def test_version_comes_from_package_metadata() -> None:
    from importlib.metadata import version

    assert torchbp.__version__ == version("torchbp")


def test_pip_builds_a_typed_wheel(tmp_path: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        str(tmp_path),
        str(ROOT),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("torchbp-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "torchbp/py.typed" in names and "torchbp/functional/factory.py" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "torchbp = torchbp.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
