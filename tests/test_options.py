"""torchbp.options: cost and rule option values read by their declared types, range checks included."""

from __future__ import annotations

import math

import pytest
import torch

import torchbp
from torchbp.options import declared, parse_option
from torchbp.registry import cost_options, rule_options


@pytest.mark.parametrize("text", ["false", "False", "FALSE", "no", "No", "0", " no "])
def test_false_booleans_switch_the_option_off(text: str) -> None:
    assert rule_options("adam", {"amsgrad": text}) == {"amsgrad": False}
    assert rule_options("sgd", {"nesterov": text, "momentum": "0.9"}) == {"nesterov": False, "momentum": 0.9}
    assert cost_options("quadratic", {"halved": text}) == {"halved": False}


@pytest.mark.parametrize("text", ["true", "True", "YES", "yes", "1"])
def test_true_booleans_switch_the_option_on(text: str) -> None:
    assert rule_options("adam", {"amsgrad": text}) == {"amsgrad": True}
    assert cost_options("quadratic", {"halved": text}) == {"halved": True}


def test_a_false_option_changes_the_numbers() -> None:
    a, y = torch.tensor([[2.0]]), torch.tensor([[0.0]])
    assert torchbp.get_cost("quadratic", halved="no")(a, y).item() == 4.0
    assert torchbp.get_cost("quadratic", halved="yes")(a, y).item() == 2.0


@pytest.mark.parametrize(
    "kind, name, option, value, words",
    [
        ("rule", "adam", "amsgrad", "maybe", ["rule 'adam'", "amsgrad", "a bool", "'maybe'"]),
        ("rule", "sgd", "momentum", "abc", ["rule 'sgd'", "momentum", "a finite float", "'abc'"]),
        ("rule", "sgd", "nesterov", 1, ["nesterov", "a bool", "1"]),
        ("rule", "adam", "betas", "0.9", ["betas", "a pair", "[0.9, 0.999]"]),
        ("rule", "adam", "betas", "[0.9, x]", ["betas[1]", "a finite float"]),
        ("cost", "quadratic", "halved", "nope", ["cost 'quadratic'", "halved", "a bool", "'nope'"]),
        ("cost", "cross_entropy", "label_smoothing", "lots", ["label_smoothing", "a finite float", "'lots'"]),
    ],
)
def test_values_that_do_not_parse_name_the_option_and_its_type(
    kind: str, name: str, option: str, value: object, words: list[str]
) -> None:
    parse = rule_options if kind == "rule" else cost_options
    with pytest.raises(ValueError) as error:
        parse(name, {option: value})
    for word in words:
        assert word in str(error.value)


def test_pairs_parse_from_toml_lists_and_commas() -> None:
    assert rule_options("adam", {"betas": "[0.8, 0.99]"}) == {"betas": (0.8, 0.99)}
    assert rule_options("adam", {"betas": "0.8,0.99"}) == {"betas": (0.8, 0.99)}
    assert rule_options("adam", {"betas": [0.8, 1]}) == {"betas": (0.8, 1.0)}


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", math.inf, math.nan])
def test_non_finite_hyperparameters_are_refused(value: object) -> None:
    with pytest.raises(ValueError, match="momentum must be finite"):
        rule_options("sgd", {"momentum": value})
    with pytest.raises(ValueError, match="finite"):
        torchbp.create_rule("sgd", torch.nn.Linear(2, 1), lr=value)
    with pytest.raises(ValueError, match="delta must be finite"):
        torchbp.get_cost("huber", delta=value)


@pytest.mark.parametrize(
    "name, options, words",
    [
        ("huber", {"delta": 0.0}, ["cost 'huber'", "delta", "> 0", "0.0"]),
        ("huber", {"delta": -1.0}, ["delta", "> 0", "-1.0"]),
        ("smooth_l1", {"beta": -0.5}, ["cost 'smooth_l1'", "beta", ">= 0", "-0.5"]),
        ("cross_entropy", {"label_smoothing": 1.5}, ["label_smoothing", "[0, 1]", "1.5"]),
        ("cross_entropy", {"label_smoothing": -0.1}, ["label_smoothing", "[0, 1]", "-0.1"]),
    ],
)
def test_cost_options_out_of_range_fail_when_the_cost_is_built(name: str, options: dict, words: list[str]) -> None:
    with pytest.raises(ValueError) as error:
        torchbp.get_cost(name, **options)
    for word in words:
        assert word in str(error.value)


def test_huber_below_its_range_would_train_to_a_negative_cost() -> None:
    # why delta <= 0 is refused: the value goes negative, which no cost may
    a, y = torch.tensor([[3.0]]), torch.tensor([[0.0]])
    huber = torchbp.get_cost("huber", delta=0.5)
    assert huber(a, y).item() == pytest.approx(torch.nn.functional.huber_loss(a, y, delta=0.5).item())
    with pytest.raises(RuntimeError):
        torch.nn.functional.huber_loss(a, y, delta=-1.0)  # torch refuses it too


@pytest.mark.parametrize(
    "rule, options, words",
    [
        ("sgd", {"momentum": -0.1}, ["momentum", ">= 0", "-0.1"]),
        ("sgd", {"weight_decay": -1.0}, ["weight_decay", ">= 0"]),
        ("adam", {"betas": (0.9, 1.0)}, ["betas[1]", "< 1.0", "1.0"]),
        ("adam", {"eps": -1e-8}, ["eps", ">= 0"]),
        ("rmsprop", {"alpha": -0.5}, ["alpha", ">= 0"]),
        ("adagrad", {"lr_decay": -1.0}, ["lr_decay", ">= 0"]),
        ("adadelta", {"rho": 1.5}, ["rho", "1.5"]),
        ("adamax", {"betas": (1.0, 0.9)}, ["betas[0]", "< 1.0"]),
        ("lion", {"betas": (0.9, -0.1)}, ["betas[1]", ">= 0"]),
    ],
)
def test_rule_options_out_of_range_are_refused_as_torch_does(rule: str, options: dict, words: list[str]) -> None:
    with pytest.raises(ValueError) as error:
        torchbp.create_rule(rule, torch.nn.Linear(2, 1), lr=0.1, **options)
    for word in words:
        assert word in str(error.value)


def test_a_rule_built_directly_refuses_text_and_infinities() -> None:
    from torchbp.rules import SGD

    with pytest.raises(TypeError, match=r"momentum: expected a real number, got 'abc' \(str\)"):
        SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1, momentum="abc")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lr: expected a finite value, got inf"):
        SGD(torch.nn.Linear(2, 1).parameters(), lr=math.inf)


def test_a_torch_optim_class_as_rule_reads_options_by_its_annotations() -> None:
    spec = torchbp.RuleSpec("torch_sgd_for_options", "torch.optim.SGD itself", torch.optim.SGD)

    class Plugin:
        @torchbp.hookimpl
        def torchbp_rules(self) -> list[torchbp.RuleSpec]:
            return [spec]

    name = torchbp.register_plugin(Plugin())
    try:
        # momentum: float = 0 (an int default, a float annotation); nesterov: bool; foreach: Optional[bool]
        parsed = rule_options("torch_sgd_for_options", {"momentum": "0.9", "nesterov": "yes", "foreach": "no"})
        assert parsed == {"momentum": 0.9, "nesterov": True, "foreach": False}
    finally:
        torchbp.unregister_plugin(name)


@pytest.mark.parametrize(
    "annotation, default, text, expected",
    [
        (int | float, 1, "0.5", 0.5),  # a union with float reads a real number, not an int
        (float | int | None, None, "2", 2.0),
        (float, None, None, None),  # a None default makes the option optional
        (None, (1, 2), "[0.5, 3]", (0.5, 3.0)),  # a pair of int defaults reads real numbers
        (tuple[float, float], None, "0.25, 0.5", (0.25, 0.5)),
    ],
    ids=["int or float", "float, int or None", "float defaulting to None", "pair of int defaults", "annotated pair"],
)
def test_an_option_is_read_as_its_declared_type(
    annotation: object, default: object, text: object, expected: object
) -> None:
    value = parse_option("rule 'x'", "option", text, declared(annotation, default))
    assert value == expected and type(value) is type(expected)
    if isinstance(expected, tuple):
        assert [type(v) for v in value] == [float] * len(expected)


@pytest.mark.parametrize("betas", ["[0.9]", "[0.9, 0.99, 0.5]", (0.9,), [0.9, 0.99, 0.5]], ids=repr)
def test_a_pair_with_one_or_three_values_is_refused(betas: object) -> None:
    with pytest.raises(ValueError, match=r"option betas expects a pair like \[0.9, 0.999\]"):
        rule_options("adam", {"betas": betas})
