"""Checkpoint and resume a class-incremental run between experiences.

Avalanche 0.6.0's ``avalanche.checkpointing`` dill-pickles the whole strategy, which
fails with the torch this package is built for: dill cannot pickle
``torch.optim.Optimizer``.
This module saves, explicitly, the state a run carries from one experience to the
next, and restores it into a freshly built strategy:

* the model's weights, with heads grown by Avalanche's model adaptation resized
  back to their saved shape;
* the optimizer's state, with its parameter list rebuilt as Avalanche's
  ``make_optimizer`` left it (so momentum buffers stay with their parameters);
* the criterion's state (e.g. :class:`~avalanche_m2kd.LogitAdjustedCrossEntropy`'s
  running prior);
* the state of every plugin that has ``state_dict`` / ``load_state_dict``: the
  snapshot store and its released weights, the classes seen, the exemplar buffer
  (:class:`~avalanche_m2kd.exemplars.ClassBalancedBuffer`, saved as sample indices
  and rebuilt from the stream);
* the state of Avalanche's ``LRSchedulerPlugin`` (its scheduler's ``state_dict``
  and running loss); Avalanche's ``EarlyStoppingPlugin`` keeps nothing from one
  experience to the next (it resets its best model at each), so only its options
  are saved, to refuse resuming with other ones;
* the training clock, the evaluation plugin's metrics and history, and the RNG
  states of Python, NumPy and torch (CPU and CUDA).

A plugin that holds tensors, modules, datasets or other objects with a
``state_dict`` and has no ``state_dict`` / ``load_state_dict`` of its own (e.g.
Avalanche's ``LwFPlugin`` or ``EWCPlugin``) is refused at :func:`save_checkpoint`:
its state would be lost on resume without a word.

Usage, the shape of Avalanche's own checkpointing::

    strategy = M2KDStrategy(model, optimizer, ...)
    strategy, start = maybe_load_checkpoint(strategy, "run.ckpt", benchmark.train_stream)
    for exp in benchmark.train_stream[start:]:
        strategy.train(exp)
        strategy.eval(benchmark.test_stream)
        save_checkpoint(strategy, "run.ckpt")

A run killed at any point resumes after the last saved experience, and on the CPU
ends with the metrics of a run never interrupted (tested with ``SIGKILL``). The
file is replaced atomically: a write interrupted half-way leaves the previous
checkpoint in place.

Every checkpoint names its format version (:data:`FORMAT_VERSION`); one of a version
this module cannot read is refused with a :class:`CheckpointFormatError` naming the
version found and the one expected, before anything is restored.

The checkpoint is read with ``torch.load(weights_only=True)``; the evaluation
plugin's metric objects travel inside it as one pickled blob, so, as with any
pickle, load only checkpoints you wrote.
"""

from __future__ import annotations

import collections
import os
import pickle
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch
from avalanche.distributed import DistributedHelper
from avalanche.models.dynamic_optimizers import update_optimizer
from torch import nn

from avalanche_m2kd._avalanche import EVALUATOR_STATE
from avalanche_m2kd._avalanche import criterion as criterion_of
from avalanche_m2kd.plugin_state import (
    avalanche_plugin_mismatch,
    load_plugin_state,
    plugin_state,
    stateful_plugins,
)
from avalanche_m2kd.rng import rng_state, set_rng_state
from avalanche_m2kd.stream import experience_classes

__all__ = [
    "FORMAT_VERSION",
    "CheckpointFormatError",
    "CheckpointMismatchError",
    "load_checkpoint",
    "maybe_load_checkpoint",
    "save_checkpoint",
]

StrategyT = TypeVar("StrategyT")  # maybe_load_checkpoint gives back the strategy's own type
FORMAT_VERSION = 1
"""The version of the layout :func:`save_checkpoint` writes, and the only one
:func:`load_checkpoint` reads. Raised whenever a saved entry changes meaning or a
required one is added; version 1 is every checkpoint written since 0.1.0."""
_FORMAT_NAME = "avalanche_m2kd.checkpoint"
FORMAT = f"{_FORMAT_NAME}/{FORMAT_VERSION}"
_CLOCK_FIELDS = (
    "train_iterations",
    "train_exp_counter",
    "train_exp_epochs",
    "train_exp_iterations",
    "train_epoch_iterations",
    "total_iterations",
)


class CheckpointMismatchError(ValueError):
    """The checkpoint was written by another configuration, model or stream."""


class CheckpointFormatError(ValueError):
    """The file is an avalanche-m2kd checkpoint of a format version this one cannot read."""


# ---------------------------------------------------------------------- saving
def save_checkpoint(strategy: Any, path: str | os.PathLike) -> None:
    """Save what resuming ``strategy`` after its last finished experience needs.

    Call it between experiences (after ``train`` and, if you evaluate, ``eval``).
    The file is written next to ``path`` under a temporary name, flushed to disk
    and renamed over ``path``, so ``path`` always holds a complete checkpoint
    (temporaries left by a write that was killed are removed at the next save).
    Under ``torchrun`` (Avalanche's ``DistributedHelper``) every rank calls it and
    rank 0 alone writes (the ranks hold the same training state); the others wait
    until the file is in place.

    Args:
        strategy: an Avalanche ``SupervisedTemplate`` strategy (e.g.
            :class:`~avalanche_m2kd.M2KDStrategy`).
        path: the checkpoint file; its folder must exist.

    Raises:
        ValueError: a plugin keeps state this module cannot save, which would be
            lost on resume: a replay buffer other than
            :class:`~avalanche_m2kd.exemplars.ClassBalancedBuffer`, or tensors,
            modules, datasets or objects with a ``state_dict`` in a plugin that has
            no ``state_dict`` / ``load_state_dict`` of its own and is not one of the
            Avalanche plugins this module knows (``LRSchedulerPlugin``,
            ``EarlyStoppingPlugin``).
    """
    if DistributedHelper.is_distributed and not DistributedHelper.is_main_process:
        stateful_plugins(strategy)  # the same refusal on every rank, no state built
        DistributedHelper.barrier()
        return
    state = {
        "format": FORMAT,
        "strategy": type(strategy).__qualname__,
        "config": getattr(strategy, "m2kd_config", None),
        "model": strategy.model.state_dict(),
        "optimizer": strategy.optimizer.state_dict(),
        "optimized_params": _optimized_params(strategy),
        "optimizer_slots": _optimizer_slots(strategy),
        "criterion": _criterion_state(strategy),
        "grad_scaler": _scaler_state(strategy),
        "plugins": {key: plugin_state(p) for key, p in stateful_plugins(strategy)},
        "clock": {f: int(getattr(strategy.clock, f)) for f in _CLOCK_FIELDS},
        "evaluator": _evaluator_blob(strategy),
        "rng": rng_state(),
    }
    _atomic_save(state, Path(path))
    if DistributedHelper.is_distributed:
        DistributedHelper.barrier()


def _atomic_save(state: dict[str, Any], path: Path) -> None:
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a write that was killed
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would make the checkpoint private
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _optimized_params(strategy: Any) -> dict[str, list[int] | None] | None:
    """Avalanche's name -> optimized-parameter map: ``None`` where it is the model's
    parameter, the shape where it is an older one (a head grown during ``eval``,
    which Avalanche swaps into the optimizer only at the next ``train``)."""
    mapping = getattr(strategy, "optimized_param_id", None)
    if mapping is None:
        return None
    live = dict(strategy.model.named_parameters())
    return {n: None if live.get(n) is p else list(p.shape) for n, p in mapping.items()}


def _optimizer_slots(strategy: Any) -> list[list[str | list[int]]] | None:
    """Each optimizer group's parameters in order: the name Avalanche maps it to, or the
    shape of a tensor no longer in that map (an eval before the first train grows the
    head, and Avalanche's first ``make_optimizer`` appends the new head tensors beside
    the old ones, which stay in the optimizer)."""
    mapping = getattr(strategy, "optimized_param_id", None)
    if mapping is None:
        return None
    names = {id(p): n for n, p in mapping.items()}
    groups = strategy.optimizer.param_groups
    return [[names.get(id(p), list(p.shape)) for p in g["params"]] for g in groups]


def _scaler_state(strategy: Any) -> dict[str, Any] | None:
    scaler = getattr(strategy, "grad_scaler", None)
    return scaler.state_dict() if scaler is not None else None


def _criterion_state(strategy: Any) -> dict[str, Any] | None:
    criterion = criterion_of(strategy)
    return criterion.state_dict() if isinstance(criterion, nn.Module) else None


def _evaluator_blob(strategy: Any) -> bytes:
    ev = strategy.evaluator
    return pickle.dumps({f: getattr(ev, f) for f in EVALUATOR_STATE if hasattr(ev, f)})


# --------------------------------------------------------------------- loading
def load_checkpoint(
    strategy: Any,
    path: str | os.PathLike,
    train_stream: Sequence[Any],
    map_location: str | torch.device | None = None,
) -> int:
    """Restore ``strategy`` from ``path``; return the number of experiences trained.

    ``strategy`` must be built as for the original run (same class, model,
    optimizer type and options) but not yet trained.

    Args:
        strategy: the freshly built strategy.
        path: a file written by :func:`save_checkpoint`.
        train_stream: the training stream of the run (the exemplar buffer is
            rebuilt from its experiences' datasets).
        map_location: where the saved tensors go first (default: the strategy's
            device).

    Raises:
        CheckpointMismatchError: the checkpoint comes from another strategy class,
            other M2KD options, another model, another stream, other plugins, or
            Avalanche plugins built with other options (e.g. an ``LRSchedulerPlugin``
            with another ``reset_lr`` or scheduler class) — the message says which.
        CheckpointFormatError: the checkpoint has a format version other than
            :data:`FORMAT_VERSION` (the message names both).
        ValueError: the file is not an avalanche-m2kd checkpoint.
    """
    map_location = strategy.device if map_location is None else map_location
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        raise ValueError(f"{os.fspath(path)!r} is not a readable checkpoint: {err}") from err
    _check_format(state, path)
    _check_config(strategy, state)
    done = state["clock"]["train_exp_counter"]
    experiences = list(train_stream[:done]) if done else []
    if len(experiences) != done:
        raise CheckpointMismatchError(
            f"The checkpoint was saved after {done} experiences, but the given stream has "
            f"only {len(experiences)}: pass the training stream of the original run"
        )
    _check_stream(state["plugins"], experiences)
    plugins = _matching_plugins(strategy, state["plugins"])
    mismatch = avalanche_plugin_mismatch(plugins, state["plugins"])
    if mismatch is not None:
        raise CheckpointMismatchError(mismatch)

    _load_model(strategy, state["model"], state["optimized_params"], state.get("optimizer_slots"))
    _load_optimizer(strategy, state["optimizer"])
    criterion = criterion_of(strategy)
    if state["criterion"] is not None and isinstance(criterion, nn.Module):
        criterion.load_state_dict(state["criterion"])
    scaler = getattr(strategy, "grad_scaler", None)
    if scaler is not None and state.get("grad_scaler"):
        scaler.load_state_dict(state["grad_scaler"])
    datasets = [exp.dataset for exp in experiences]
    for key, plugin in plugins:
        load_plugin_state(plugin, state["plugins"][key], datasets)
    for f in _CLOCK_FIELDS:
        setattr(strategy.clock, f, state["clock"][f])
    for f, value in pickle.loads(state["evaluator"]).items():
        setattr(strategy.evaluator, f, value)
    set_rng_state(state["rng"])
    return done


def maybe_load_checkpoint(
    strategy: StrategyT,
    path: str | os.PathLike,
    train_stream: Sequence[Any],
    map_location: str | torch.device | None = None,
) -> tuple[StrategyT, int]:
    """Resume from ``path`` if it exists: ``(strategy, first experience to train)``.

    The return value mirrors Avalanche's ``maybe_load_checkpoint``; with no file
    at ``path`` the strategy is returned untouched with ``0``. See
    :func:`load_checkpoint` for the arguments and errors.
    """
    if not os.path.exists(path):
        return strategy, 0
    return strategy, load_checkpoint(strategy, path, train_stream, map_location)


def _check_format(state: Any, path: str | os.PathLike) -> None:
    """Refuse anything but a checkpoint of :data:`FORMAT_VERSION`, naming what it is."""
    found = state.get("format") if isinstance(state, dict) else None
    name, _, version = found.partition("/") if isinstance(found, str) else ("", "", "")
    if name != _FORMAT_NAME:
        what = repr(found) if isinstance(state, dict) else f"a {type(state).__name__}"
        raise ValueError(
            f"{os.fspath(path)!r} is not an avalanche-m2kd checkpoint of format {FORMAT} "
            f"(found {what}): write it with avalanche_m2kd.checkpoint.save_checkpoint"
        )
    if version != str(FORMAT_VERSION):
        newer = version.isdigit() and int(version) > FORMAT_VERSION
        advice = (
            "it was written by a newer avalanche-m2kd: resume with that version"
            if newer
            else "resume with the avalanche-m2kd that wrote it, or start the run again"
        )
        raise CheckpointFormatError(
            f"{os.fspath(path)!r} is an avalanche-m2kd checkpoint of format version {version!r}, "
            f"but this avalanche-m2kd reads format version {FORMAT_VERSION} only: {advice}"
        )


def _resolved_01(config: dict[str, Any] | None) -> dict[str, Any] | None:
    """A configuration as written by avalanche-m2kd 0.1, which held ``prune_ratio=None``
    for its default (``"fair"`` with nested storage, else 0.5); later ones hold the
    value that ran."""
    if not config or "prune_ratio" not in config or config["prune_ratio"] is not None:
        return config
    return {**config, "prune_ratio": "fair" if config.get("snapshot_mode") == "nested" else 0.5}


def _check_config(strategy: Any, state: dict[str, Any]) -> None:
    name = type(strategy).__qualname__
    if state["strategy"] != name:
        raise CheckpointMismatchError(
            f"The checkpoint was written by a {state['strategy']} strategy, not a {name}: "
            "resume with the strategy class of the original run"
        )
    ours, saved = getattr(strategy, "m2kd_config", None), _resolved_01(state["config"])
    if ours != saved and ours is not None and saved is not None:
        diff = [
            f"{k}={saved.get(k)!r} (this strategy: {ours.get(k)!r})"
            for k in sorted(set(ours) | set(saved))
            if ours.get(k) != saved.get(k)
        ]
        raise CheckpointMismatchError(
            "The checkpoint was written with other M2KD options: " + "; ".join(diff)
            + ". Build the strategy with the checkpoint's options, or save to another path"
        )


def _load_model(
    strategy: Any,
    saved: dict[str, torch.Tensor],
    optimized: dict[str, list[int] | None] | None,
    slots: list[list[str | list[int]]] | None,
) -> None:
    """Load the weights, resizing heads that model adaptation grew (as Avalanche did),
    and rebuild the optimizer's parameter list as Avalanche's ``make_optimizer`` left it."""
    model = strategy.model
    before = dict(model.named_parameters())
    own = model.state_dict()
    missing = sorted(set(saved) - set(own))
    unexpected = sorted(set(own) - set(saved))
    if missing or unexpected:
        example = (missing or unexpected)[0]
        raise CheckpointMismatchError(
            f"The checkpoint's model has other layers ({len(missing)} saved entries this "
            f"model lacks, {len(unexpected)} it has that were not saved; e.g. {example!r}): "
            "resume with the architecture of the original run"
        )
    for name, value in saved.items():
        if own[name].shape != value.shape:
            _resize(model, name, value, own[name])
    strategy.model = model.to(strategy.device)
    model.load_state_dict(saved)
    if optimized is None:  # never trained: Avalanche maps the optimizer at the first train
        return
    mapping: dict[str, nn.Parameter] = dict(model.named_parameters())
    for name, shape in optimized.items():
        if shape is not None:  # an older parameter still in the optimizer: a stand-in
            mapping[name] = nn.Parameter(torch.zeros(shape, device=mapping[name].device))
    if slots is None:  # written before optimizer slots were saved
        update_optimizer(strategy.optimizer, mapping, before, reset_state=True)
    else:
        for group, entries in zip(strategy.optimizer.param_groups, slots, strict=False):
            group["params"] = [
                mapping[e] if isinstance(e, str)
                else nn.Parameter(torch.zeros(e, device=strategy.device))
                for e in entries
            ]
        strategy.optimizer.state = collections.defaultdict(dict)
    strategy.optimized_param_id = mapping


def _resize(model: nn.Module, name: str, saved: torch.Tensor, current: torch.Tensor) -> None:
    module_name, _, leaf = name.rpartition(".")
    module = model.get_submodule(module_name)
    same_rank = current.dim() == saved.dim()
    if isinstance(module, nn.Linear) and leaf in ("weight", "bias") and same_rank:
        if leaf == "weight":
            if saved.shape[1] != module.in_features:
                raise CheckpointMismatchError(
                    f"The checkpoint's {name!r} takes {saved.shape[1]} inputs, this model's "
                    f"{module.in_features}: resume with the architecture of the original run"
                )
            module.out_features = saved.shape[0]
        setattr(module, leaf, nn.Parameter(torch.empty_like(saved, device=current.device)))
    elif leaf in dict(module.named_buffers(recurse=False)) and same_rank:
        # in the saved state_dict, so persistent: register_buffer's default
        module.register_buffer(leaf, torch.empty_like(saved, device=current.device))
    else:
        raise CheckpointMismatchError(
            f"The checkpoint's {name!r} has shape {tuple(saved.shape)}, this model's "
            f"{tuple(current.shape)}: resume with the architecture of the original run"
        )


def _load_optimizer(strategy: Any, saved: dict[str, Any]) -> None:
    try:
        strategy.optimizer.load_state_dict(saved)
    except (ValueError, KeyError) as err:
        raise CheckpointMismatchError(
            f"The checkpoint's optimizer state does not fit this optimizer ({err}): build "
            "the optimizer as in the original run, over model.parameters()"
        ) from err


def _matching_plugins(strategy: Any, saved: dict[str, Any]) -> list[tuple[str, Any]]:
    plugins = stateful_plugins(strategy)
    keys = [k for k, _ in plugins]
    if keys != list(saved):
        raise CheckpointMismatchError(
            f"The checkpoint holds the state of plugins {list(saved)}, this strategy has "
            f"{keys}: build the strategy with the plugins of the original run, in order"
        )
    return plugins


def _check_stream(saved_plugins: dict[str, Any], experiences: list[Any]) -> None:
    """The stream's classes must be those the saved snapshots were recorded on."""
    given = [experience_classes(exp) for exp in experiences]
    for state in saved_plugins.values():
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
