"""The plugin manager: built-ins through the hooks, entry points, run-time plugins, faults contained."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import torchbp
from torchbp import costs as builtin_costs
from torchbp import hookspecs
from torchbp import rules as builtin_rules


def _quarter_sum(a: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return 0.25 * ((a - y) ** 2).reshape(a.shape[0], -1).sum(1)


def _quarter_sum_gradient(a: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return 0.5 * (a - y)


def _sample(n: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(n, 2, dtype=dtype), torch.randn(n, 2, dtype=dtype)


class QuarterPlugin:
    @torchbp.hookimpl
    def torchbp_costs(self) -> list[torchbp.CostSpec]:
        return [torchbp.CostSpec("quarter", "¼‖a − y‖²", _quarter_sum, _quarter_sum_gradient, _sample)]


class ClashingPlugin:
    @torchbp.hookimpl
    def torchbp_costs(self) -> list[torchbp.CostSpec]:
        return [torchbp.CostSpec("mse", "another mse", _quarter_sum, _quarter_sum_gradient, _sample)]


class FailingPlugin:
    @torchbp.hookimpl
    def torchbp_rules(self) -> list[torchbp.RuleSpec]:
        raise RuntimeError("boom in the hook")


class MisspeltPlugin:
    @torchbp.hookimpl
    def torchbp_cost(self) -> list[torchbp.CostSpec]:
        return []


@pytest.fixture
def registered() -> Iterator[list[str]]:
    """Plugins registered during a test, unregistered after it."""
    names: list[str] = []
    yield names
    for name in names:
        torchbp.unregister_plugin(name)


def test_builtins_are_registered_through_the_hooks() -> None:
    manager = torchbp.get_plugin_manager()
    assert manager.get_plugin("torchbp.costs") is builtin_costs
    assert manager.get_plugin("torchbp.rules") is builtin_rules
    (entry,) = torchbp.list_costs("quadratic")
    assert (entry.kind, entry.plugin, entry.distribution, entry.version) == (
        "cost",
        "torchbp.costs",
        "torchbp",
        torchbp.__version__,
    )


def test_every_hookspec_is_documented() -> None:
    specs = [name for name in dir(hookspecs) if name.startswith("torchbp_")]
    assert specs
    for name in specs:
        assert len((getattr(hookspecs, name).__doc__ or "").strip()) > 80, name


@pytest.mark.parametrize(
    "kind, hook",
    [
        ("cost", "torchbp_costs"),
        ("rule", "torchbp_rules"),
        ("layer", "torchbp_layers"),
        ("feedback", "torchbp_feedback"),
    ],
)
def test_a_registry_hook_called_through_the_manager_answers_from_every_plugin(kind: str, hook: str) -> None:
    # what a plugin author gets from get_plugin_manager().hook: one list per plugin, none left out
    answers = getattr(torchbp.get_plugin_manager().hook, hook)()
    assert all(isinstance(answer, list) for answer in answers)
    names = sorted(spec.name for answer in answers for spec in answer)
    assert names == [entry.name for entry in torchbp.plugins.listing(kind)]


def test_register_at_run_time(registered: list[str]) -> None:
    registered.append(torchbp.register_plugin(QuarterPlugin(), name="quarter-plugin"))
    (entry,) = torchbp.list_costs("quarter")
    assert (entry.plugin, entry.distribution, entry.version) == ("quarter-plugin", None, None)
    a, y = torch.randn(3, 2, requires_grad=True), torch.randn(3, 2)
    torchbp.get_cost("quarter")(a, y).backward()
    torch.testing.assert_close(a.grad, 0.5 * (a - y).detach() / 3)


def test_unregister_removes_the_plugins_names() -> None:
    torchbp.register_plugin(QuarterPlugin(), name="quarter-plugin")
    torchbp.unregister_plugin("quarter-plugin")
    assert torchbp.list_costs("quarter") == []
    with pytest.raises(torchbp.PluginError, match="no plugin named 'quarter-plugin'; registered: .*torchbp.costs"):
        torchbp.unregister_plugin("quarter-plugin")


def test_a_name_provided_twice_is_an_error_naming_both(registered: list[str]) -> None:
    registered.append(torchbp.register_plugin(ClashingPlugin(), name="clash"))
    with pytest.raises(
        torchbp.PluginError,
        match=r"cost 'mse' is provided by two plugins, 'torchbp.costs' \(torchbp .*\) "
        r"and 'clash' \(registered at run time\)",
    ):
        torchbp.get_cost("mse")
    with pytest.warns(torchbp.PluginWarning, match="'mse' is provided by two plugins"):
        names = [entry.name for entry in torchbp.list_costs()]
    assert "mse" not in names and "quadratic" in names
    assert torchbp.get_cost("quadratic") is not None  # the other costs keep working


def test_a_plugin_raising_in_a_hook_is_named_and_skipped(registered: list[str]) -> None:
    registered.append(torchbp.register_plugin(FailingPlugin(), name="failing"))
    with pytest.warns(
        torchbp.PluginWarning, match=r"'failing' raised in torchbp_rules\(\).*RuntimeError: boom in the hook"
    ):
        names = [entry.name for entry in torchbp.list_rules()]
    assert "sgd" in names


class RaisingTrainingPlugin:
    def __init__(self, hook: str) -> None:
        self.hook = hook

    @torchbp.hookimpl
    def torchbp_train_start(self, run: object) -> None:
        self._maybe("torchbp_train_start")

    @torchbp.hookimpl
    def torchbp_step_end(self, run: object, epoch: int, step: int) -> None:
        self._maybe("torchbp_step_end")

    @torchbp.hookimpl
    def torchbp_epoch_end(self, run: object, epoch: int, metrics: dict) -> None:
        self._maybe("torchbp_epoch_end")

    @torchbp.hookimpl
    def torchbp_train_end(self, run: object, history: list) -> None:
        self._maybe("torchbp_train_end")

    def _maybe(self, hook: str) -> None:
        if hook == self.hook:
            raise KeyError(f"broken logger in {hook}")


@pytest.mark.parametrize("hook", ["torchbp_train_start", "torchbp_step_end", "torchbp_epoch_end", "torchbp_train_end"])
def test_a_training_hook_that_raises_names_the_plugin(registered: list[str], hook: str, tmp_path: Path) -> None:
    registered.append(torchbp.register_plugin(RaisingTrainingPlugin(hook), name="my-logger"))
    data = torchbp.training.load("xor")
    with pytest.raises(torchbp.PluginError) as raised:
        torchbp.fit(torchbp.nn.MLP([2, 3, 2]), (data.inputs[:20], data.targets[:20]), epochs=1, verbose=False)
    assert str(raised.value) == (
        f"torchbp plugin 'my-logger' (registered at run time) raised in {hook}(): KeyError: 'broken logger in {hook}'"
    )
    assert isinstance(raised.value.__cause__, KeyError)


def test_a_misspelt_hook_is_refused() -> None:
    with pytest.raises(torchbp.PluginError, match="torchbp_cost"):
        torchbp.register_plugin(MisspeltPlugin(), name="misspelt")
    assert torchbp.get_plugin_manager().get_plugin("misspelt") is None


def test_a_name_cannot_be_registered_twice(registered: list[str]) -> None:
    registered.append(torchbp.register_plugin(QuarterPlugin(), name="quarter-plugin"))
    with pytest.raises(torchbp.PluginError) as raised:
        torchbp.register_plugin(QuarterPlugin(), name="quarter-plugin")
    assert str(raised.value) == (
        "cannot register plugin 'quarter-plugin': that name is taken; choose another or unregister it first"
    )


class OneSpecPlugin:
    @torchbp.hookimpl
    def torchbp_rules(self) -> torchbp.RuleSpec:  # one spec where a list is expected
        return torchbp.RuleSpec("one-sgd", "plain SGD", torch.optim.SGD)


def test_a_hook_answering_one_spec_instead_of_a_list_is_named(registered: list[str]) -> None:
    registered.append(torchbp.register_plugin(OneSpecPlugin(), name="one-spec"))
    with pytest.warns(torchbp.PluginWarning, match="'one-spec' .*expected a list of RuleSpec, got one RuleSpec"):
        names = [entry.name for entry in torchbp.list_rules()]
    assert "sgd" in names and "one-sgd" not in names


def _python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-W", "always", "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_extras_are_found_through_their_entry_point_not_by_import() -> None:
    result = _python(
        """
        import sys, torchbp
        assert "torchbp_extras" not in sys.modules
        for kind, entries in (("cost", torchbp.list_costs()), ("rule", torchbp.list_rules())):
            for e in entries:
                print(kind, e.name, e.plugin, e.distribution, e.version)
        print([dist.project_name for _, dist in torchbp.get_plugin_manager().list_plugin_distinfo()])
        """
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for name in ("huber", "smooth_l1", "log_cosh", "multi_margin"):
        assert f"cost {name} extras torchbp-extras 0.1.0" in lines
    for name in ("adadelta", "adamax", "lion"):
        assert f"rule {name} extras torchbp-extras 0.1.0" in lines
    disabled = _python(
        "import torchbp; print(sorted(e.name for e in torchbp.list_costs()))",
        {"TORCHBP_DISABLE_PLUGIN_AUTOLOAD": "1"},
    )
    assert "huber" not in disabled.stdout and "quadratic" in disabled.stdout


@pytest.mark.parametrize(("value", "loaded"), [("", True), ("0", True), ("1", False), ("yes", False)])
def test_the_autoload_variable_turns_entry_points_off_unless_empty_or_0(
    monkeypatch: pytest.MonkeyPatch, value: str, loaded: bool
) -> None:
    monkeypatch.setenv("TORCHBP_DISABLE_PLUGIN_AUTOLOAD", value)
    manager = torchbp.plugins._Plugins().manager  # a fresh manager, as a new process makes it
    assert manager.has_plugin("extras") is loaded
    assert manager.has_plugin("torchbp.costs")


def test_a_broken_entry_point_is_named_and_the_rest_keep_working(tmp_path: Path) -> None:
    dist_info = tmp_path / "broken_plugin-1.2.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.2\n")
    (dist_info / "entry_points.txt").write_text("[torchbp]\nbroken = no_such_module_anywhere\n")
    result = _python(
        "import torchbp; print(sorted(e.name for e in torchbp.list_costs()))",
        {"PYTHONPATH": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    assert "PluginWarning" in result.stderr
    assert "'broken' (no_such_module_anywhere, from broken-plugin 1.2)" in result.stderr
    assert "ModuleNotFoundError" in result.stderr
    assert "'huber'" in result.stdout and "'quadratic'" in result.stdout


def test_hook_tracing_from_the_environment() -> None:
    result = _python("import torchbp; torchbp.list_costs()", {"TORCHBP_TRACE_HOOKS": "1"})
    assert result.returncode == 0, result.stderr
    assert "torchbp_costs" in result.stderr


def test_cli_lists_plugins_with_providers(capsys: pytest.CaptureFixture[str]) -> None:
    from torchbp.cli import main

    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["kind", "name", "plugin", "distribution", "options"]
    assert any(line.split()[:4] == ["rule", "sgd", "torchbp.rules", "torchbp"] for line in out.splitlines())
    assert any(line.split()[:4] == ["cost", "huber", "extras", "torchbp-extras"] for line in out.splitlines())
    assert main(["plugins", "--kind", "rule", "--pattern", "adam*"]) == 0
    names = [line.split()[1] for line in capsys.readouterr().out.splitlines()[1:]]
    assert names == ["adam", "adamax", "adamw"]
