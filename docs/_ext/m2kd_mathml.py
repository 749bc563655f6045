"""Maths as MathML written at build time (``latex2mathml``), so pages show formulas with
no script and no network: browsers render MathML Core themselves.

Registers the HTML math renderer ``mathml`` (``html_math_renderer = "mathml"``). A formula
that cannot be converted is a build warning (an error under ``-W``).
"""

from __future__ import annotations

from typing import Any

from docutils import nodes
from latex2mathml.converter import convert
from sphinx.application import Sphinx
from sphinx.util import logging

LOG = logging.getLogger(__name__)


def _mathml(node: nodes.Element, latex: str, display: str) -> str:
    try:
        return convert(latex.strip(), display=display)
    except Exception as error:  # latex2mathml raises its own exception types
        LOG.warning("formula not converted to MathML (%s): %s", error, latex, location=node)
        return f"<code>{latex}</code>"


def visit_math(self: Any, node: nodes.Element) -> None:
    self.body.append(_mathml(node, node.astext(), "inline"))
    raise nodes.SkipNode


def visit_displaymath(self: Any, node: nodes.Element) -> None:
    parts = [node.astext()] if node.get("nowrap") else node.astext().split("\n\n")
    self.body.append(self.starttag(node, "div", CLASS="math"))
    self.body += [_mathml(node, part, "block") for part in parts if part.strip()]
    self.body.append("</div>\n")
    raise nodes.SkipNode


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_html_math_renderer("mathml", inline_renderers=(visit_math, None), block_renderers=(visit_displaymath, None))
    return {"parallel_read_safe": True, "parallel_write_safe": True}
