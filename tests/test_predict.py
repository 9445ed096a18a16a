"""load_model and `torchbp predict`: the trained model back out of its run directory."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import torchbp
from torchbp.cli import main
from torchbp.predict import predict_csv, read_inputs
from torchbp.training import load
from torchbp.training.checkpoints import save_checkpoint
from torchbp.training.config import dump_config


class Keep:
    """The model a run trained, as it was when training ended."""

    def __init__(self) -> None:
        self.model: torch.nn.Module | None = None

    @torchbp.hookimpl
    def torchbp_train_end(self, run) -> None:
        self.model = run.model


def _train(argv: list[str]) -> torch.nn.Module:
    keep = Keep()
    name = torchbp.register_plugin(keep, name="keep-the-model")
    try:
        assert main(["train", *argv]) == 0
    finally:
        torchbp.unregister_plugin(name)
    assert keep.model is not None
    return keep.model.eval()


@pytest.mark.parametrize("model", ["mlp", "lenet"])
def test_load_model_gives_the_trained_model(tmp_path: Path, model: str, capsys: pytest.CaptureFixture[str]) -> None:
    trained = _train(["--model", model, "--epochs", "1", "--val-fraction", "0.9", "--logdir", str(tmp_path)])
    loaded = torchbp.load_model(tmp_path / "digits" / "version_0")
    assert not loaded.training and type(loaded) is type(trained)
    x = load("digits").inputs[:50]
    with torch.no_grad():
        assert torch.equal(loaded(x), trained(x))
    capsys.readouterr()


def test_load_model_into_your_own_module(tmp_path: Path) -> None:
    data = load("digits")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 10), torch.nn.Sigmoid())
    torchbp.fit(model, (data.inputs[:100], data.targets[:100]), epochs=1, logdir=tmp_path, verbose=False)
    run = tmp_path / "torchbp-run" / "version_0"
    with pytest.raises(
        ValueError, match="does not say which model was trained.*load_model\\(run_dir, model=MyNet\\(\\)\\)"
    ):
        torchbp.load_model(run)
    loaded = torchbp.load_model(run, torch.nn.Sequential(torch.nn.Linear(64, 10), torch.nn.Sigmoid()))
    assert torch.equal(loaded(data.inputs[:5]), model(data.inputs[:5]))
    with pytest.raises(ValueError, match="the checkpoint's weights do not fit Sequential"):
        torchbp.load_model(run, torch.nn.Sequential(torch.nn.Linear(64, 3)))


def test_predict_prints_one_class_per_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trained = _train(["--epochs", "2", "--logdir", str(tmp_path)])
    data = load("digits")
    rows = data.inputs[:7]
    with_target = tmp_path / "with-target.csv"
    header = ",".join(f"p{i}" for i in range(64))
    with_target.write_text(f"{header},label\n" + "".join(",".join(map(str, r.tolist())) + ",3\n" for r in rows))
    features_only = tmp_path / "features.csv"
    features_only.write_text(f"{header}\n" + "".join(",".join(map(str, r.tolist())) + "\n" for r in rows))
    expected = "prediction\n" + "".join(f"{c}\n" for c in trained(rows).argmax(-1).tolist())
    capsys.readouterr()
    for path in (with_target, features_only):
        assert main(["predict", str(tmp_path / "digits" / "version_0"), "--data-file", str(path)]) == 0
        assert capsys.readouterr().out == expected


def test_predict_prints_values_for_a_regression_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(0)
    x = torch.rand(60, 2)
    y = 0.3 * x[:, :1] + 0.5 * x[:, 1:]
    train = tmp_path / "train.csv"
    train.write_text("a,b,y\n" + "".join(f"{a},{b},{t}\n" for (a, b), (t,) in zip(x.tolist(), y.tolist())))
    argv = ["--dataset", "csv", "--data-file", str(train), "--layers", "2,4,1", "--output-activation", "identity"]
    trained = _train([*argv, "--activation", "tanh", "--lr", "0.1", "--epochs", "3", "--logdir", str(tmp_path)])
    query = tmp_path / "query.csv"
    query.write_text("a,b\n0.1,0.2\n0.9,0.4\n")
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "csv" / "version_0"), "--data-file", str(query)]) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = trained(torch.tensor([[0.1, 0.2], [0.9, 0.4]])).squeeze(1).tolist()
    assert lines[0] == "prediction" and [float(v) for v in lines[1:]] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(
    "contents, message",
    [
        ("a,b,c,d\n1,2,3,4\n", "the model takes 2 input columns, the file has 4"),
        ("a,b\n1,x\n", "line 2: every input column must be numeric"),
        ("a,b\n1,2\n3\n", "line 3: expected 2 fields like the header, got 1"),
    ],
)
def test_predict_errors_are_explained(
    tmp_path: Path, contents: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _train(["--dataset", "xor", "--layers", "2,4,2", "--epochs", "1", "--logdir", str(tmp_path)])
    query = tmp_path / "query.csv"
    query.write_text(contents)
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "xor" / "version_0"), "--data-file", str(query)]) == 2
    assert message in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "nowhere"), "--data-file", str(query)]) == 2
    assert "no config.toml there" in capsys.readouterr().err


def _run_directory(tmp_path: Path, model: torchbp.nn.MLP, **config: object) -> Path:
    """A run directory as torchbp train leaves it, written by hand: its config.toml and checkpoint."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_text(dump_config({"model": "mlp", **config}))
    payload = {"epoch": 0, "model": model.state_dict(), "rule": {}, "history": [], "rng": {}, "config": {}}
    save_checkpoint(run, payload)
    return run


@pytest.mark.parametrize("classes", [0, 2], ids=["values", "classes"])
@pytest.mark.parametrize("header", ["y,a,b,c", "a,y,b,c", "a,b,c,y", "a,b,c"])
def test_predict_reads_the_input_columns_around_the_target(tmp_path: Path, classes: int, header: str) -> None:
    torch.manual_seed(0)
    model = torchbp.nn.MLP([3, 4, 2], "tanh", "identity")
    run = _run_directory(
        tmp_path,
        model,
        layers=[3, 4, 2],
        activation="tanh",
        output_activation="identity",
        inputs=3,
        classes=classes,
        target="y",
    )
    x = torch.tensor([[0.1, -0.2, 0.3], [1.5, 0.25, -2.0], [0.0, 4.0, 1.0]])
    columns = header.split(",")
    rows = [",".join("7" if c == "y" else str(row["abc".index(c)]) for c in columns) for row in x.tolist()]
    query = tmp_path / "query.csv"
    query.write_text(header + "\n" + "\n".join(rows) + "\n")
    with torch.no_grad():
        outputs = model(x)
    if classes:
        expected = "prediction\n" + "".join(f"{c}\n" for c in outputs.argmax(-1).tolist())
    else:
        expected = "prediction_0,prediction_1\n" + "".join(f"{u:.6g},{v:.6g}\n" for u, v in outputs.tolist())
    assert predict_csv(run, query) == expected


def test_a_data_file_that_cannot_be_read_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # the same reader as training's --data-file, with its errors
    _train(["--dataset", "xor", "--layers", "2,4,2", "--epochs", "1", "--logdir", str(tmp_path)])
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"a,b\n\xff\xfe,1\n")
    cases = [
        (tmp_path / "missing.csv", f"--data-file: no file {tmp_path / 'missing.csv'}"),
        (tmp_path, f"--data-file: expected a CSV file, got the directory {tmp_path}"),
        (binary, f"{binary}: not a text CSV file (invalid start byte at byte 4)"),
    ]
    capsys.readouterr()
    for path, message in cases:
        assert main(["predict", str(tmp_path / "xor" / "version_0"), "--data-file", str(path)]) == 2
        assert f"torchbp predict: error: {message}" in capsys.readouterr().err


@pytest.mark.parametrize(
    "contents, message",
    [
        ("a,b\n\n1,x\n", "line 3: every input column must be numeric"),
        ("a,b\n1,2\n\n\n3\n", "line 5: expected 2 fields like the header, got 1"),
        ("\na,b\n1,2\n3,y\n", "line 4: every input column must be numeric"),
    ],
    ids=["blank-line-before", "blank-lines-between", "blank-first-line"],
)
def test_predict_errors_name_the_files_own_line_numbers(tmp_path: Path, contents: str, message: str) -> None:
    query = tmp_path / "query.csv"
    query.write_text(contents)
    with pytest.raises(ValueError) as raised:
        read_inputs(query, {"inputs": 2})
    assert f"{query}, {message}" in str(raised.value)
