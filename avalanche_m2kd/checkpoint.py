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

Every checkpoint names its format version
(:data:`~avalanche_m2kd.checkpoint_format.FORMAT_VERSION`); one of a version this module
cannot read is refused with a
:class:`~avalanche_m2kd.checkpoint_format.CheckpointFormatError` naming the
version found and the one expected, before anything is restored.

The checkpoint is read with ``torch.load(weights_only=True)``; the evaluation
plugin's metric objects travel inside it as one pickled blob, so, as with any
pickle, load only checkpoints you wrote.

This module is the public entry point and puts the pieces together; each concern has
its module: the format version and errors in :mod:`avalanche_m2kd.checkpoint_format`,
the strategy's own state in :mod:`avalanche_m2kd.strategy_state`, the plugins' in
:mod:`avalanche_m2kd.plugin_state`, and the atomic write and the read in
:mod:`avalanche_m2kd.checkpoint_files`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch
from avalanche.distributed import DistributedHelper

from avalanche_m2kd.checkpoint_files import read_state, write_atomically
from avalanche_m2kd.checkpoint_format import FORMAT, check_format
from avalanche_m2kd.checkpoint_format import FORMAT_VERSION as FORMAT_VERSION
from avalanche_m2kd.checkpoint_format import CheckpointFormatError as CheckpointFormatError
from avalanche_m2kd.checkpoint_format import CheckpointMismatchError as CheckpointMismatchError
from avalanche_m2kd.plugin_state import (
    check_stream,
    load_plugin_state,
    matching_plugins,
    plugin_state,
    stateful_plugins,
)
from avalanche_m2kd.rng import rng_state, set_rng_state
from avalanche_m2kd.strategy_state import (
    check_strategy,
    clock_state,
    criterion_state,
    evaluator_blob,
    load_clock,
    load_criterion,
    load_evaluator,
    load_model,
    load_optimizer,
    load_scaler,
    optimized_params,
    optimizer_slots,
    scaler_state,
)

# FORMAT_VERSION and the two errors are importable from here too; they are documented
# where they are defined, in avalanche_m2kd.checkpoint_format.
__all__ = [
    "load_checkpoint",
    "maybe_load_checkpoint",
    "save_checkpoint",
]

StrategyT = TypeVar("StrategyT")  # maybe_load_checkpoint gives back the strategy's own type


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
        "optimized_params": optimized_params(strategy),
        "optimizer_slots": optimizer_slots(strategy),
        "criterion": criterion_state(strategy),
        "grad_scaler": scaler_state(strategy),
        "plugins": {key: plugin_state(p) for key, p in stateful_plugins(strategy)},
        "clock": clock_state(strategy),
        "evaluator": evaluator_blob(strategy),
        "rng": rng_state(),
    }
    write_atomically(state, Path(path))
    if DistributedHelper.is_distributed:
        DistributedHelper.barrier()


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
            :data:`~avalanche_m2kd.checkpoint_format.FORMAT_VERSION` (the message names both).
        ValueError: the file is not an avalanche-m2kd checkpoint.
    """
    map_location = strategy.device if map_location is None else map_location
    state = read_state(path, map_location)
    check_format(state, path)
    check_strategy(strategy, state)
    experiences = _trained_experiences(state["clock"]["train_exp_counter"], train_stream)
    check_stream(state["plugins"], experiences)
    plugins = matching_plugins(strategy, state["plugins"])

    load_model(strategy, state["model"], state["optimized_params"], state.get("optimizer_slots"))
    load_optimizer(strategy, state["optimizer"])
    load_criterion(strategy, state["criterion"])
    load_scaler(strategy, state.get("grad_scaler"))
    datasets = [exp.dataset for exp in experiences]
    for key, plugin in plugins:
        load_plugin_state(plugin, state["plugins"][key], datasets)
    load_clock(strategy, state["clock"])
    load_evaluator(strategy, state["evaluator"])
    set_rng_state(state["rng"])
    return len(experiences)


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


def _trained_experiences(done: int, train_stream: Sequence[Any]) -> list[Any]:
    """The ``done`` experiences the checkpoint was saved after, from ``train_stream``."""
    experiences = list(train_stream[:done]) if done else []
    if len(experiences) != done:
        raise CheckpointMismatchError(
            f"The checkpoint was saved after {done} experiences, but the given stream has "
            f"only {len(experiences)}: pass the training stream of the original run"
        )
    return experiences
