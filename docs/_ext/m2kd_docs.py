"""The parts of the documentation that are generated from the code and the results.

Directives (each fails the build, under ``-W``, when what it reads is missing or
inconsistent, so a page cannot drift from the code or the records):

``m2kd-options`` (in ``m2kd_options``)
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
``m2kd-record DIR``
    The table of one benchmark script's record, ``benchmarks/results/DIR/results.json``
    (what ``python -m benchmarks.SCRIPT --out benchmarks/results/DIR`` writes; its
    ``benchmark`` field names the script), rendered by that script's own ``markdown``,
    with the command and the date that wrote it below.

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

import contextlib
import importlib
import inspect
import json
import os
import pkgutil
import re
import typing
from pathlib import Path
from typing import Any

from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from m2kd_options import OptionsDirective  # docs/_ext is on sys.path (docs/conf.py)
from sphinx.application import Sphinx
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

from benchmarks.records import RECORD_SCRIPTS  # the repository root is on sys.path too

LOG = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "avalanche_m2kd"
RESULTS = ROOT / "benchmarks" / "results"


# --------------------------------------------------------------------------- docstrings
def _split_multi_name_args(
    app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
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
                    while (j < len(lines) and lines[j].strip()
                           and len(lines[j]) - len(lines[j].lstrip()) > indent):
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
        with contextlib.suppress(ImportError):
            scopes.append(importlib.import_module(modname))
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
        if name is not None and (name in domain.objects or name in domain.modules):
            return link(name)  # a re-export (avalanche_m2kd.M2KDStrategy): the documented object
        if name and _private(name):
            return contnode  # a private base class or helper: named, not linked
    matches = sorted(n for n in domain.objects
                     if n.endswith("." + target) and n.startswith(PACKAGE + "."))
    if len(matches) == 1:
        return link(matches[0])
    if (found and (not _is_ours(obj) or _is_type_alias(obj))) or (
        not found and "." not in target and _our_alias(target)
    ):
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
            LOG.warning("public module %s is on no API page (docs/api/*.md)", name,
                        type="m2kd", subtype="api")


# --------------------------------------------------------------------------- directives
class ResultsDirective(SphinxDirective):
    """The harness's tables (and figures) of one ``benchmarks/results/DIR``."""

    required_arguments = 1
    option_spec = {"kind": directives.unchanged, "figures": directives.flag,
                   "tables": directives.unchanged}

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
                figure += nodes.image(uri=uri, alt=f"{self.arguments[0]}/{png.name}",
                                      candidates={"*": str(png)})
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
            LOG.warning("no benchmarks/results/snapshot-fidelity/*.jsonl",
                        location=self.get_location(), type="m2kd", subtype="results")
            return []
        from benchmarks import snapshot_fidelity

        lines: list[str] = []
        for path in files:
            self.env.note_dependency(str(path))
            lines += [snapshot_fidelity.report(path), ""]
        container = nodes.container(classes=["m2kd-results"])
        rows = StringList("\n".join(lines).splitlines())
        self.state.nested_parse(rows, self.content_offset, container)
        return [container]


class RecordDirective(SphinxDirective):
    """The table of one benchmark script's record, by that script's ``markdown``."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        folder = self.arguments[0]
        path = RESULTS / folder / "results.json"
        self.env.note_dependency(str(path))
        if not path.exists():
            LOG.warning("no %s: run the benchmark script with `--out benchmarks/results/%s`",
                        path, folder, location=self.get_location(), type="m2kd",
                        subtype="results")
            return []
        record = json.loads(path.read_text())
        name = record.get("benchmark") if isinstance(record, dict) else None
        if name not in RECORD_SCRIPTS:
            LOG.warning("%s: 'benchmark' is %r, not one of %s", path, name, RECORD_SCRIPTS,
                        location=self.get_location(), type="m2kd", subtype="results")
            return []
        script = importlib.import_module(f"benchmarks.{name}")
        text = script.markdown(record) + (
            f"\n\n*`benchmarks/results/{folder}/results.json`, written by "
            f"`{record['command']}` on {record['date']}.*"
        )
        container = nodes.container(classes=["m2kd-results"])
        self.state.nested_parse(StringList(text.splitlines()), self.content_offset, container)
        return [container]


class PluginsDirective(SphinxDirective):
    """The M2KD plugins of ``M2KDStrategy``, what each is for, and its hooks, read
    from the classes (hooks: the ``before_*`` / ``after_*`` methods this package
    defines), with Avalanche's replay plugin as the last row."""

    def run(self) -> list[nodes.Node]:
        from avalanche_m2kd import plugins

        lines = ["| plugin | concern | hooks |", "|---|---|---|"]
        order = ["SnapshotMaskingPlugin", "SeenClassesMaskingPlugin",
                 "MultiModelDistillationPlugin", "MultiLevelDistillationPlugin"]
        # Exported but not in the strategy's list: the distillation plugins' base, and the
        # plugin SnapshotMaskingPlugin builds for nested storage.
        parts = {"TeacherPlugin", "NestedTrainingPlugin"}
        exported = [n for n in plugins.__all__
                    if inspect.isclass(getattr(plugins, n)) and n not in parts]
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
            doc = inspect.getdoc(cls)
            assert doc is not None, f"avalanche_m2kd.plugins.{name} has no docstring"
            concern = doc.splitlines()[0].rstrip(".")
            lines.append(f"| {{class}}`~{cls.__module__}.{name}` | {concern} | "
                         + ", ".join(f"`{h}`" for h in hooks) + " |")
        lines.append("| Avalanche's `ReplayPlugin` | class-balanced exemplar memory, herding on "
                     "the head's input (`mem_size=0`: none) | Avalanche's |")
        container = nodes.container()
        self.state.nested_parse(StringList(lines), self.content_offset, container)
        return container.children


_LIFECYCLE = ["training", "training_exp", "train_dataset_adaptation", "train_dataloader",
              "training_epoch", "training_iteration", "forward", "criterion", "backward", "update",
              "eval", "eval_exp", "eval_iteration", "eval_forward"]


def _hook_order(hook: str) -> tuple[int, int]:
    when, _, stage = hook.partition("_")
    return (_LIFECYCLE.index(stage) if stage in _LIFECYCLE else len(_LIFECYCLE), when == "after")


_FUNCTION_REPR = re.compile(r"<function (\w+) at 0x[0-9a-f]+>")


def _function_defaults_by_name(app: Sphinx, what: str, name: str, obj: Any, options: Any,
                               signature: str | None, annotation: str | None) -> Any:
    """A default that is a function (Avalanche's ``default_evaluator``) by its name,
    not its ``repr`` with an address that changes with every build."""
    if signature is None:
        return None
    return _FUNCTION_REPR.sub(r"\1", signature), annotation


def setup(app: Sphinx) -> dict[str, Any]:
    # priority 400: before napoleon (500) reads the docstring
    app.connect("autodoc-process-docstring", _split_multi_name_args, priority=400)
    app.connect("missing-reference", _resolve)
    app.connect("autodoc-process-signature", _function_defaults_by_name)
    app.connect("env-check-consistency", _check_coverage)
    app.add_directive("m2kd-options", OptionsDirective)
    app.add_directive("m2kd-results", ResultsDirective)
    app.add_directive("m2kd-fidelity", FidelityDirective)
    app.add_directive("m2kd-record", RecordDirective)
    app.add_directive("m2kd-plugins", PluginsDirective)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "env_version": 1}

