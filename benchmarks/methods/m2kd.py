"""M2KD: :class:`~avalanche_m2kd.M2KDStrategy`, its fixed bytes measured by construction."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import nn

from avalanche_m2kd import M2KDStrategy
from avalanche_m2kd.pruning import FaithfulKeep
from benchmarks.methods.base import Method, Setting, register, replay_exemplars

__all__ = ["STORE_BYTES_CACHE", "M2KDMethod", "stand_in_stream", "store_bytes"]


class M2KDMethod(Method):
    """:class:`~avalanche_m2kd.M2KDStrategy` with its defaults, overridden by
    ``options`` (the ablation's variants). ``teacher_dtype`` and ``mixed_precision``
    are names of ``torch`` dtypes and a ``prune_ratio`` dictionary is
    :meth:`FaithfulKeep.plain() <avalanche_m2kd.pruning.FaithfulKeep.plain>` (records
    are JSON).

    Its fixed bytes are its snapshot store's final size, measured by construction:
    :func:`store_bytes` runs the same strategy on a two-images-per-class stand-in of
    the stream (same class structure, untrained weights, one epoch) and reads
    ``strategy.snapshots.nbytes()``, which depends on the model's shapes and the
    stream, not on the data.
    """

    def __init__(self, name: str, **defaults: Any) -> None:  # noqa: D107
        super().__init__(name, **defaults)

    def params(  # noqa: D102 - any M2KDStrategy option
        self, options: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        return {**self.defaults, **(options or {})}

    def build(  # noqa: D102
        self, n_exemplars: int, setting: Setting, options: dict[str, Any] | None = None
    ) -> M2KDStrategy:
        p = self.params(options)
        p.setdefault("temperature", setting.temperature)
        plugins = p.pop("plugins", None)
        for key in ("teacher_dtype", "mixed_precision"):
            if isinstance(p.get(key), str):
                p[key] = getattr(torch, p[key])
        if isinstance(p.get("prune_ratio"), dict):  # FaithfulKeep.plain()
            p["prune_ratio"] = FaithfulKeep(**p["prune_ratio"]["faithful_keep"])
        model = setting.model()
        return M2KDStrategy(
            model,
            setting.optimizer(model),
            nn.CrossEntropyLoss(),
            mem_size=n_exemplars,
            plugins=plugins,
            **p,
            **setting.template_args(),
        )

    def stored_bytes(self, strategy: Any, setting: Setting) -> dict[str, int]:  # noqa: D102
        return self._counts(exemplars=replay_exemplars(strategy) * setting.image_bytes,
                            snapshots=strategy.snapshots.nbytes())

    def fixed_bytes(  # noqa: D102
        self, setting: Setting, options: dict[str, Any] | None = None
    ) -> int:
        return store_bytes(self, setting, options)


#: :func:`store_bytes`'s results, by its inputs.
STORE_BYTES_CACHE: dict[str, int] = {}


def stand_in_stream(setting: Setting) -> Any:
    """A stream with ``setting``'s class structure and two random images per class."""
    from avalanche.benchmarks.scenarios.deprecated.generators import nc_benchmark
    from torch.utils.data import TensorDataset

    generator = torch.Generator().manual_seed(0)
    targets = [c for c in range(setting.n_classes) for _ in range(2)]
    data = TensorDataset(
        torch.rand(len(targets), *setting.image_shape, generator=generator), torch.tensor(targets)
    )
    setattr(data, "targets", targets)  # noqa: B010 - TensorDataset declares no `targets`
    order = [c for classes in setting.experience_classes for c in classes]
    return nc_benchmark(
        train_dataset=data,
        test_dataset=data,
        n_experiences=len(setting.experience_classes),
        task_labels=False,
        shuffle=False,
        fixed_class_order=order,
        per_exp_classes={k: len(c) for k, c in enumerate(setting.experience_classes)},
        class_ids_from_zero_from_first_exp=True,
    )


def store_bytes(method: M2KDMethod, setting: Setting, options: dict[str, Any] | None = None) -> int:
    """The final ``snapshots.nbytes()`` of ``method`` on ``setting``'s stream, by construction.

    Runs :meth:`M2KDMethod.build` (exemplar-free, one epoch, pruning at its end) on
    :func:`stand_in_stream` and returns the store's bytes after the last experience.
    The global RNG states are restored afterwards; results are cached per input.
    """
    p = {k: v for k, v in method.params(options).items() if k != "plugins"}
    key = json.dumps(
        [
            repr(setting.experience_classes), setting.n_classes, setting.image_shape,
            setting.backbone, setting.width, p,
        ],
        sort_keys=True,
        default=str,
    )
    if key not in STORE_BYTES_CACHE:
        states = random.getstate(), np.random.get_state(), torch.get_rng_state()
        try:
            torch.manual_seed(0)
            dry = replace(
                setting,
                epochs=1,
                batch_size=2 * max(len(c) for c in setting.experience_classes),
                loggers=(),
            )
            strategy = method.build(0, dry, {**(options or {}), "post_prune_epochs": 0})
            for experience in stand_in_stream(setting).train_stream:
                strategy.train(experience, num_workers=0)
            STORE_BYTES_CACHE[key] = int(strategy.snapshots.nbytes())
        finally:
            random.setstate(states[0])
            np.random.set_state(states[1])
            torch.set_rng_state(states[2])
    return STORE_BYTES_CACHE[key]


register(M2KDMethod("m2kd"))
register(M2KDMethod("m2kd-full", snapshot_mode="full"))
