"""``torchbp train``: defaults, options, TOML config, resume, and errors."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import torch

from torchbp.cli import build_parser, main, resolve_config
from torchbp.training import load_checkpoint


def test_default_run_reaches_95_percent_on_digits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--logdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("epoch")]
    assert len(lines) == 30
    accuracy = float(lines[-1].split("val acc")[1].split("%")[0])
    assert accuracy >= 95.0
    assert f"tensorboard --logdir {tmp_path / 'digits'}" in out  # by its path when not on PATH
    config = tomllib.loads((tmp_path / "digits" / "version_0" / "config.toml").read_text())
    assert config["layers"] == [64, 30, 10] and config["lr"] == 3.0 and config["cost"] == "quadratic"


def test_options_and_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = tmp_path / "run.toml"
    settings.write_text('dataset = "moons"\nepochs = 2\nrule = "sgd"\nlr = 0.5\n[rule_options]\nmomentum = 0.9\n')
    argv = [
        "train",
        "--config",
        str(settings),
        "--layers",
        "2,8,2",
        "--activation",
        "tanh",
        "--cost",
        "cross_entropy",
        "--output-activation",
        "identity",
        "--logdir",
        str(tmp_path),
        "--rule-option",
        "nesterov=true",
    ]
    assert main(argv) == 0
    config = tomllib.loads((tmp_path / "moons" / "version_0" / "config.toml").read_text())
    assert config["dataset"] == "moons" and config["epochs"] == 2 and config["activation"] == "tanh"
    assert config["rule_options"] == {"momentum": 0.9, "nesterov": True}
    assert "2 epochs" in capsys.readouterr().out


def test_resume_continues_and_may_extend(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--dataset", "xor", "--layers", "2,6,2", "--epochs", "2", "--logdir", str(tmp_path)]) == 0
    directory = tmp_path / "xor" / "version_0"
    assert main(["train", "--resume", str(directory), "--epochs", "3"]) == 0
    assert "resuming at epoch 3" in capsys.readouterr().out
    assert load_checkpoint(directory)["epoch"] == 2
    assert main(["train", "--resume", str(directory), "--lr", "1"]) == 2
    assert "only --epochs and --device may change, got --lr" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--layers", "3,4"], ["--layers", "64 inputs and 10 outputs", "3,4"]),
        (["--layers", "64,30,5"], ["--layers", "64 inputs and 10 outputs", "64,30,5"]),
        (["--layers", "3,30,10"], ["--layers", "64 inputs and 10 outputs", "3,30,10"]),
        (["--dataset", "mnist"], ["--data-dir"]),
        (["--rule", "adam", "--rule-option", "momentum=0.9"], ["unknown hyperparameter", "momentum"]),
        (["--cost", "nope"], ["unknown cost 'nope'"]),
        (["--resume", "/nonexistent/run"], ["no config.toml there"]),
    ],
)
def test_errors_are_explained(argv: list[str], words: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--no-log", *argv]) == 2
    err = capsys.readouterr().err
    for word in words:
        assert word in err


def test_bad_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = tmp_path / "run.toml"
    settings.write_text("learning_rate = 3\n")
    assert main(["train", "--config", str(settings), "--no-log"]) == 2
    assert "unknown key(s) learning_rate" in capsys.readouterr().err


def test_lenet_reaches_97_percent_on_digits(tmp_path: Path, capsys: pytest.CaptureFixture[str], device: str) -> None:
    assert main(["train", "--model", "lenet", "--no-log", "--device", device]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch")]
    assert len(lines) == 60  # lenet's own defaults, not the MLP's
    accuracy = float(lines[-1].split("val acc")[1].split("%")[0])
    assert accuracy >= 97.0


def test_lenet_run_records_its_model_and_resumes_as_lenet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--model", "lenet", "--epochs", "1", "--logdir", str(tmp_path)]) == 0
    run = tmp_path / "digits" / "version_0"
    config = tomllib.loads((run / "config.toml").read_text())
    assert config["model"] == "lenet" and config["cost"] == "cross_entropy" and config["batch_size"] == 16
    assert "activation" not in config and "layers" not in config  # the MLP's settings do not apply
    assert "0.weight" not in load_checkpoint(run)["model"] and "1.weight" in load_checkpoint(run)["model"]
    assert main(["train", "--resume", str(run), "--epochs", "2"]) == 0
    assert load_checkpoint(run)["epoch"] == 1
    capsys.readouterr()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "lenet", "--layers", "64,30,10"], "--layers: sets the MLP of --model mlp"),
        (["--model", "lenet", "--activation", "tanh"], "--activation: sets the MLP of --model mlp"),
        (["--model", "lenet", "--dataset", "moons"], "needs square one-channel images of at least 4×4 pixels"),
    ],
)
def test_lenet_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--no-log", *argv]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "options, recorded",
    [
        (["--rule", "adam", "--rule-option", "amsgrad=False"], {"rule_options": {"amsgrad": False}}),
        (
            ["--rule-option", "momentum=0.5", "--rule-option", "nesterov=no"],
            {"rule_options": {"momentum": 0.5, "nesterov": False}},
        ),
        (["--cost-option", "halved=NO"], {"cost_options": {"halved": False}}),
        (["--rule", "adam", "--rule-option", "betas=[0.8,0.9]"], {"rule_options": {"betas": [0.8, 0.9]}}),
        (["--rule-option", "momentum=1"], {"rule_options": {"momentum": 1.0}}),
    ],
)
def test_option_values_are_parsed_by_type_and_recorded_typed(
    tmp_path: Path, options: list[str], recorded: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "--dataset", "xor", "--epochs", "1", "--lr", "0.1", "--logdir", str(tmp_path), *options]
    assert main(argv) == 0
    config = tomllib.loads((tmp_path / "xor" / "version_0" / "config.toml").read_text())
    for table, values in recorded.items():
        assert config[table] == values
        for key, value in values.items():
            assert type(config[table][key]) is type(value)
    capsys.readouterr()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--rule-option", "momentum=abc"], "rule 'sgd': option momentum expects a finite float, got 'abc'"),
        (["--rule", "adam", "--rule-option", "amsgrad=maybe"], "option amsgrad expects a bool (true/false/yes/no/1/0)"),
        (["--cost-option", "halved=2"], "cost 'quadratic': option halved expects a bool"),
        (["--lr", "inf"], "lr: expected a finite float >= 0, got inf"),
        (["--lr", "nan"], "lr: expected a finite float >= 0, got nan"),
        (["--rule-option", "momentum=inf"], "momentum must be finite"),
        (["--name", "../elsewhere"], "name: expected a plain directory name"),
        (["--name", "a/b"], "name: expected a plain directory name"),
        (["--cost", "cross_entropy", "--dataset", "csv", "--data-file", "."], "expected a CSV file, got the directory"),
        (["--lr-schedule", "step", "--lr-schedule-option", "step_size=0"], "option step_size expects a value >= 1"),
        (["--lr-schedule", "step", "--lr-schedule-option", "gamma=-1"], "option gamma expects a value > 0"),
        (["--lr-schedule", "cosine", "--lr-schedule-option", "T_max=0"], "option T_max expects a value >= 1"),
        (["--lr-schedule", "plateau", "--lr-schedule-option", "factor=1.5"], "option factor expects a value in [0, 1)"),
        (["--lr-schedule-option", "step_size=3"], "without a schedule: choose one with --lr-schedule"),
        (["--rule-option", "lr=-1"], "rule option lr=-1: the learning rate is set with --lr"),
        (["--restore-best"], "restore_best: the best epoch's weights are kept by early stopping; give patience"),
    ],
)
def test_bad_values_are_refused_before_training(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--dataset", "xor", "--epochs", "1", "--logdir", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not list(tmp_path.glob("*/version_*"))


def test_a_run_saved_with_settings_now_refused_for_new_runs_still_resumes(tmp_path: Path) -> None:
    # restore_best without patience, and schedule options without a schedule, were once accepted and
    # ignored; a run saved so resumes as it was saved
    assert main(["train", "--dataset", "xor", "--epochs", "1", "--logdir", str(tmp_path)]) == 0
    run = tmp_path / "xor" / "version_0"
    config = run / "config.toml"
    text = config.read_text().replace("restore_best = false", "restore_best = true")
    config.write_text(text.replace("[lr_schedule_options]\n", "[lr_schedule_options]\nstep_size = 3\n"))
    checkpoint = torch.load(run / "checkpoint.pt", weights_only=True)
    checkpoint["config"].update(restore_best=True, lr_schedule_options={"step_size": 3})
    torch.save(checkpoint, run / "checkpoint.pt")
    assert main(["train", "--resume", str(run), "--epochs", "2"]) == 0


def test_resume_with_an_invalid_device_in_its_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--dataset", "xor", "--epochs", "1", "--logdir", str(tmp_path)]) == 0
    run = tmp_path / "xor" / "version_0"
    config = run / "config.toml"
    config.write_text(config.read_text().replace('device = "auto"', 'device = "tpu"'))
    assert main(["train", "--resume", str(run), "--epochs", "2"]) == 2
    err = capsys.readouterr().err
    assert "device: expected 'cpu', 'cuda', 'cuda:N', 'mps', 'auto' or a torch.device, got 'tpu'" in err


def _resolved(argv: list[str]) -> dict:
    return resolve_config(build_parser().parse_args(["train", *argv]))


@pytest.mark.parametrize(
    "settings, options, expected",
    [
        ('model = "lenet"\n', [], {"model": "lenet", "cost": "cross_entropy", "lr": 0.005, "batch_size": 16}),
        ('model = "lenet"\nlr = 0.05\n', [], {"model": "lenet", "cost": "cross_entropy", "lr": 0.05, "epochs": 60}),
        (
            'model = "lenet"\nepochs = 3\n',
            ["--epochs", "5"],
            {"epochs": 5, "rule_options": {"momentum": 0.9, "nesterov": True, "weight_decay": 1e-3}},
        ),
        ("lr = 0.5\n", ["--model", "lenet"], {"model": "lenet", "lr": 0.5, "cost": "cross_entropy"}),
        (
            "[rule_options]\nmomentum = 0.5\n",
            ["--rule-option", "nesterov=yes"],
            {"rule_options": {"momentum": 0.5, "nesterov": "yes"}},
        ),
    ],
    ids=["lenet-defaults", "file-over-lenet", "command-line-over-file", "model-from-command-line", "options-merged"],
)
def test_config_file_model_and_options_resolve_in_order(
    tmp_path: Path, settings: str, options: list[str], expected: dict
) -> None:
    """Defaults, then the model's defaults (its model named in the file or on the command line), then the file,
    then the command line."""
    path = tmp_path / "run.toml"
    path.write_text(settings)
    config = _resolved(["--config", str(path), *options])
    assert {key: config[key] for key in expected} == expected


def test_resume_may_change_the_device(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--dataset", "xor", "--layers", "2,4,2", "--epochs", "1", "--logdir", str(tmp_path)]) == 0
    run = tmp_path / "xor" / "version_0"
    config = run / "config.toml"
    config.write_text(config.read_text().replace('device = "auto"', 'device = "tpu"'))  # a machine without it
    assert main(["train", "--resume", str(run), "--epochs", "2", "--device", "cpu"]) == 0
    assert load_checkpoint(run)["epoch"] == 1
    capsys.readouterr()


def test_no_validation_split_trains_on_everything(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["train", "--dataset", "xor", "--layers", "2,4,2", "--epochs", "1", "--val-fraction", "0", "--no-log"]
    assert main(argv) == 0
    (line,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch")]
    assert "train loss" in line and "val" not in line


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--layers", "64", "expected at least two positive widths, got '64'"),
        ("--layers", "64,0,10", "expected at least two positive widths, got '64,0,10'"),
        ("--layers", "64,x,10", "expected comma-separated widths like 64,30,10, got '64,x,10'"),
        ("--rule-option", "=0.9", "expected KEY=VALUE, got '=0.9'"),
        ("--rule-option", " =0.9", "expected KEY=VALUE, got ' =0.9'"),
        ("--cost-option", "halved", "expected KEY=VALUE, got 'halved'"),
    ],
)
def test_malformed_option_values_are_refused_by_the_parser(
    option: str, value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--no-log", option, value])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err
