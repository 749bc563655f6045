"""The harness's regimes: named sets of ``run`` options (``--preset``), each a data set
(:mod:`benchmarks.data_sets`, ``data_set``, Fashion-MNIST unless it says), a backbone,
the images per class, the training schedule, the streams, budgets, seeds and methods.
Any option given on the command line wins over its preset's. Adding a regime is one
entry in :data:`PRESETS` (``python -m benchmarks.compare --help`` lists them).
"""

from __future__ import annotations

from typing import Any

__all__ = ["DEFAULT_MEMORY_EXEMPLARS", "PRESETS"]

#: Exemplar counts of the default total memories (each plus one model), where a preset
#: names none (``memory_exemplars``).
DEFAULT_MEMORY_EXEMPLARS = (200, 1000, 2000)

PRESETS: dict[str, dict[str, Any]] = {
    "cpu": dict(backbone="cnn", train_per_class=300, test_per_class=200, epochs=5, batch_size=64,
                lr=0.05, streams=["5x2", "2+1"], budgets=[0, 200, 1000], seeds=[0, 1, 2]),
    "quick": dict(backbone="cnn", train_per_class=100, test_per_class=100, epochs=2, batch_size=64,
                  lr=0.05, streams=["5x2", "2+1"], budgets=[0, 200], seeds=[0]),
    "memory": dict(backbone="cnn", train_per_class=200, test_per_class=100, epochs=4, batch_size=64,
                   lr=0.05, streams=["5x2", "2+1"], budgets=[0, 200, 1000], seeds=[0, 1, 2],
                   class_order="permuted", memory_exemplars=[200, 500, 1000]),
    "evidence": dict(backbone="cnn", train_per_class=1000, test_per_class=500, epochs=8,
                     batch_size=64, lr=0.05, lr_schedule="cosine", streams=["5x2", "2+1", "5+1"],
                     budgets=[0, 100, 500], seeds=[0, 1, 2, 3, 4], class_order="permuted",
                     memory_exemplars=[100, 300, 500],
                     methods=["m2kd", "replay-la-0.75", "er-ace", "der", "bic"]),
    "gpu": dict(backbone="resnet32", train_per_class=None, test_per_class=None, epochs=30,
                batch_size=128, lr=0.1, streams=["5x2", "2+1"], budgets=[0, 200, 1000],
                seeds=[0, 1, 2]),
}
