"""torchbp.nn.registry: the twin registry fed by the torchbp_layers hook, convert(strict), conversion()."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator

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


@contextlib.contextmanager
def _plugin_answering(specs: Callable[[], list[torchbp.LayerSpec]]) -> Iterator[None]:
    """A plugin whose ``torchbp_layers()`` answers ``specs()``, registered for the ``with`` block."""

    class Plugin:
        @torchbp.hookimpl
        def torchbp_layers(self) -> list[torchbp.LayerSpec]:
            return specs()

    plugin = Plugin()
    torchbp.register_plugin(plugin)
    try:
        yield
    finally:
        torchbp.unregister_plugin(plugin)


class PReLUTwin(torch.nn.PReLU):
    """A twin class of the right kind, for specs whose other fields are wrong."""


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        (("", "d", torch.nn.PReLU, tnn.Tanh), "LayerSpec name: expected a non-empty str, got ''"),
        ((None, "d", torch.nn.PReLU, tnn.Tanh), "LayerSpec name: expected a non-empty str, got None"),
        (("PReLU", "d", "PReLU", tnn.Tanh), "'PReLU': module: expected a torch.nn.Module subclass, got 'PReLU'"),
        (("PReLU", "d", torch.nn.PReLU, tnn.Tanh), "twin: expected a subclass of torch.nn.modules.activation.PReLU"),
        (("PReLU", "d", torch.nn.PReLU, PReLUTwin, 42), "derivatives: expected None or a"),
        (("PReLU", "d", torch.nn.PReLU, PReLUTwin, dict), "derivatives: expected None or a"),
    ],
    ids=["empty name", "no name", "module a str", "twin not a subclass", "derivatives an int", "derivatives a dict"],
)
def test_a_malformed_layer_spec_skips_its_plugin_and_nothing_else(fields: tuple, match: str) -> None:
    with _plugin_answering(lambda: [torchbp.LayerSpec(*fields)]):  # the spec is built, and refused, in the hook
        with pytest.warns(torchbp.PluginWarning, match=match):
            model = tnn.convert(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.PReLU()))
        assert type(model[0]) is tnn.Linear and type(model[1]) is torch.nn.PReLU


def test_a_plugin_layer_named_like_a_built_in_leaves_both_in_use() -> None:
    # convert finds a twin by its torch class: a clash of names is a listing problem, not a reason
    # to leave torch.nn.Linear native
    with _plugin_answering(
        lambda: [torchbp.LayerSpec("Linear", "a PReLU twin under a taken name", torch.nn.PReLU, PReLUTwin)]
    ):
        model = tnn.convert(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.PReLU()), strict=True)
        assert type(model[0]) is tnn.Linear and type(model[1]) is PReLUTwin
        with pytest.warns(torchbp.PluginWarning, match="layer 'Linear' is provided by two plugins"):
            names = [entry.name for entry in torchbp.list_layers()]
        assert "Linear" not in names and "Conv2d" in names


def test_two_twins_for_one_torch_class_is_an_error_naming_both() -> None:
    with _plugin_answering(lambda: [torchbp.LayerSpec("MyLinear", "a second Linear", torch.nn.Linear, tnn.Linear)]):
        with pytest.raises(torchbp.PluginError, match="torch.nn.Linear has two twins, 'Linear'.*'MyLinear'"):
            tnn.convert(torch.nn.Linear(2, 2))


def test_revert_gives_torch_classes_back() -> None:
    model = tnn.convert(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU()))
    tnn.revert(model)
    assert [type(m) for m in model] == [torch.nn.Linear, torch.nn.ReLU]


class _Scaled(torch.nn.Module):
    """A user container with a buffer of its own and a child layer."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("scale", torch.tensor(2.0))
        self.linear = torch.nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self.linear(x)


def test_conversion_counts_torchbps_own_layers_and_plugin_twins_as_explicit() -> None:
    model = torch.nn.Sequential(tnn.Dense(3, 4), tnn.MLP([4, 3, 2]), Bilinear(2, 2, 1))
    plugin = _TwinPlugin()
    torchbp.register_plugin(plugin)
    try:
        tnn.convert(model)
        report = tnn.conversion(model)
    finally:
        torchbp.unregister_plugin(plugin)
    assert report.converted == {"0": "Dense", "1.layers.0": "Dense", "1.layers.1": "Dense", "2": "ExplicitBilinear"}
    assert report.native == {}


def test_conversion_reports_a_container_with_buffers_of_its_own_as_native() -> None:
    model = tnn.convert(torch.nn.Sequential(_Scaled(), torch.nn.Linear(2, 2)))
    report = tnn.conversion(model)
    assert report.native == {"0": "_Scaled"}
    assert report.converted == {"0.linear": "Linear", "1": "Linear"}
    assert str(report).splitlines()[0] == "explicit δ: 2 module(s); native: 1 module(s)"


def test_strict_convert_accepts_torchbps_own_layers_and_a_converted_model() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), tnn.Dense(4, 3), tnn.MLP([3, 2]))
    x = torch.randn(5, 3)
    expected = model(x)
    tnn.convert(model, strict=True)
    tnn.convert(model, strict=True)  # converting again changes nothing
    assert tnn.conversion(model).native == {}
    torch.testing.assert_close(model(x), expected)


def test_feedback_options_without_a_feedback_rule_are_refused() -> None:
    with pytest.raises(TypeError, match="options seed are a feedback rule's; pass feedback= too"):
        tnn.convert(torch.nn.Sequential(torch.nn.Linear(3, 2)), seed=1)


def test_revert_takes_the_feedback_rule_out_and_a_second_convert_runs_backprop() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).double()
    oracle = copy.deepcopy(model)
    tnn.convert(model, feedback="fa", seed=1)
    assert "0.feedback_weight" in model.state_dict()
    tnn.revert(model)
    assert model.state_dict().keys() == oracle.state_dict().keys()
    tnn.convert(model)
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    x_oracle = x.detach().clone().requires_grad_()
    model(x).sum().backward()
    oracle(x_oracle).sum().backward()
    torch.testing.assert_close(x.grad, x_oracle.grad)
