"""The state of a strategy's plugins in a checkpoint: which have one, saving and restoring it.

A plugin with ``state_dict`` / ``load_state_dict`` saves itself. Avalanche's own plugins
that keep state between experiences but have no such methods (``LRSchedulerPlugin``,
``EarlyStoppingPlugin``) are saved through the table of their attributes in
:mod:`avalanche_m2kd._avalanche`, and their options compared on resume. Any other plugin
holding tensors, modules, datasets or objects with a ``state_dict`` is refused: its state
would be lost on resume without a word. On resume, the plugins must be those saved
(:func:`matching_plugins`) and the stream the one the saved snapshots were recorded on
(:func:`check_stream`). Used by :mod:`avalanche_m2kd.checkpoint`.
"""

from __future__ import annotations

import collections
import types
from typing import Any

import numpy as np
import torch
from avalanche.evaluation.metrics import Mean
from torch.utils.data import Dataset

from avalanche_m2kd._avalanche import MEAN_FIELDS, PLUGIN_FIELDS, PluginFields
from avalanche_m2kd._avalanche import criterion as criterion_of
from avalanche_m2kd.checkpoint_format import CheckpointMismatchError
from avalanche_m2kd.stream import experience_classes

__all__ = [
    "avalanche_plugin_mismatch",
    "check_stream",
    "has_state_dict",
    "load_plugin_state",
    "matching_plugins",
    "plugin_state",
    "stateful_plugins",
]


def stateful_plugins(strategy: Any) -> list[tuple[str, Any]]:
    """``(key, plugin)`` of the plugins whose state is saved, in strategy order.

    Raises:
        ValueError: a plugin keeps state this module cannot save.
    """
    out = []
    for i, plugin in enumerate(strategy.plugins):
        if plugin is strategy.evaluator or plugin is strategy.clock:
            continue
        if has_state_dict(plugin):
            out.append((f"{i}:{type(plugin).__qualname__}", plugin))
            continue
        if getattr(plugin, "storage_policy", None) is not None:
            raise ValueError(
                f"Plugin {type(plugin).__name__} holds a replay buffer "
                f"({type(plugin.storage_policy).__name__}) that cannot be checkpointed: its "
                "exemplars would be lost on resume. Use avalanche_m2kd.exemplars."
                "ClassBalancedBuffer as its storage_policy, or M2KDStrategy(mem_size=...)"
            )
        fields = _avalanche_fields(plugin)
        known = () if fields is None else fields.saved + fields.compared + fields.unsaved
        names = [n for n in getattr(plugin, "__dict__", {}) if n not in known]
        found = _unsaved_state(strategy, plugin, names)
        if found is not None:
            raise ValueError(
                f"Plugin {type(plugin).__name__} keeps state that cannot be checkpointed (its "
                f"{found}): it would be lost on resume. Give the plugin state_dict() and "
                "load_state_dict(state) methods (state_dict may return {} when nothing in it "
                "must survive from one experience to the next), or leave it out of runs you "
                "checkpoint"
            )
        if fields is not None:
            out.append((f"{i}:{type(plugin).__qualname__}", plugin))
    return out


def plugin_state(plugin: Any) -> Any:
    fields = _avalanche_fields(plugin)
    return plugin.state_dict() if fields is None else _avalanche_plugin_state(plugin, fields)


def load_plugin_state(plugin: Any, state: Any, datasets: list[Any]) -> None:
    fields = _avalanche_fields(plugin)
    if fields is not None:
        _load_avalanche_plugin_state(plugin, fields, state)
    elif getattr(plugin, "storage_policy", None) is not None:
        plugin.load_state_dict(state, datasets)
    else:
        plugin.load_state_dict(state)


def matching_plugins(strategy: Any, saved: dict[str, Any]) -> list[tuple[str, Any]]:
    """``(key, plugin)`` of the plugins to restore from ``saved``, the checkpoint's
    plugin states, in strategy order.

    Raises:
        CheckpointMismatchError: the strategy has other plugins than those saved, or
            in another order, or Avalanche plugins built with other options.
    """
    plugins = stateful_plugins(strategy)
    keys = [k for k, _ in plugins]
    if keys != list(saved):
        raise CheckpointMismatchError(
            f"The checkpoint holds the state of plugins {list(saved)}, this strategy has "
            f"{keys}: build the strategy with the plugins of the original run, in order"
        )
    mismatch = avalanche_plugin_mismatch(plugins, saved)
    if mismatch is not None:
        raise CheckpointMismatchError(mismatch)
    return plugins


def check_stream(saved: dict[str, Any], experiences: list[Any]) -> None:
    """The stream's classes must be those the saved snapshots were recorded on.

    Args:
        saved: the checkpoint's plugin states.
        experiences: the experiences trained before the checkpoint was saved.

    Raises:
        CheckpointMismatchError: a saved snapshot store recorded other classes.
    """
    given = [experience_classes(exp) for exp in experiences]
    for state in saved.values():
        store = state.get("store") if isinstance(state, dict) else None
        if not isinstance(store, dict) or "classes" not in store:
            continue
        recorded = [sorted(int(c) for c in classes) for classes in store["classes"]]
        if given != recorded:
            raise CheckpointMismatchError(
                f"The checkpoint's snapshots were trained on classes {recorded}, the given "
                f"stream's first experiences have {given}: resume with the stream (and class "
                "order / seed) of the original run"
            )


def _unsaved_state(strategy: Any, plugin: Any, names: list[str]) -> str | None:
    """The first of the attributes ``names`` of ``plugin`` that holds tensors, modules,
    datasets or objects with a ``state_dict`` (looking 4 levels into containers and
    objects), as ``"attribute `a.b[0]` (Type)"``; ``None`` when none does. The model,
    its tensors, the optimizer and the criterion are saved anyway and not counted."""
    seen = {id(strategy), id(plugin), id(strategy.model), id(strategy.optimizer)}
    seen.add(id(criterion_of(strategy)))
    seen.update(id(t) for t in strategy.model.state_dict(keep_vars=True).values())
    for name in names:
        found = _find_state(getattr(plugin, name), name, seen, depth=4)
        if found is not None:
            return found
    return None


_PLAIN = (type(None), bool, int, float, complex, str, bytes, type, types.FunctionType,
          types.BuiltinFunctionType, types.MethodType, types.ModuleType)


def _find_state(value: Any, path: str, seen: set[int], depth: int) -> str | None:
    if isinstance(value, _PLAIN) or id(value) in seen:
        return None
    stateful = isinstance(value, (torch.Tensor, np.ndarray, Dataset))
    stateful = stateful or callable(getattr(value, "state_dict", None))
    if stateful:
        return f"attribute `{path}` ({type(value).__name__})"
    if depth == 0:
        return None
    seen.add(id(value))  # each shared object looked at once; cycles end
    if isinstance(value, dict):
        items = ((f"{path}[{k!r}]", v) for k, v in value.items())
    elif isinstance(value, (list, tuple, set, frozenset, collections.deque)):
        items = ((f"{path}[{i}]", v) for i, v in enumerate(value))
    elif hasattr(value, "__dict__"):
        items = ((f"{path}.{k}", v) for k, v in vars(value).items())
    else:
        return None
    for inner_path, inner in items:
        found = _find_state(inner, inner_path, seen, depth - 1)
        if found is not None:
            return found
    return None


# ----------------------------------------------------- Avalanche's own plugins
# Every access to an attribute of an Avalanche plugin is in this table and the three
# functions after it. tests/test_checkpoint.py pins the table against Avalanche's
# classes: an upgrade that adds, renames or stops resetting an attribute fails there.


def has_state_dict(plugin: Any) -> bool:
    """Whether ``plugin`` saves itself (``state_dict`` and ``load_state_dict``)."""
    return callable(getattr(plugin, "state_dict", None)) and callable(
        getattr(plugin, "load_state_dict", None)
    )


def _avalanche_fields(plugin: Any) -> PluginFields | None:
    """The table's entry for ``plugin``, unless it saves itself (its own ``state_dict``)."""
    if has_state_dict(plugin):
        return None
    return next((f for cls, f in PLUGIN_FIELDS.items() if isinstance(plugin, cls)), None)


def _avalanche_plugin_state(plugin: Any, fields: PluginFields) -> dict[str, Any]:
    saved: dict[str, Any] = {}
    for name in fields.saved:
        value = getattr(plugin, name)
        if isinstance(value, Mean):
            saved[name] = {f: getattr(value, f) for f in MEAN_FIELDS}
        elif callable(getattr(value, "state_dict", None)):
            saved[name] = {"type": type(value).__qualname__, "state_dict": value.state_dict()}
        else:
            saved[name] = value
    return {"compared": _compared_options(plugin, fields), "saved": saved}


def _compared_options(plugin: Any, fields: PluginFields) -> dict[str, Any]:
    values = {name: getattr(plugin, name) for name in fields.compared}
    return {k: getattr(v, "__qualname__", v) if callable(v) else v for k, v in values.items()}


def _load_avalanche_plugin_state(plugin: Any, fields: PluginFields, state: dict[str, Any]) -> None:
    for name in fields.saved:
        current, saved = getattr(plugin, name), state["saved"][name]
        if isinstance(current, Mean):
            for f in MEAN_FIELDS:
                setattr(current, f, saved[f])
        elif callable(getattr(current, "load_state_dict", None)):
            current.load_state_dict(saved["state_dict"])
        else:
            setattr(plugin, name, saved)


def avalanche_plugin_mismatch(plugins: list[tuple[str, Any]], saved: dict[str, Any]) -> str | None:
    """Why a resumed Avalanche plugin does not fit its saved state (other options or
    scheduler type), or ``None`` when every one fits."""
    for key, plugin in plugins:
        fields = _avalanche_fields(plugin)
        if fields is None:
            continue
        ours, theirs = _compared_options(plugin, fields), saved[key]["compared"]
        diff = [
            f"{k}={theirs[k]!r} (this one: {ours[k]!r})" for k in ours if ours[k] != theirs.get(k)
        ]
        for name in fields.saved:
            value = saved[key]["saved"][name]
            kind = type(getattr(plugin, name)).__qualname__
            if isinstance(value, dict) and "type" in value and value["type"] != kind:
                diff.append(f"{name} a {value['type']} (this one: a {kind})")
        if diff:
            return (
                f"The checkpoint's {type(plugin).__name__} was built with " + "; ".join(diff)
                + ". Build the plugins as in the original run"
            )
    return None
