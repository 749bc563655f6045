"""Module boundaries inside the package: no module imports another module's private name."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "avalanche_m2kd"


def _private_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("avalanche_m2kd"):
            found += [f"{node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    return found


def test_no_module_imports_a_private_name_of_another():
    offenders = {str(p.relative_to(PACKAGE)): names for p in sorted(PACKAGE.rglob("*.py"))
                 if (names := _private_imports(p))}
    assert offenders == {}


def test_the_check_sees_a_private_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("from avalanche_m2kd.batchnorm import _hidden, running_stats\n")
    assert _private_imports(module) == ["avalanche_m2kd.batchnorm._hidden"]
