"""The strategy's own state in a checkpoint: model, optimizer, criterion, clock, evaluator.

Each entry :func:`~avalanche_m2kd.checkpoint.save_checkpoint` writes besides the plugins'
(:mod:`avalanche_m2kd.plugin_state`) and the RNG states (:mod:`avalanche_m2kd.rng`) is
built and restored here:

* the model's weights, with heads grown by Avalanche's model adaptation resized back to
  their saved shape;
* the optimizer's state, with its parameter list rebuilt as Avalanche's
  ``make_optimizer`` left it (so momentum buffers stay with their parameters);
* the criterion's and the gradient scaler's state;
* the training clock, and the evaluation plugin's metrics and history (one pickled blob).

Used by :mod:`avalanche_m2kd.checkpoint`.
"""

from __future__ import annotations

import collections
import pickle
from typing import Any

import torch
from avalanche.models.dynamic_optimizers import update_optimizer
from torch import nn

from avalanche_m2kd._avalanche import EVALUATOR_STATE
from avalanche_m2kd._avalanche import criterion as criterion_of
from avalanche_m2kd.checkpoint_format import CheckpointMismatchError, read_config

__all__ = [
    "CLOCK_FIELDS",
    "check_strategy",
    "clock_state",
    "criterion_state",
    "evaluator_blob",
    "load_clock",
    "load_criterion",
    "load_evaluator",
    "load_model",
    "load_optimizer",
    "load_scaler",
    "optimized_params",
    "optimizer_slots",
    "scaler_state",
]

CLOCK_FIELDS = (
    "train_iterations",
    "train_exp_counter",
    "train_exp_epochs",
    "train_exp_iterations",
    "train_epoch_iterations",
    "total_iterations",
)
"""The attributes of Avalanche's training clock a checkpoint saves."""


# ---------------------------------------------------------------------- saving
def optimized_params(strategy: Any) -> dict[str, list[int] | None] | None:
    """Avalanche's name -> optimized-parameter map: ``None`` where it is the model's
    parameter, the shape where it is an older one (a head grown during ``eval``,
    which Avalanche swaps into the optimizer only at the next ``train``)."""
    mapping = getattr(strategy, "optimized_param_id", None)
    if mapping is None:
        return None
    live = dict(strategy.model.named_parameters())
    return {n: None if live.get(n) is p else list(p.shape) for n, p in mapping.items()}


def optimizer_slots(strategy: Any) -> list[list[str | list[int]]] | None:
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


def scaler_state(strategy: Any) -> dict[str, Any] | None:
    """The gradient scaler's ``state_dict``; ``None`` without one."""
    scaler = getattr(strategy, "grad_scaler", None)
    return scaler.state_dict() if scaler is not None else None


def criterion_state(strategy: Any) -> dict[str, Any] | None:
    """The criterion's ``state_dict``; ``None`` when it is not an ``nn.Module``."""
    criterion = criterion_of(strategy)
    return criterion.state_dict() if isinstance(criterion, nn.Module) else None


def clock_state(strategy: Any) -> dict[str, int]:
    """The training clock's counters (:data:`CLOCK_FIELDS`)."""
    return {f: int(getattr(strategy.clock, f)) for f in CLOCK_FIELDS}


def evaluator_blob(strategy: Any) -> bytes:
    """The evaluation plugin's metrics and history, pickled."""
    ev = strategy.evaluator
    return pickle.dumps({f: getattr(ev, f) for f in EVALUATOR_STATE if hasattr(ev, f)})


# --------------------------------------------------------------------- loading
def check_strategy(strategy: Any, state: dict[str, Any]) -> None:
    """Refuse a checkpoint of another strategy class or other M2KD options.

    Raises:
        CheckpointMismatchError: naming the class, or every differing option with
            both values.
    """
    name = type(strategy).__qualname__
    if state["strategy"] != name:
        raise CheckpointMismatchError(
            f"The checkpoint was written by a {state['strategy']} strategy, not a {name}: "
            "resume with the strategy class of the original run"
        )
    ours, saved = getattr(strategy, "m2kd_config", None), read_config(state["config"])
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


def load_model(
    strategy: Any,
    saved: dict[str, torch.Tensor],
    optimized: dict[str, list[int] | None] | None,
    slots: list[list[str | list[int]]] | None,
) -> None:
    """Load the weights, resizing heads that model adaptation grew (as Avalanche did),
    and rebuild the optimizer's parameter list as Avalanche's ``make_optimizer`` left it.

    Raises:
        CheckpointMismatchError: the saved model has other layers or shapes.
    """
    model = strategy.model
    before = dict(model.named_parameters())
    own = model.state_dict()
    _check_layers(saved, own)
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


def _check_layers(saved: dict[str, torch.Tensor], own: dict[str, torch.Tensor]) -> None:
    missing = sorted(set(saved) - set(own))
    unexpected = sorted(set(own) - set(saved))
    if missing or unexpected:
        example = (missing or unexpected)[0]
        raise CheckpointMismatchError(
            f"The checkpoint's model has other layers ({len(missing)} saved entries this "
            f"model lacks, {len(unexpected)} it has that were not saved; e.g. {example!r}): "
            "resume with the architecture of the original run"
        )


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


def load_optimizer(strategy: Any, saved: dict[str, Any]) -> None:
    """Load the optimizer's state (after :func:`load_model` rebuilt its parameter list).

    Raises:
        CheckpointMismatchError: the saved state does not fit this optimizer.
    """
    try:
        strategy.optimizer.load_state_dict(saved)
    except (ValueError, KeyError) as err:
        raise CheckpointMismatchError(
            f"The checkpoint's optimizer state does not fit this optimizer ({err}): build "
            "the optimizer as in the original run, over model.parameters()"
        ) from err


def load_criterion(strategy: Any, saved: dict[str, Any] | None) -> None:
    """Load the criterion's state, if one was saved and the criterion is an ``nn.Module``."""
    criterion = criterion_of(strategy)
    if saved is not None and isinstance(criterion, nn.Module):
        criterion.load_state_dict(saved)


def load_scaler(strategy: Any, saved: dict[str, Any] | None) -> None:
    """Load the gradient scaler's state, if one was saved (it is absent from older files)."""
    scaler = getattr(strategy, "grad_scaler", None)
    if scaler is not None and saved:
        scaler.load_state_dict(saved)


def load_clock(strategy: Any, saved: dict[str, int]) -> None:
    """Set the training clock's counters (:data:`CLOCK_FIELDS`)."""
    for f in CLOCK_FIELDS:
        setattr(strategy.clock, f, saved[f])


def load_evaluator(strategy: Any, blob: bytes) -> None:
    """Restore the evaluation plugin's metrics and history from :func:`evaluator_blob`'s bytes."""
    for f, value in pickle.loads(blob).items():
        setattr(strategy.evaluator, f, value)
