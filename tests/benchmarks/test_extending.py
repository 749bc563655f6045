"""The docs' "Adding a method" example is a working method module: built, trained,
counted and registered as the page says."""

from __future__ import annotations

import re
import types
from pathlib import Path

import torch

from benchmarks import methods
from benchmarks.methods import base

PAGE = Path(__file__).parents[2] / "docs" / "benchmarks" / "extending.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", PAGE.read_text(), flags=re.S)


def test_the_pages_method_module_registers_builds_and_counts_its_memory(monkeypatch):
    from tests.benchmarks.test_methods import SETTING, _stream

    registry: dict[str, base.Method] = {}
    monkeypatch.setattr(base, "METHODS", registry)
    module = types.ModuleType("benchmarks.methods.replay_random")
    exec(compile(_blocks()[0], str(PAGE), "exec"), module.__dict__)  # noqa: S102
    method = registry["replay-random"]
    assert method.exemplars == "required"
    assert method.exemplars_for(7 * 784, SETTING) == 7
    torch.manual_seed(0)
    strategy = method.build(10, SETTING)
    for experience in _stream().train_stream:
        strategy.train(experience, num_workers=0)
    stored = method.stored_bytes(strategy, SETTING)
    assert 0 < stored["exemplars"] <= 10 * 784
    assert sum(stored.values()) == stored["exemplars"]


def test_the_pages_registry_line_is_the_registry_plus_one_name():
    line = _blocks()[1]
    named = re.search(r"MODULES = \((.*)\)", line).group(1)
    assert [n.strip(' "') for n in named.split(",")] == [*methods.MODULES, "replay_random"]
