"""Docs that cannot drift: the worked example page, the quoted code, the API reference, the example plugin."""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import subprocess
import sys
from html import escape
from html.parser import HTMLParser
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


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The documentation built with ``mkdocs build --strict`` into a temporary directory, run from
    another directory (the snippet includes must not depend on where mkdocs runs)."""
    site = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-f", str(ROOT / "mkdocs.yml"), "-d", str(site)],
        capture_output=True,
        text=True,
        cwd=site.parent,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return site


def test_every_public_name_is_in_the_api_reference(site: Path) -> None:
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


# What makes a browser fetch something: HTML attributes of elements that load (an <a href> is only a link)…
_LOADING_ATTRIBUTES = {
    "script": ("src",),
    "link": ("href",),
    "img": ("src", "srcset"),
    "source": ("src", "srcset"),
    "iframe": ("src",),
    "embed": ("src",),
    "object": ("data",),
    "video": ("src", "poster"),
    "audio": ("src",),
    "track": ("src",),
    "image": ("href", "xlink:href"),
    "use": ("href", "xlink:href"),
    "input": ("src",),
}
# …and, in CSS, JavaScript and inline styles, url(…), @import, script imports and fetches.
_LOADING_CODE = re.compile(
    r"""(?:url\(\s*["']?https?://|@import\s+["']https?://|\bimport(?:Scripts)?\s*\(?\s*["']https?://"""
    r"""|\bfrom\s+["']https?://|\bfetch\s*\(\s*["']https?://|\.src\s*=\s*["']https?://"""
    r"""|\bsetAttribute\(\s*["'](?:src|href)["']\s*,\s*["']https?://)[^\s"')]*""",
)
_RAW_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|attr|mod|data|obj|exc|const|ref|doc|term|math):(?:`|<code>)")


class _Loads(HTMLParser):
    """The network addresses an HTML page would load by itself."""

    def __init__(self) -> None:
        super().__init__()
        self.loads: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value is None:
                continue
            if name in _LOADING_ATTRIBUTES.get(tag, ()) and re.search(r"(?:^|[\s,])(?:https?:)?//", value):
                self.loads.append(f"<{tag} {name}={value!r}>")
            elif name == "style" and _LOADING_CODE.search(value):
                self.loads.append(f"<{tag} style={value!r}>")

    def handle_data(self, data: str) -> None:  # the text of inline <script> and <style> elements
        self.loads += [f"inline code: {match.group(0)}" for match in _LOADING_CODE.finditer(data)]


def network_loads(path: Path) -> list[str]:
    """What the built file ``path`` (HTML, CSS, JavaScript or SVG) would fetch from the network."""
    text = path.read_text(errors="replace")
    if path.suffix in (".html", ".svg"):
        parser = _Loads()
        parser.feed(text)
        return parser.loads
    return [match.group(0) for match in _LOADING_CODE.finditer(text)]


def _site_files(site: Path) -> list[Path]:
    return sorted(path for path in site.rglob("*") if path.suffix in (".html", ".js", ".css", ".svg"))


def test_the_network_scan_finds_what_would_load(tmp_path: Path) -> None:
    page = tmp_path / "page.html"
    page.write_text(
        '<a href="https://example.org/">a link is fine</a>'
        '<script src="https://cdn.example.org/highlight.min.js"></script>'
        '<link rel="stylesheet" href="//cdn.example.org/katex.css">'
        '<img srcset="a.png 1x, https://example.org/b.png 2x">'
        '<style>@font-face { src: url("https://fonts.example.org/f.woff2") }</style>'
    )
    style = tmp_path / "style.css"
    style.write_text('@import "https://fonts.example.org/css"; /* see https://example.org for the licence */')
    assert len(network_loads(page)) == 4
    assert network_loads(style) == ['@import "https://fonts.example.org/css']


def test_no_page_loads_anything_from_the_network(site: Path) -> None:
    files = _site_files(site)
    assert any(path.suffix == ".js" for path in files) and any(path.suffix == ".css" for path in files)
    loads = {str(path.relative_to(site)): network_loads(path) for path in files}
    assert {path: found for path, found in loads.items() if found} == {}


def test_no_page_shows_a_raw_sphinx_role(site: Path) -> None:
    pages = [*site.rglob("*.html"), site / "search" / "search_index.json"]
    assert _RAW_ROLE.search(":func:<code>fit</code>") and _RAW_ROLE.search(":class:`Cost`")
    shown = {str(page.relative_to(site)): _RAW_ROLE.findall(page.read_text()) for page in pages}
    assert {page: roles for page, roles in shown.items() if roles} == {}


def test_the_maths_is_mathml_and_the_code_is_highlighted(site: Path) -> None:
    theory = (site / "theory" / "index.html").read_text()
    worked = (site / "worked-example" / "index.html").read_text()
    for page in (theory, worked):
        assert "<math" in page and "arithmatex" in page
        assert "\\(" not in page and "\\[" not in page  # every LaTeX span became MathML
    assert len(re.findall(r'<math [^>]*display="block"', theory)) >= 4
    assert "<mo>&#x02299;</mo>" in theory or "<mo>⊙</mo>" in theory  # BP1's Hadamard product ⊙
    assert '<span class="n">grad_x</span>' in theory  # Pygments' tokens, styled by css/pygments.css
    assert (site / "css" / "pygments.css").read_text().count(".highlight") > 10


def test_the_worked_example_shows_the_network_diagram(site: Path) -> None:
    assert 'src="../images/network-3-2-1.svg"' in (site / "worked-example" / "index.html").read_text()
    committed = (DOCS / "images" / "network-3-2-1.svg").read_text()
    draw = importlib.util.spec_from_file_location("draw_network", ROOT / "scripts" / "draw_network.py")
    assert draw is not None and draw.loader is not None
    module = importlib.util.module_from_spec(draw)
    draw.loader.exec_module(module)
    w01, w12 = module.matrix("0.2,-0.4;0.6,0.1;-0.3,0.5"), module.matrix("0.7;-0.2")
    assert module.svg([0.5, 0.3, 0.8], w01, w12) == committed
    labels = re.findall(r'font-size="12" text-anchor="middle"[^>]*>(-?[\d.]+)</text>', committed)
    assert labels == ["0.2", "-0.4", "0.6", "0.1", "-0.3", "0.5", "0.7", "-0.2"]


@pytest.mark.parametrize(("guide", "example"), [("rule-plugin", "torchbp-signsgd"), ("layer-plugin", "torchbp-prelu")])
def test_the_plugin_guides_include_their_example_files(site: Path, guide: str, example: str) -> None:
    page = (site / "guides" / guide / "index.html").read_text()
    assert "--8&lt;--" not in page and "--8<--" not in page
    text = re.sub(r"<[^>]+>", "", page)
    for path in sorted([*(DOCS / "examples" / example).glob("*.py"), *(DOCS / "examples" / example).glob("*.toml")]):
        for line in path.read_text().splitlines():
            assert escape(line, quote=False) in text or escape(line) in text, (path.name, line)


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
