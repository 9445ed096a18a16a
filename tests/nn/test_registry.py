"""torchbp.nn.registry: the twin registry fed by the torchbp_layers hook, convert(strict), conversion()."""

from __future__ import annotations

import pytest
import torch

import torchbp
import torchbp.nn as tnn
from torchbp.derivatives.linear import Linear as LinearDerivatives
from torchbp.functional import apply_layer


class Bilinear(torch.nn.Bilinear):
    """A stand-in for a third-party layer: torch.nn.Bilinear is not one of torchbp's."""


def test_strict_convert_names_every_native_module_with_parameters() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LSTM(4, 4), torch.nn.Sequential(torch.nn.GRUCell(4, 2)))
    with pytest.raises(ValueError, match=r"1 \(LSTM\), 2\.0 \(GRUCell\)"):
        tnn.convert(model, strict=True)
    assert type(model[0]) is torch.nn.Linear  # nothing was converted
    tnn.convert(model)
    report = tnn.conversion(model)
    assert report.converted == {"0": "Linear"}
    assert report.native == {"1": "LSTM", "2.0": "GRUCell"}
    assert "native    1: LSTM" in str(report)


def test_strict_convert_passes_a_fully_convertible_model() -> None:
    model = tnn.convert(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)), strict=True)
    assert tnn.conversion(model).native == {}
    assert list(tnn.conversion(model).converted.values()) == ["Linear", "Tanh", "Linear"]


class _TwinPlugin:
    """A third-party distribution's layer: a Bilinear stand-in whose forward is torchbp's Linear maths."""

    class ExplicitBilinear(Bilinear):
        def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
            return apply_layer(LinearDerivatives(), x1 * x2, (self.weight[0], self.bias))

    @torchbp.hookimpl
    def torchbp_layers(self) -> list[torchbp.LayerSpec]:
        return [torchbp.LayerSpec("ExplicitBilinear", "test", Bilinear, self.ExplicitBilinear, LinearDerivatives)]


def test_a_plugin_layer_is_used_by_convert_and_listed() -> None:
    plugin = _TwinPlugin()
    name = torchbp.register_plugin(plugin)
    try:
        assert [entry.plugin for entry in torchbp.list_layers("ExplicitBilinear")] == [name]
        model = tnn.convert(torch.nn.Sequential(Bilinear(3, 3, 2)))
        assert type(model[0]) is _TwinPlugin.ExplicitBilinear
    finally:
        torchbp.unregister_plugin(plugin)
    assert torchbp.list_layers("ExplicitBilinear") == []


def test_two_twins_for_one_torch_class_is_an_error_naming_both() -> None:
    class Other:
        @torchbp.hookimpl
        def torchbp_layers(self) -> list[torchbp.LayerSpec]:
            return [torchbp.LayerSpec("MyLinear", "a second Linear", torch.nn.Linear, tnn.Linear)]

    plugin = Other()
    torchbp.register_plugin(plugin)
    try:
        with pytest.raises(torchbp.PluginError, match="torch.nn.Linear has two twins, 'Linear'.*'MyLinear'"):
            tnn.convert(torch.nn.Linear(2, 2))
    finally:
        torchbp.unregister_plugin(plugin)


def test_revert_gives_torch_classes_back() -> None:
    model = tnn.convert(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU()))
    tnn.revert(model)
    assert [type(m) for m in model] == [torch.nn.Linear, torch.nn.ReLU]
