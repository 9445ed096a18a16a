"""torchbp.nn.models: LeNet and the ResNet-style CNN against their native twins, under torch.func and torch.compile."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.func import functional_call, grad, jvp, vmap

import torchbp
from torchbp.nn.models import lenet, small_resnet


def _pair(build: str) -> tuple[torch.nn.Module, torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    ours = lenet(8).double() if build == "lenet" else small_resnet(width=4).double().eval()
    x = torch.randn(3, 64, dtype=torch.float64) if build == "lenet" else torch.randn(3, 1, 8, 8, dtype=torch.float64)
    return ours, torchbp.nn.revert(copy.deepcopy(ours)), x


@pytest.mark.parametrize("build", ["lenet", "resnet"])
def test_per_example_gradients_with_vmap_of_grad_equal_native(build: str) -> None:
    ours, native, x = _pair(build)

    def per_example(model: torch.nn.Module) -> dict[str, torch.Tensor]:
        params = {k: v.detach() for k, v in model.named_parameters()}
        buffers = dict(model.named_buffers())

        def loss(p: dict[str, torch.Tensor], xi: torch.Tensor) -> torch.Tensor:
            return functional_call(model, (p, buffers), (xi.unsqueeze(0),)).pow(2).sum()

        return vmap(grad(loss), in_dims=(None, 0))(params, x)  # type: ignore[no-any-return]

    theirs = per_example(native)
    for name, value in per_example(ours).items():
        torch.testing.assert_close(value, theirs[name], rtol=1e-10, atol=1e-10, msg=name)


@pytest.mark.parametrize("build", ["lenet", "resnet"])
def test_jvp_equals_native(build: str) -> None:
    ours, native, x = _pair(build)
    tangent = torch.randn_like(x)
    out_ours, t_ours = jvp(ours, (x,), (tangent,))
    out_native, t_native = jvp(native, (x,), (tangent,))
    torch.testing.assert_close(out_ours, out_native, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(t_ours, t_native, rtol=1e-10, atol=1e-10)


def test_compiled_lenet_training_step_equals_eager_without_graph_breaks() -> None:
    import torch._dynamo as dynamo

    torch.manual_seed(0)
    eager = lenet(8)
    compiled_model = copy.deepcopy(eager)
    x, y = torch.rand(16, 64), torch.randint(10, (16,))
    loss = torch.nn.CrossEntropyLoss()
    dynamo.reset()
    explanation = dynamo.explain(lambda x: loss(compiled_model(x), y))(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    # aot_eager: the graph Dynamo captured, run by ATen's own kernels (inductor's max pooling may
    # break the ties of relu's zeros the other way, native models' as well)
    step = torch.compile(lambda x: loss(compiled_model(x), y), backend="aot_eager")
    for model, run in ((eager, lambda: loss(eager(x), y)), (compiled_model, lambda: step(x))):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        for _ in range(3):
            optimizer.zero_grad()
            run().backward()
            optimizer.step()
    for a, b in zip(eager.parameters(), compiled_model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("build", ["mlp", "dense", "lenet"])
def test_torch_compile_traces_a_model_that_nothing_differentiates(build: str) -> None:
    import torch._dynamo as dynamo

    model = {"mlp": lambda: torchbp.nn.MLP([64, 8, 10]), "dense": lambda: torchbp.nn.Dense(64, 10), "lenet": lenet}[
        build
    ]()
    model.requires_grad_(False)
    x = torch.rand(4, 64)
    dynamo.reset()
    explanation = dynamo.explain(lambda x: model(x).sum())(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    torch.testing.assert_close(torch.compile(model, backend="aot_eager")(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize("build", ["lenet", "resnet"])
def test_no_native_backward_node_is_left_in_a_converted_cnn(build: str) -> None:
    from test_layer_harness import NATIVE_ALLOWED, graph_node_names

    ours, native, x = _pair(build)
    ours.train()
    names = graph_node_names(ours(x.requires_grad_()))
    assert {name for name in names - NATIVE_ALLOWED if not name.endswith("FunctionBackward")} == set()
    # the same model left native shows them, so the walk can tell
    assert "ConvolutionBackward0" in graph_node_names(native.train()(x))
