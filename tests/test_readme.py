"""The README's Python blocks run as written, and one Python requirement is stated everywhere."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import torch

import torchbp

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = ["README.md", "docs/index.md"]


def _python_blocks(page: str) -> list[tuple[int, str]]:
    """Each fenced Python block of ``page`` with the line it starts on."""
    text = (ROOT / page).read_text()
    return [
        (text.count("\n", 0, match.start()) + 2, match.group(1))
        for match in re.finditer(r"^```python\n(.*?)^```$", text, re.S | re.M)
    ]


def _run(page: str, line: int, block: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": f"{page}:{line}"}
    exec(compile(block, f"{page}:{line}", "exec"), namespace)
    return namespace


@pytest.mark.parametrize(
    ("page", "line", "block"),
    [pytest.param(page, line, block, id=f"{page}:{line}") for page in PAGES for line, block in _python_blocks(page)],
)
def test_every_python_block_runs_as_written(page: str, line: int, block: str) -> None:
    torch.manual_seed(0)
    _run(page, line, block)


def test_the_pages_have_their_blocks() -> None:
    assert len(_python_blocks("README.md")) == 2
    assert len(_python_blocks("docs/index.md")) == 1


def test_the_readme_drop_in_block_takes_an_explicit_delta_step() -> None:
    (line, block), _ = _python_blocks("README.md")
    torch.manual_seed(0)
    namespace = _run("README.md", line, block)
    model, rule = namespace["model"], namespace["rule"]
    assert isinstance(model[0], torchbp.nn.Linear) and isinstance(model[2], torchbp.nn.Linear)
    # SGD with momentum keeps one buffer per parameter once a step has run: the step used the gradients
    buffers = [rule.state[p]["momentum_buffer"] for p in model.parameters()]
    assert all(torch.equal(buffer, p.grad) for buffer, p in zip(buffers, model.parameters()))
    assert all(buffer.abs().sum() > 0 for buffer in buffers)


def test_the_readme_plugin_blocks_gradient_is_the_values_derivative() -> None:
    _, (line, block) = _python_blocks("README.md")
    (spec,) = _run("README.md", line, block)["torchbp_costs"]()
    a, y = torch.randn(4, 3, dtype=torch.float64, requires_grad=True), torch.randn(4, 3, dtype=torch.float64)
    (autograd,) = torch.autograd.grad(spec.value(a, y).sum(), a)
    assert torch.equal(spec.gradient(a, y), autograd)


def test_one_python_requirement_everywhere() -> None:
    projects = [ROOT / "pyproject.toml", *ROOT.glob("plugins/*/pyproject.toml"), *DOCS.glob("examples/*/pyproject*")]
    assert len(projects) >= 4
    for project in projects:
        assert tomllib.loads(project.read_text())["project"]["requires-python"] == ">=3.11", project
    assert "Needs Python ≥ 3.11." in (ROOT / "README.md").read_text()
    assert "torchbp needs Python ≥ 3.11." in (ROOT / "docs" / "index.md").read_text()
    env = (ROOT / "scripts" / "env.sh").read_text()
    assert "sys.version_info < (3, 11)" in env and "torchbp needs Python >= 3.11" in env
    pages = [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]
    mentions = re.findall(r"Python\s*(?:≥|>=)\s*(3\.\d+)", "\n".join(page.read_text() for page in pages))
    assert set(mentions) == {"3.11"}
