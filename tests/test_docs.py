"""Docs that cannot drift: the worked example page, the quoted code, the API reference, the example plugin."""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from test_layer_harness import check_against_torch, check_samples

import torchbp
import torchbp.descent
import torchbp.functional
import torchbp.nn

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def test_worked_example_page_matches_the_script(tmp_path: Path) -> None:
    out = tmp_path / "worked.json"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "worked_example.py"), "--json", str(out)],
        check=True,
        capture_output=True,
    )
    results = json.loads(out.read_text())["results"]
    rows = re.findall(
        r"^\| `(\w+)\[(\d+)\]` \|[^|]*\| ([-\d.]+) \| ([-\d.]+) \| ([-\d.]+) \|$",
        (DOCS / "worked-example.md").read_text(),
        re.M,
    )
    assert len(rows) == 18
    for key, index, *numbers in rows:
        for who, number in zip(("hand", "torchbp", "autograd"), numbers):
            values = [v for row in results[who][key] for v in (row if isinstance(row, list) else [row])]
            assert abs(values[int(index)] - float(number)) < 1e-12, (key, index, who)


def test_code_quoted_in_the_theory_page_is_in_the_sources() -> None:
    sources = "\n".join(path.read_text() for path in (ROOT / "torchbp").rglob("*.py"))
    blocks = re.findall(r"```python\n(.*?)```", (DOCS / "theory.md").read_text(), re.S)
    assert len(blocks) >= 7
    for block in blocks:
        for line in block.strip("\n").splitlines():
            assert line in sources, line


def test_per_example_page_quotes_the_sources_and_its_examples_run() -> None:
    sources = "\n".join(path.read_text() for path in (ROOT / "torchbp").rglob("*.py"))
    blocks = re.findall(r"```python\n(.*?)```", (DOCS / "guides" / "per-example.md").read_text(), re.S)
    ran = quoted = 0
    for block in blocks:
        if block.startswith("import torch"):
            exec(compile(block, "per-example.md", "exec"), {})
            ran += 1
        elif "opacus" not in block:  # Opacus is optional: its recipe is read, not run
            for line in block.strip("\n").splitlines():
                assert line in sources, line
            quoted += 1
    assert ran == 3 and quoted >= 5


def test_every_public_name_is_in_the_api_reference(tmp_path: Path) -> None:
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-f", str(ROOT / "mkdocs.yml"), "-d", str(site)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    api = (site / "api" / "index.html").read_text()
    names = (
        set(torchbp.__all__) | set(torchbp.functional.__all__) | set(torchbp.nn.__all__) | {"minimize", "DescentPath"}
    )
    missing = sorted(
        name
        for name in names - {"__version__", "functional", "nn"}
        if f'id="{name}' not in api and f'.{name}"' not in api and f"{name}</code>" not in api
    )
    assert missing == []


def test_every_rule_is_described() -> None:
    for entry in torchbp.list_rules():
        assert len(entry.description) > 10, entry.name


def _example_plugin(name: str = "torchbp-signsgd") -> Any:
    module_name = name.replace("-", "_")
    path = DOCS / "examples" / name / f"{module_name}.py"
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # as an import would: dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_rule_plugin_guide_example_works() -> None:
    name = torchbp.register_plugin(_example_plugin(), name="signsgd-example")
    try:
        (entry,) = torchbp.list_rules("signsgd")
        assert entry.plugin == "signsgd-example"
        path = torchbp.descent.minimize(torchbp.descent.bowl, [2.0, -1.0], rule="signsgd", lr=0.01, steps=400)
        assert path.values[-1] < 1e-2 * path.values[0]
        x = torch.tensor([1.0, -2.0], requires_grad=True)
        rule = torchbp.create_rule("signsgd", [x], lr=0.1)
        for _ in range(3):
            rule.zero_grad()
            (x**2).sum().backward()
            rule.step()
        saved = copy.deepcopy(rule.state_dict())
        assert saved["state"][0]["momentum"].shape == (2,)
    finally:
        torchbp.unregister_plugin(name)


@pytest.mark.parametrize("page", sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")))
def test_every_page_is_in_the_navigation(page: str) -> None:
    assert page in (ROOT / "mkdocs.yml").read_text()


def test_the_layer_plugin_guide_example_works() -> None:
    plugin = _example_plugin("torchbp-prelu")
    name = torchbp.register_plugin(plugin, name="prelu-example")
    try:
        (entry,) = torchbp.list_layers("PReLU")
        assert entry.plugin == "prelu-example"
        spec = entry.spec
        check_samples(spec.derivatives, "cpu")
        for index in range(2):
            for dtype in (torch.float64, torch.float32):
                check_against_torch(spec, index, dtype)
        model = torchbp.nn.convert(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.PReLU(4)), strict=True)
        assert type(model[1]) is plugin.PReLU
    finally:
        torchbp.unregister_plugin(name)
