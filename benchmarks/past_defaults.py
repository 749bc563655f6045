"""M2KD's option values of 0.1 that 0.2 changed, for variants measured before 0.2.

A variant measured under 0.1's defaults spells these out (its own options win), so its
record is reproduced by the variant whatever today's defaults are. The benchmark
scripts whose committed records ran under 0.1 (``compare``'s ablation variants,
``digits_variants``) build those variants with :func:`on_01`.
"""

from __future__ import annotations

from typing import Any

#: 0.1's values of the options of every store that 0.2 changed.
DEFAULTS_01_ANY_STORE: dict[str, Any] = dict(feat_weight=1.0, logit_adjustment=1.0)
#: 0.1's values of the nested store's own options that 0.2 changed.
DEFAULTS_01_NESTED: dict[str, Any] = dict(prune_ratio="fair", restore_released_at="next_experience")


def on_01(**options: Any) -> dict[str, Any]:
    """``options`` over 0.1's defaults (the nested store's only where the store is nested).

    Example:
        >>> on_01(snapshot_mode="full", feat_weight=0.0)
        {'feat_weight': 0.0, 'logit_adjustment': 1.0, 'snapshot_mode': 'full'}
        >>> sorted(on_01())
        ['feat_weight', 'logit_adjustment', 'prune_ratio', 'restore_released_at']
    """
    nested = options.get("snapshot_mode", "nested") == "nested"
    return {**DEFAULTS_01_ANY_STORE, **(DEFAULTS_01_NESTED if nested else {}), **options}
