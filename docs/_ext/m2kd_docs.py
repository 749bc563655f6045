"""The parts of the documentation that are generated from the code and the results.

Directives (each fails the build, under ``-W``, when what it reads is missing or
inconsistent, so a page cannot drift from the code or the records):

``m2kd-options``
    Every parameter of ``M2KDStrategy.__init__``: its default read from
    ``inspect.signature``, its description from the ``Args:`` section of the option
    class it belongs to (:mod:`avalanche_m2kd.option_types`) or, for the others, of
    ``M2KDStrategy``'s docstring, and where the default comes from, from
    ``docs/option_sources.toml``. A group's field that is no keyword of the strategy,
    or whose default differs from the keyword's, fails the build.
``m2kd-results DIR``
    The tables that ``python -m benchmarks.compare report`` writes, rendered from
    ``benchmarks/results/DIR/results.json`` by the harness's own
    ``benchmarks.compare.markdown``, and the PNG figures of that folder (copied into
    the site by the build).
``m2kd-fidelity``
    ``python -m benchmarks.snapshot_fidelity --report`` of every
    ``benchmarks/results/snapshot-fidelity/*.jsonl``.

Events:

* before napoleon reads a docstring, an ``Args:`` entry naming several parameters
  (``a, b: text``, the names possibly wrapped over lines) becomes one entry per name;
* a reference that Sphinx cannot resolve is resolved when it names, unambiguously, an
  object documented here (``SnapshotStore`` for
  ``avalanche_m2kd.snapshots.SnapshotStore``), and shown unlinked when it names an
  object of another library (``torch.Tensor``, ``nn.Module``) or one of our type
  aliases (``SnapshotMode``); anything else stays a missing reference;
* at the end of reading, every public module of the package must be on an API page.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import json
import os
import pkgutil
import re
import tomllib
import typing
from pathlib import Path
from typing import Any

from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

LOG = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "avalanche_m2kd"
RESULTS = ROOT / "benchmarks" / "results"
SOURCES = Path(__file__).resolve().parents[1] / "option_sources.toml"


# --------------------------------------------------------------------------- docstrings
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


def _split_multi_name_args(app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: list[str]) -> None:
    """Before napoleon reads a docstring: an ``Args:`` entry naming several parameters
    (``a, b: text``, the names possibly wrapped over lines) becomes one entry per name,
    each with the text, which napoleon then renders (and escapes, ``*args``) one by one."""
    out: list[str] = []
    i, in_args, indent = 0, False, None
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped in ("Args:", "Arguments:", "Parameters:"):
            in_args, indent = True, None
        elif in_args and stripped and not line.startswith(" "):
            in_args = False
        elif in_args and stripped:
            here = len(line) - len(line.lstrip())
            indent = here if indent is None else indent
            if here == indent:
                head, j = line.rstrip(), i + 1
                while head.endswith(",") and ":" not in head and j < len(lines):  # names wrapped
                    head, j = head + " " + lines[j].strip(), j + 1
                names, colon, text = head.strip().partition(":")
                if colon and "," in names and "(" not in names:
                    body: list[str] = []
                    while j < len(lines) and lines[j].strip() and len(lines[j]) - len(lines[j].lstrip()) > indent:
                        body.append(lines[j])
                        j += 1
                    for one in (n.strip() for n in names.split(",") if n.strip()):
                        out += [" " * indent + f"{one}:{text}"] + body
                    i = j
                    continue
        out.append(line)
        i += 1
    lines[:] = out


# --------------------------------------------------------------------------- references
def _lookup(target: str, modname: str | None) -> tuple[bool, Any]:
    """The Python object ``target`` names from ``modname``'s namespace, or by import."""
    parts = target.split(".")
    scopes: list[Any] = []
    if modname:
        try:
            scopes.append(importlib.import_module(modname))
        except ImportError:
            pass
    for scope in scopes:
        obj: Any = scope
        try:
            for part in parts:
                obj = getattr(obj, part)
            return True, obj
        except AttributeError:
            pass
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for part in parts[cut:]:
                obj = getattr(obj, part)
            return True, obj
        except AttributeError:
            return False, None
    return False, None


def _is_ours(obj: Any) -> bool:
    module = obj.__name__ if inspect.ismodule(obj) else getattr(obj, "__module__", None)
    return isinstance(module, str) and (module == PACKAGE or module.startswith(PACKAGE + "."))


def _is_type_alias(obj: Any) -> bool:
    return typing.get_origin(obj) is not None or isinstance(obj, typing.TypeVar)


def _private(name: str) -> bool:
    return any(part.startswith("_") for part in name.split("."))


def _canonical(obj: Any) -> str | None:
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if inspect.ismodule(obj):
        return obj.__name__
    return f"{module}.{qualname}" if isinstance(module, str) and isinstance(qualname, str) else None


def _our_alias(name: str) -> bool:
    """Whether ``name`` is a type alias defined in one of our modules (imported ones
    included: an annotation may name an alias its module imports only for typing)."""
    import sys

    return any(
        _is_type_alias(getattr(module, name, None))
        for key, module in list(sys.modules.items())
        if key == PACKAGE or key.startswith(PACKAGE + ".")
    )


def _resolve(app: Sphinx, env: Any, node: Any, contnode: nodes.Node) -> nodes.Node | None:
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"].strip("'\"").lstrip("~")
    domain = env.get_domain("py")

    def link(name: str) -> nodes.Node | None:
        return domain.resolve_xref(env, node["refdoc"], app.builder, "obj", name, node, contnode)

    found, obj = _lookup(target, node.get("py:module"))
    if found and _is_ours(obj) and not _is_type_alias(obj):
        name = _canonical(obj)
        if name in domain.objects or name in domain.modules:
            return link(name)  # a re-export (avalanche_m2kd.M2KDStrategy): the documented object
        if name and _private(name):
            return contnode  # a private base class or helper: named, not linked
    matches = sorted(n for n in domain.objects if n.endswith("." + target) and n.startswith(PACKAGE + "."))
    if len(matches) == 1:
        return link(matches[0])
    if (found and (not _is_ours(obj) or _is_type_alias(obj))) or (not found and "." not in target and _our_alias(target)):
        return contnode  # another library's object, or one of our type aliases: unlinked
    return None


# --------------------------------------------------------------------------- coverage
def _public_modules() -> list[str]:
    package = importlib.import_module(PACKAGE)
    names = [PACKAGE] + [m.name for m in pkgutil.walk_packages(package.__path__, PACKAGE + ".")]
    return sorted(n for n in names if not any(p.startswith("_") for p in n.split(".")))


def _check_coverage(app: Sphinx, env: Any) -> None:
    documented = set(env.get_domain("py").modules)
    for name in _public_modules():
        if name not in documented:
            LOG.warning("public module %s is on no API page (docs/api/*.md)", name, type="m2kd", subtype="api")


# --------------------------------------------------------------------------- directives
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
    fields = {name: {f.name: f for f in dataclasses.fields(cls)}[name] for name, cls in groups.items()}
    problems = [f"`{n}` has no description in M2KDStrategy's Args" for n in names if n not in described]
    problems += [f"`{n}` has no entry in docs/option_sources.toml" for n in names if n not in sources]
    problems += [f"docs/option_sources.toml names `{n}`, which M2KDStrategy does not take"
                 for n in sources if n not in names]
    problems += [f"M2KDStrategy's Args describes `{n}`, which it does not take"
                 for n in described if n not in names]
    problems += [f"{cls.__name__}.{n} is no keyword of M2KDStrategy" for n, cls in groups.items() if n not in names]
    problems += [f"{cls.__name__}.{n} has no description in its Args" for n, cls in groups.items()
                 if n not in _entries(cls.__doc__ or "")]
    problems += [f"M2KDStrategy's `{p.name}` defaults to {p.default!r}, {groups[p.name].__name__}'s to "
                 f"{fields[p.name].default!r}" for p in params
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
        self.env.note_dependency(inspect.getsourcefile(M2KDStrategy))
        self.env.note_dependency(inspect.getsourcefile(option_types))
        params = [p for p in inspect.signature(M2KDStrategy.__init__).parameters.values() if p.name != "self"]
        described = _entries(M2KDStrategy.__doc__ or "")
        groups = _option_groups()
        sources: dict[str, str] = tomllib.loads(SOURCES.read_text())["sources"]
        for problem in _option_problems(params, described, groups, sources):
            LOG.warning("options table: %s", problem, location=self.get_location(), type="m2kd", subtype="options")
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
            text = _entries(group.__doc__ or "").get(p.name, "") if group else described.get(p.name, "")
            where = (f"*Field of* :class:`~{group.__module__}.{group.__name__}` (``{group.argument}=``)."
                     if group else "")
            details += ["", f".. _{label}:", "", f".. rubric:: ``{p.name}`` = {_default(p.default)}{keyword}",
                        "   :class: m2kd-option", "", text, "", where, "", f"*Default from:* {source}"]
        rows += ["", ".. rubric:: Every option", ""] + details
        container = nodes.container()
        self.state.nested_parse(StringList(rows), self.content_offset, container)
        return container.children


class ResultsDirective(SphinxDirective):
    """The harness's tables (and figures) of one ``benchmarks/results/DIR``."""

    required_arguments = 1
    option_spec = {"kind": directives.unchanged, "figures": directives.flag, "tables": directives.unchanged}

    def run(self) -> list[nodes.Node]:
        folder = RESULTS / self.arguments[0]
        path = folder / "results.json"
        self.env.note_dependency(str(path))
        if not path.exists():
            LOG.warning("no %s: run `python -m benchmarks.compare report --out %s`", path, folder,
                        location=self.get_location(), type="m2kd", subtype="results")
            return []
        from benchmarks import compare

        rows = [_summary_row_defaults(r) for r in json.loads(path.read_text())]
        kinds = [k.strip() for k in self.options.get("kind", "").split(",") if k.strip()]
        if kinds:
            rows = [r for r in rows if r["kind"] in kinds]
        if not rows:
            LOG.warning("no rows of kind %s in %s", kinds, path, location=self.get_location(),
                        type="m2kd", subtype="results")
            return []
        text = compare.markdown(rows)
        container = nodes.container(classes=["m2kd-results"])
        self.state.nested_parse(StringList(text.splitlines()), self.content_offset, container)
        if "figures" in self.options:
            docdir = Path(self.env.doc2path(self.env.docname)).parent
            for png in sorted(folder.glob("*.png")):
                self.env.note_dependency(str(png))
                uri = os.path.relpath(png, docdir).replace(os.sep, "/")
                figure = nodes.figure()
                figure += nodes.image(uri=uri, alt=f"{self.arguments[0]}/{png.name}", candidates={"*": str(png)})
                figure += nodes.caption(text=f"benchmarks/results/{self.arguments[0]}/{png.name}")
                container += figure
        return [container]


def _summary_row_defaults(row: dict[str, Any]) -> dict[str, Any]:
    """A ``results.json`` row with the fields that rows written before the harness
    counted every kind of stored byte lack (fixed class order, no total memory)."""
    r = dict(row)
    r.setdefault("class_order", "fixed")
    r.setdefault("total_memory", None)
    if "stored_bytes" not in r:
        r["stored_bytes"] = {"snapshots": r["snapshot_bytes"], "exemplars": r["exemplar_bytes"],
                             "validation": 0, "logits": 0, "other": 0}
        r["stored_total"] = r["snapshot_bytes"] + r["exemplar_bytes"]
    return r


class FidelityDirective(SphinxDirective):
    """``benchmarks.snapshot_fidelity --report`` of the committed records."""

    def run(self) -> list[nodes.Node]:
        files = sorted((RESULTS / "snapshot-fidelity").glob("*.jsonl"))
        if not files:
            LOG.warning("no benchmarks/results/snapshot-fidelity/*.jsonl", location=self.get_location(),
                        type="m2kd", subtype="results")
            return []
        from benchmarks import snapshot_fidelity

        lines: list[str] = []
        for path in files:
            self.env.note_dependency(str(path))
            lines += [snapshot_fidelity.report(path), ""]
        container = nodes.container(classes=["m2kd-results"])
        self.state.nested_parse(StringList("\n".join(lines).splitlines()), self.content_offset, container)
        return [container]


class PluginsDirective(SphinxDirective):
    """The M2KD plugins of ``M2KDStrategy``, what each is for, and its hooks, read
    from the classes (hooks: the ``before_*`` / ``after_*`` methods this package
    defines), with Avalanche's replay plugin as the last row."""

    def run(self) -> list[nodes.Node]:
        from avalanche_m2kd import plugins

        lines = ["| plugin | concern | hooks |", "|---|---|---|"]
        order = ["SnapshotMaskingPlugin", "SeenClassesMaskingPlugin", "MultiModelDistillationPlugin",
                 "MultiLevelDistillationPlugin"]
        # Exported but not in the strategy's list: the distillation plugins' base, and the
        # plugin SnapshotMaskingPlugin builds for nested storage.
        parts = {"TeacherPlugin", "NestedTrainingPlugin"}
        exported = [n for n in plugins.__all__ if inspect.isclass(getattr(plugins, n)) and n not in parts]
        if sorted(order) != sorted(exported):
            LOG.warning("plugins table: avalanche_m2kd.plugins exports %s", plugins.__all__,
                        location=self.get_location(), type="m2kd", subtype="plugins")
        for name in order:
            cls = getattr(plugins, name)
            hooks = sorted(
                {h for klass in cls.__mro__ if _is_ours(klass) for h in vars(klass)
                 if h.startswith(("before_", "after_")) and callable(vars(klass)[h])},
                key=_hook_order,
            )
            concern = inspect.getdoc(cls).splitlines()[0].rstrip(".")
            lines.append(f"| {{class}}`~{cls.__module__}.{name}` | {concern} | "
                         + ", ".join(f"`{h}`" for h in hooks) + " |")
        lines.append("| Avalanche's `ReplayPlugin` | class-balanced exemplar memory, herding on the head's input "
                     "(`mem_size=0`: none) | Avalanche's |")
        container = nodes.container()
        self.state.nested_parse(StringList(lines), self.content_offset, container)
        return container.children


_LIFECYCLE = ["training", "training_exp", "train_dataset_adaptation", "train_dataloader", "training_epoch",
              "training_iteration", "forward", "criterion", "backward", "update", "eval", "eval_exp",
              "eval_iteration", "eval_forward"]


def _hook_order(hook: str) -> tuple[int, int]:
    when, _, stage = hook.partition("_")
    return (_LIFECYCLE.index(stage) if stage in _LIFECYCLE else len(_LIFECYCLE), when == "after")


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("autodoc-process-docstring", _split_multi_name_args, priority=400)  # before napoleon (500)
    app.connect("missing-reference", _resolve)
    app.connect("env-check-consistency", _check_coverage)
    app.add_directive("m2kd-options", OptionsDirective)
    app.add_directive("m2kd-results", ResultsDirective)
    app.add_directive("m2kd-fidelity", FidelityDirective)
    app.add_directive("m2kd-plugins", PluginsDirective)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "env_version": 1}

