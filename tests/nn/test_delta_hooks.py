"""δ hooks on every torchbp layer with parameters: the δ handed over is the true ∂C/∂z."""

from __future__ import annotations

import torch

import torchbp
import torchbp.nn as tnn


def test_linear_delta_sums_to_the_bias_gradient_and_equals_the_output_gradient(device: str) -> None:
    layer = tnn.convert(torch.nn.Linear(3, 2, device=device, dtype=torch.float64))
    seen: list[tuple[torch.nn.Module, torch.Tensor]] = []
    handle = layer.register_delta_hook(lambda module, delta: seen.append((module, delta)))
    x = torch.randn(5, 3, device=device, dtype=torch.float64)
    z = layer(x)
    z.retain_grad()
    (z**3).sum().backward()
    ((module, delta),) = seen
    assert module is layer
    torch.testing.assert_close(delta, z.grad)
    torch.testing.assert_close(delta.sum(0), layer.bias.grad)  # BP3
    torch.testing.assert_close(delta.t() @ x, layer.weight.grad)  # BP4
    handle.remove()
    layer(x).sum().backward()
    assert len(seen) == 1


def test_every_registered_twin_with_parameters_has_delta_hooks() -> None:
    for entry in torchbp.list_layers():
        spec = entry.spec
        if spec.examples is None:
            continue
        module, _ = spec.examples(torch.float32)[0]
        if any(True for _ in module.parameters(recurse=False)):
            assert issubclass(spec.twin, tnn.DeltaHooks), spec.name


def test_a_converted_layer_keeps_no_hook_state_until_one_is_registered() -> None:
    layer = tnn.convert(torch.nn.Linear(2, 2))
    assert "_delta_hooks" not in layer.__dict__
    assert layer.on_delta() is None
    layer.register_delta_hook(lambda module, delta: None)
    assert layer.on_delta() is not None
    assert tnn.convert(torch.nn.Linear(2, 2)).on_delta() is None  # another layer is untouched
