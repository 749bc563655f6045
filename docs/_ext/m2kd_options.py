"""The ``m2kd-options`` directive (registered by ``m2kd_docs``): the table of
``M2KDStrategy``'s options, read from the code.

Every parameter of ``M2KDStrategy.__init__``: its default read from ``inspect.signature``,
its description from the ``Args:`` section of the option class it belongs to
(:mod:`avalanche_m2kd.option_types`) or, for the others, of ``M2KDStrategy``'s docstring,
and where the default comes from, from ``docs/option_sources.toml``. A group's field that
is no keyword of the strategy, or whose default differs from the keyword's, fails the
build.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
from pathlib import Path
from typing import Any

# Python 3.11+, as the docs build is (.ci/run); mypy's and ruff's target is the package's 3.10.
import tomllib  # type: ignore[import-not-found,unused-ignore]
from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

__all__ = ["OptionsDirective"]

LOG = logging.getLogger(__name__)
SOURCES = Path(__file__).resolve().parents[1] / "option_sources.toml"


def _entries(doc: str, section: str = "Args") -> dict[str, str]:
    """``{name: description}`` of a Google-style section; ``a, b: text`` gives both."""
    lines = inspect.cleandoc(doc).splitlines()
    try:
        start = lines.index(f"{section}:") + 1
    except ValueError:
        return {}
    body: list[str] = []
    for line in lines[start:]:
        if line.strip() and not line.startswith(" "):
            break
        body.append(line)
    indent = min((len(x) - len(x.lstrip()) for x in body if x.strip()), default=0)
    entries: list[list[str]] = []
    for line in body:
        if line.strip() and len(line) - len(line.lstrip()) == indent and not (
            entries and entries[-1][-1].rstrip().endswith(",") and ":" not in entries[-1][0]
        ):
            entries.append([line.strip()])
        elif entries:
            entries[-1].append(line.strip())
    out: dict[str, str] = {}
    for entry in entries:
        text = " ".join(x for x in entry if x)
        names, _, description = text.partition(": ")
        for name in names.split(","):
            if name.strip():
                out[name.strip()] = description.strip()
    return out


def _default(value: Any) -> str:
    if value is inspect.Parameter.empty:
        return "required"
    if inspect.isfunction(value) or inspect.isclass(value):
        return f"``{value.__name__}``"
    if isinstance(value, __import__("torch").nn.Module):
        return f"``nn.{type(value).__name__}()``"
    return f"``{value!r}``"


def _cell(text: str) -> list[str]:
    """A list-table cell: its first line after ``- ``, the others under it."""
    lines = (text or "\\ ").strip().splitlines()
    return ["     - " + lines[0]] + ["       " + line for line in lines[1:]]


def _option_groups() -> dict[str, Any]:
    """``{field: option class}`` of every field of :mod:`avalanche_m2kd.option_types`'s groups."""
    from avalanche_m2kd import option_types

    classes = [getattr(option_types, n) for n in option_types.__all__]
    groups = [c for c in classes if inspect.isclass(c) and issubclass(c, option_types.OptionGroup)
              and c is not option_types.OptionGroup]
    return {f.name: cls for cls in groups for f in dataclasses.fields(cls)}


def _option_problems(params: list[inspect.Parameter], described: dict[str, str],
                     groups: dict[str, Any], sources: dict[str, str]) -> list[str]:
    """Why the options table cannot be built as documented (empty: it can)."""
    names = [p.name for p in params]
    fields = {name: {f.name: f for f in dataclasses.fields(cls)}[name]
              for name, cls in groups.items()}
    problems = [f"`{n}` has no description in M2KDStrategy's Args"
                for n in names if n not in described]
    problems += [f"`{n}` has no entry in docs/option_sources.toml"
                 for n in names if n not in sources]
    problems += [f"docs/option_sources.toml names `{n}`, which M2KDStrategy does not take"
                 for n in sources if n not in names]
    problems += [f"M2KDStrategy's Args describes `{n}`, which it does not take"
                 for n in described if n not in names and not n.startswith("**")]
    problems += [f"{cls.__name__}.{n} is no keyword of M2KDStrategy"
                 for n, cls in groups.items() if n not in names]
    problems += [f"{cls.__name__}.{n} has no description in its Args" for n, cls in groups.items()
                 if n not in _entries(cls.__doc__ or "")]
    problems += [f"M2KDStrategy's `{p.name}` defaults to {p.default!r}, "
                 f"{groups[p.name].__name__}'s to {fields[p.name].default!r}" for p in params
                 if p.name in groups and _value(p.default) != fields[p.name].default]
    return problems


def _value(default: Any) -> Any:
    """A signature default as a value (``autodoc_preserve_defaults`` leaves its source text)."""
    if type(default).__name__ != "DefaultValue":
        return default
    try:
        return ast.literal_eval(default.name)
    except (ValueError, SyntaxError):
        return default.name


class OptionsDirective(SphinxDirective):
    """The table of ``M2KDStrategy``'s options, read from the code.

    An option that is a field of one of :mod:`avalanche_m2kd.option_types`'s groups is
    described by that class's docstring (``Args:``), and the table names the class;
    the others by ``M2KDStrategy``'s docstring.
    """

    has_content = False

    def run(self) -> list[nodes.Node]:
        from avalanche_m2kd import M2KDStrategy, option_types

        self.env.note_dependency(str(SOURCES))
        for code in (M2KDStrategy, option_types):
            source = inspect.getsourcefile(code)
            assert source is not None  # our own modules, imported from their .py files
            self.env.note_dependency(source)
        params = [p for p in inspect.signature(M2KDStrategy.__init__).parameters.values()
                  if p.name != "self" and p.kind is not p.VAR_KEYWORD]  # **options: the fields
        described = _entries(M2KDStrategy.__doc__ or "")
        groups = _option_groups()
        sources: dict[str, str] = tomllib.loads(SOURCES.read_text())["sources"]
        for problem in _option_problems(params, described, groups, sources):
            LOG.warning("options table: %s", problem, location=self.get_location(),
                        type="m2kd", subtype="options")
        rows = [".. list-table::", "   :header-rows: 1", "   :class: m2kd-options", "",
                "   * - option", "     - default", "     - in", "     - default from"]
        details: list[str] = []
        for p in params:
            label = "option-" + p.name.replace("_", "-")
            source = sources.get(p.name, "")
            group = groups.get(p.name)
            rows += [f"   * - :ref:`{p.name} <{label}>`"] + _cell(_default(p.default))
            rows += _cell(f":class:`~{group.__module__}.{group.__name__}`" if group else "")
            rows += _cell(re.split(r"[:;,]", source, maxsplit=1)[0])  # "ours", "paper (abstract)"
            keyword = " (keyword only)" if p.kind is inspect.Parameter.KEYWORD_ONLY else ""
            text = (_entries(group.__doc__ or "").get(p.name, "") if group
                    else described.get(p.name, ""))
            where = (f"*Field of* :class:`~{group.__module__}.{group.__name__}` "
                     f"(``{group.argument}=``)." if group else "")
            details += ["", f".. _{label}:", "",
                        f".. rubric:: ``{p.name}`` = {_default(p.default)}{keyword}",
                        "   :class: m2kd-option", "", text, "", where, "",
                        f"*Default from:* {source}"]
        rows += ["", ".. rubric:: Every option", ""] + details
        container = nodes.container()
        self.state.nested_parse(StringList(rows), self.content_offset, container)
        return container.children
