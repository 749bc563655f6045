"""M2KD's option values that later releases changed, for variants measured before them.

A variant measured under 0.1's (or 0.2's) defaults spells these out (its own options
win), so its record is reproduced by the variant whatever today's defaults are. The
benchmark scripts whose committed records ran under 0.1 (``compare``'s ablation
variants, ``digits_variants``) build those variants with :func:`on_01`; the ablation
variants measured under 0.2 with :func:`on_02`; the ablation variants measured under 0.3's
running-statistics teachers, before the keep search and the BatchNorm re-estimation
measured on a part of the pass, with :data:`WHOLE_PASS`.
"""

from __future__ import annotations

from typing import Any

from avalanche_m2kd.pruning import FaithfulKeep

#: 0.1's values of the options of every store that 0.2 changed.
DEFAULTS_01_ANY_STORE: dict[str, Any] = dict(feat_weight=1.0, logit_adjustment=1.0,
                                              teacher_bn="batch")
#: 0.2's values that 0.3 changed: teachers on the mini-batch's BatchNorm statistics.
DEFAULTS_02: dict[str, Any] = dict(teacher_bn="batch")
#: Before 0.3 measured on a part of each experience's pass, the keep search and every
#: BatchNorm re-estimation used the whole pass: every variant measured before it
#: (any store; :data:`WHOLE_PASS_KEEP` is the nested store's default keep search then).
WHOLE_PASS: dict[str, Any] = dict(recalibrate_samples=None)
#: ``FaithfulKeep``'s defaults on the whole pass, as a record holds it.
WHOLE_PASS_KEEP: dict[str, Any] = FaithfulKeep(samples=None).plain()
#: 0.1's values of the nested store's own options that 0.2 changed.
DEFAULTS_01_NESTED: dict[str, Any] = dict(prune_ratio="fair", restore_released_at="next_experience")


def on_01(**options: Any) -> dict[str, Any]:
    """``options`` over 0.1's defaults (the nested store's only where the store is nested).

    Example:
        >>> options = on_01(snapshot_mode="full", feat_weight=0.0)
        >>> options["feat_weight"], options["teacher_bn"], "prune_ratio" in options
        (0.0, 'batch', False)
        >>> sorted(on_01())  # doctest: +NORMALIZE_WHITESPACE
        ['feat_weight', 'logit_adjustment', 'prune_ratio', 'recalibrate_samples',
         'restore_released_at', 'teacher_bn']
    """
    nested = options.get("snapshot_mode", "nested") == "nested"
    return {**DEFAULTS_01_ANY_STORE, **WHOLE_PASS, **(DEFAULTS_01_NESTED if nested else {}),
            **options}


def on_02(**options: Any) -> dict[str, Any]:
    """``options`` over 0.2's defaults: batch-statistics teachers and the whole pass
    measured (the nested store's keep search too), unless they say otherwise.

    Example:
        >>> full = on_02(snapshot_mode="full", feat_weight=0.0)
        >>> sorted(full.items())  # doctest: +NORMALIZE_WHITESPACE
        [('feat_weight', 0.0), ('recalibrate_samples', None), ('snapshot_mode', 'full'),
         ('teacher_bn', 'batch')]
        >>> on_02()["prune_ratio"]["faithful_keep"]["samples"] is None
        True
    """
    nested = options.get("snapshot_mode", "nested") == "nested"
    keep = dict(prune_ratio=WHOLE_PASS_KEEP) if nested else {}
    return {**DEFAULTS_02, **WHOLE_PASS, **keep, **options}
