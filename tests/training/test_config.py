"""Run configurations: a TOML file's values checked against the defaults' types, and written back as TOML."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from torchbp.training.config import DEFAULTS, dump_config, load_config


@pytest.mark.parametrize(
    "line, key, value",
    [("lr = 3", "lr", 3.0), ("val_fraction = 0", "val_fraction", 0.0), ("epochs = 7", "epochs", 7)],
)
def test_an_int_where_a_float_is_expected_is_read_as_a_float(
    tmp_path: Path, line: str, key: str, value: object
) -> None:
    path = tmp_path / "run.toml"
    path.write_text(line + "\n")
    config = load_config(path)
    assert config == {key: value} and type(config[key]) is type(DEFAULTS[key])


@pytest.mark.parametrize(
    "line, key, shown",
    [
        ("epochs = true", "epochs", "True"),
        ("seed = false", "seed", "False"),
        ("lr = true", "lr", "True"),
        ('layers = "64,30,10"', "layers", "'64,30,10'"),
        ("restore_best = 1", "restore_best", "1"),
    ],
)
def test_a_value_of_another_type_is_refused_naming_the_key(tmp_path: Path, line: str, key: str, shown: str) -> None:
    path = tmp_path / "run.toml"
    path.write_text(line + "\n")
    with pytest.raises(ValueError) as raised:
        load_config(path)
    expected = type(DEFAULTS[key]).__name__
    assert str(raised.value) == f"{path}: {key} must be a {expected}, got {shown}"


@pytest.mark.parametrize(
    "value",
    ['say "hi"', "C:\\data\\x.csv", 'a\\"b', "trailing\\", "plain"],
    ids=["quotes", "backslashes", "escaped-quote", "trailing-backslash", "plain"],
)
def test_strings_survive_a_round_trip_through_toml(value: str) -> None:
    config = {"name": value, "target": value}
    assert tomllib.loads(dump_config(config)) == config


def test_dump_config_round_trips_every_kind_of_value() -> None:
    config = {
        **DEFAULTS,
        "restore_best": True,
        "layers": [64, 30, 10],
        "lr": 0.5,
        "rule_options": {"momentum": 0.9, "nesterov": False, "betas": [0.8, 0.99]},
        "cost_options": {"halved": True},
    }
    text = dump_config(config)
    assert tomllib.loads(text) == config
    assert "restore_best = true\n" in text and "[rule_options]\nmomentum = 0.9\nnesterov = false\n" in text


@pytest.mark.parametrize(
    "value",
    ["two\nlines", "tab\there", "carriage\rreturn", "bell\x07", "delete\x7f", "naïve ✓"],
    ids=["newline", "tab", "carriage-return", "control", "delete", "unicode"],
)
def test_control_characters_survive_a_round_trip_through_toml(value: str) -> None:
    # a run named on the command line, or a CSV column, may hold them; the run's config.toml must stay readable
    config = {"name": value, "rule_options": {"note": value}}
    assert tomllib.loads(dump_config(config)) == config
