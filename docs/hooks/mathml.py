"""MkDocs hook: the maths of every page rendered to MathML when the site is built, so that no page
needs a script, a font or a CDN to show an equation.

``pymdownx.arithmatex`` (generic mode) finds ``$…$`` and ``$$…$$`` outside code and wraps the LaTeX in
``<span class="arithmatex">\\(…\\)</span>`` or ``<div class="arithmatex">\\[…\\]</div>``; this hook
replaces each with the MathML that ``latex2mathml`` writes for it, which browsers draw natively.
"""

from __future__ import annotations

import re
from html import unescape
from typing import Any

from latex2mathml.converter import convert

_INLINE = re.compile(r'<span class="arithmatex">\\\((.*?)\\\)</span>', re.S)
_BLOCK = re.compile(r'<div class="arithmatex">\\\[(.*?)\\\]</div>', re.S)


def to_mathml(page_html: str) -> str:
    """``page_html`` with every arithmatex span and div replaced by MathML."""
    page_html = _BLOCK.sub(
        lambda m: '<div class="arithmatex">' + convert(unescape(m.group(1)), display="block") + "</div>",
        page_html,
    )
    return _INLINE.sub(lambda m: convert(unescape(m.group(1))), page_html)


def on_page_content(html: str, **kwargs: Any) -> str:
    return to_mathml(html)
