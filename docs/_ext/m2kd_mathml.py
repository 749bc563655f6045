"""Maths as MathML written at build time (``latex2mathml``), so pages show formulas with
no script and no network: browsers render MathML Core themselves.

Registers the HTML math renderer ``mathml`` (``html_math_renderer = "mathml"``). A formula
that cannot be converted is a build warning (an error under ``-W``).
"""

from __future__ import annotations

import re
from typing import Any

from docutils import nodes
from latex2mathml.converter import convert
from sphinx.application import Sphinx
from sphinx.util import logging

LOG = logging.getLogger(__name__)


# Sized delimiters (``\Big\|``) come out of latex2mathml as the command's text.
_DELIMITERS = {r"\|": "&#x02016;", r"\Vert": "&#x02016;", r"\vert": "|", r"\lVert": "&#x02016;",
               r"\rVert": "&#x02016;", r"\lvert": "|", r"\rvert": "|"}
_LEFTOVER = re.compile(r">(\\[A-Za-z]+|\\\|)<")


def _mathml(node: nodes.Element, latex: str, display: str) -> str:
    try:
        out = convert(latex.strip(), display=display)
    except Exception as error:  # latex2mathml raises its own exception types
        LOG.warning("formula not converted to MathML (%s): %s", error, latex, location=node)
        return f"<code>{latex}</code>"
    out = _LEFTOVER.sub(lambda m: ">" + _DELIMITERS.get(m.group(1), m.group(1)) + "<", out)
    left = _LEFTOVER.findall(out)
    if left:
        LOG.warning("formula with commands MathML cannot show (%s): %s", ", ".join(left), latex,
                    location=node)
    return out


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
    app.add_html_math_renderer(
        "mathml", inline_renderers=(visit_math, None), block_renderers=(visit_displaymath, None)
    )
    return {"parallel_read_safe": True, "parallel_write_safe": True}
