"""Sphinx configuration of the avalanche-m2kd documentation.

Build (what ``.ci/run`` runs; every warning is an error, missing references too)::

    pip install -e ".[docs]"
    python -m sphinx -W --keep-going -n -b html docs docs/_build/html
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(Path(__file__).parent / "_ext")]

import avalanche_m2kd  # noqa: E402

# Python-level warnings from the libraries imported while the API pages are built
# (torch, Avalanche) are not documentation problems; Sphinx's own warnings still fail.
warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", category=FutureWarning)

project = "avalanche-m2kd"
author = "avalanche-m2kd developers"
copyright = "2026, avalanche-m2kd developers"
release = version = avalanche_m2kd.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "myst_parser",
    "sphinx_copybutton",
    "m2kd_docs",
    "m2kd_mathml",
]
html_math_renderer = "mathml"  # formulas as MathML at build time: no script, no network

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}  # .rst: the generated API pages
root_doc = "index"
exclude_patterns = ["_build", "_ext", "README.md"]
nitpicky = True  # a reference to a missing object is a warning, so an error under -W

# MyST: heading anchors for [text](page.md#anchor) links, $...$ maths, ::: fences.
myst_enable_extensions = ["colon_fence", "dollarmath", "deflist"]
myst_heading_anchors = 3

# The docstrings are Google style with reStructuredText markup (roles, maths).
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True  # an "Attributes:" entry is not a second object next to the property
napoleon_use_rtype = False
autosummary_generate = True  # one page per public module, under api/generated/ (not committed)
templates_path = ["_templates"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_class_signature = "separated"
# Defaults are shown as values, not as source text: the flat option keywords' come from
# the option classes (avalanche_m2kd.option_types.option_keywords), which no source line
# of the function holds; m2kd_docs writes a function default by its name.
autodoc_preserve_defaults = False
autodoc_inherit_docstrings = False  # no torch / Avalanche docstring shown as ours
python_use_unqualified_type_names = True


html_theme = "furo"
html_title = f"avalanche-m2kd {release}"
html_static_path = ["_static"]
html_css_files = ["m2kd.css"]
html_show_sourcelink = False
html_theme_options = {"navigation_with_keys": True}
pygments_style = "friendly"
pygments_dark_style = "monokai"
copybutton_prompt_text = r">>> |\.\.\. |\$ "
copybutton_prompt_is_regexp = True
