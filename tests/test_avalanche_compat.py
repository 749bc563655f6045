"""Pins every Avalanche-private name the package uses (avalanche_m2kd._avalanche)."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest
import torch
from avalanche.training.plugins import EvaluationPlugin
from avalanche.training.templates import SupervisedTemplate
from torch import nn

from avalanche_m2kd import _avalanche as compat

PACKAGE = Path(compat.__file__).parent


@pytest.mark.parametrize(
    "cls, name", compat.OVERRIDDEN_HOOKS, ids=lambda v: getattr(v, "__name__", v)
)
def test_overridden_private_hooks_exist(cls, name):
    assert callable(getattr(cls, name, None)), f"Avalanche's {cls.__name__} has no {name} any more"


def test_parametric_single_buffer_takes_size_and_selection():
    params = list(inspect.signature(compat.ParametricSingleBuffer).parameters)
    assert params[:2] == ["max_size", "selection_strategy"]
    assert compat.ParametricSingleBuffer(3, None).max_size == 3


def test_criterion_is_the_templates_loss():
    model = nn.Linear(2, 2)
    loss = nn.CrossEntropyLoss()
    strategy = SupervisedTemplate(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        criterion=loss,
        evaluator=EvaluationPlugin(loggers=[]),
    )
    assert compat.criterion(strategy) is loss


def test_evaluator_state_fields_exist():
    evaluator = EvaluationPlugin(loggers=[])
    assert all(hasattr(evaluator, f) for f in compat.EVALUATOR_STATE)


def test_fmnist_default_transforms_are_callables():
    train, evaluate = compat.fmnist_default_transforms()
    assert callable(train) and callable(evaluate)


def _private_avalanche_names(tree: ast.AST) -> list[str]:
    """``_name`` imported from an ``avalanche`` module, or read as ``<avalanche module>._name``."""
    found = []
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("avalanche"):
            found += [a.name for a in node.names if a.name.startswith("_")]
            modules.update(a.asname or a.name for a in node.names)
        elif isinstance(node, ast.Import):
            modules.update(a.asname or a.name for a in node.names if a.name.startswith("avalanche"))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and isinstance(node.value, ast.Name)
            and node.value.id in modules
            and node.value.id != "torch"
        ):
            found.append(f"{node.value.id}.{node.attr}")
    return found


def test_no_module_but_the_compat_one_uses_avalanche_private_names():
    offenders = {}
    for path in PACKAGE.rglob("*.py"):
        if path.name == "_avalanche.py":
            continue
        names = _private_avalanche_names(ast.parse(path.read_text()))
        if names:
            offenders[str(path.relative_to(PACKAGE))] = names
    assert offenders == {}
