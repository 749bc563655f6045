"""M2KD's ablation variants for ``python -m benchmarks.compare run --ablation``: each
one change (or a past set of defaults) over :class:`~avalanche_m2kd.M2KDStrategy`'s
defaults, by name. A variant is a dictionary of ``M2KDStrategy`` options (JSON-able:
records hold them); :class:`benchmarks.methods.m2kd.M2KDMethod` turns the dtype names
and :meth:`FaithfulKeep.plain() <avalanche_m2kd.pruning.FaithfulKeep.plain>` into
objects. Adding a variant is one entry in :data:`ABLATION`.
"""

from __future__ import annotations

from typing import Any

from avalanche_m2kd.pruning import FaithfulKeep
from benchmarks.backbones import FEATURE_STAGES
from benchmarks.past_defaults import DEFAULTS_02, WHOLE_PASS, WHOLE_PASS_KEEP, on_01, on_02

__all__ = ["ABLATION", "FAITHFUL_KEEP", "RUNNING_BN", "SAMPLED", "WHOLE", "late_shares"]

#: M2KD ablation variants: ``M2KDStrategy`` options on top of the defaults (nested
#: store, ``own`` slice, head-input features, logit adjustment). The ``"defaults"``
#: variants ran under 0.2's defaults, with batch-statistics teachers, and spell that
#: out (:func:`~benchmarks.past_defaults.on_02`, the whole pass measured too).
#: :data:`RUNNING_BN` and :data:`WHOLE` (the same options) are the defaults before the
#: keep search and the BatchNorm re-estimation measured on a part of the pass; today's
#: defaults are :data:`SAMPLED` (and ``m2kd`` in records run after commit e103098).
#: ``teacher_dtype`` and ``mixed_precision`` are names of ``torch`` dtypes (records
#: are JSON), turned into dtypes by :class:`benchmarks.methods.m2kd.M2KDMethod`. The component
#: variants fix ``teacher_slice="cumulative"``: they were measured before ``own``
#: became the default, and are kept as they ran.
_CUM = dict(teacher_slice="cumulative")


def late_shares(n: int, share: float = 0.5) -> list[float]:
    """``prune_ratio`` per experience of an ``n``-experience stream: each experience but
    the last owns ``share / n`` of every layer (``"fair"`` gives ``1 / n``) and the last
    keeps all that is left, a larger trainable part for the final model.

    Example:
        >>> late_shares(5)
        [0.9, 0.888889, 0.875, 0.857143, 0.0]
    """
    s = share / n
    return [round(1 - s / (1 - t * s), 6) for t in range(n - 1)] + [0.0]

#: :class:`avalanche_m2kd.pruning.FaithfulKeep` with its 0.2 defaults (the whole pass), as a
#: record holds it (turned into the object by :class:`benchmarks.methods.m2kd.M2KDMethod`).
FAITHFUL_KEEP = WHOLE_PASS_KEEP

#: The keep search on 1,024 of an experience's training samples and each BatchNorm
#: re-estimation on 512, instead of the whole pass.
SAMPLED = "defaults, keep search on 1,024 samples, BatchNorm re-estimation on 512"
#: Both on the whole pass, as before 0.3. Its options are :data:`RUNNING_BN`'s (0.3's
#: defaults before the part of the pass: RUNNING_BN's 5x2 records at 3%, seeds 0-2, equal
#: the whole-pass default's, and WHOLE's run-time run of seed 0 scores the same 0.8048);
#: it is kept under its own name because the run-time records were run and are read
#: under it.
WHOLE = "defaults, keep search and BatchNorm re-estimation on the whole pass"
#: 0.2's defaults with running-statistics teachers: 0.3's defaults on the whole pass.
RUNNING_BN = "defaults, teachers with running BN statistics"

#: :data:`SAMPLED`'s options: today's defaults, spelled out for the variants over them.
_PART: dict[str, Any] = dict(prune_ratio=FaithfulKeep(samples=1024).plain(),
                             recalibrate_samples=512)

_DENSE = dict(restore_released_at="end_of_experience")
#: The nested store's and the feature term's at their 0.2 values, for the variants measured
#: on top of 0.2 (each sets ``logit_adjustment`` itself). Those measured before 0.2 are
#: built with :func:`benchmarks.past_defaults.on_01`.
_DEFAULTS_02 = dict(prune_ratio=FAITHFUL_KEEP, feat_weight=0.1, **DEFAULTS_02, **WHOLE_PASS,
                    **_DENSE)


ABLATION: dict[str, dict[str, Any]] = {
    "defaults": on_02(),
    "0.1 defaults (fair shares, sparse between experiences, feature weight 1)": on_01(),
    "nested, no feature term": on_01(feat_weight=0.0),
    **{
        f"nested, half shares then the rest, {n} experiences": on_01(prune_ratio=late_shares(n))
        for n in (5, 9)
    },
    **{
        f"nested, dense between experiences, half shares then the rest, {n} experiences": on_01(
            **_DENSE, prune_ratio=late_shares(n)
        )
        for n in (5, 9)
    },
    **{
        f"nested, dense between experiences, half shares then the rest, {n} experiences, "
        "no feature term": on_01(**_DENSE, prune_ratio=late_shares(n), feat_weight=0.0)
        for n in (5, 9)
    },
    "nested, dense between experiences": on_01(**_DENSE),
    "nested, dense between experiences, no feature term": on_01(**_DENSE, feat_weight=0.0),
    "nested, dense between experiences, feature weight 0.1": on_01(**_DENSE, feat_weight=0.1),
    "nested, faithful keep": on_01(prune_ratio=FAITHFUL_KEEP),
    "nested, faithful keep, dense between experiences": on_01(
        **_DENSE, prune_ratio=FAITHFUL_KEEP
    ),
    "nested, faithful keep, dense between experiences, no feature term": on_01(
        **_DENSE, prune_ratio=FAITHFUL_KEEP, feat_weight=0.0
    ),
    **{
        f"0.2 defaults, logit adjustment {tau}": {**_DEFAULTS_02, "logit_adjustment": tau}
        for tau in (0.25, 0.5, 0.75, 1.0)
    },
    "nested, cumulative": on_01(snapshot_mode="nested", **_CUM),
    "pruned, cumulative": on_01(snapshot_mode="pruned", **_CUM),
    "full, cumulative": on_01(snapshot_mode="full", **_CUM),
    "no distillation (replay + LA)": on_01(
        snapshot_mode="full", mm_weight=0.0, feat_weight=0.0, **_CUM
    ),
    "last teacher (LwF + LA)": on_01(
        teachers="last", snapshot_mode="full", feat_weight=0.0, **_CUM
    ),
    "last teacher, no LA (LwF)": on_01(
        teachers="last", snapshot_mode="full", feat_weight=0.0, logit_adjustment=0.0, **_CUM
    ),
    "all teachers, cumulative": on_01(snapshot_mode="full", feat_weight=0.0, **_CUM),
    "all teachers, own": on_01(snapshot_mode="full", teacher_slice="own", feat_weight=0.0),
    "all teachers, own, 2 sampled per batch": on_01(
        snapshot_mode="full", teacher_slice="own", feat_weight=0.0, teacher_sample=2
    ),
    "all teachers, own, bf16 teachers": on_01(
        snapshot_mode="full", teacher_slice="own", feat_weight=0.0, teacher_dtype="bfloat16"
    ),
    "m2kd-full, bf16 student": on_01(snapshot_mode="full", mixed_precision="bfloat16"),
    "m2kd-full, bf16 teachers": on_01(snapshot_mode="full", teacher_dtype="bfloat16"),
    "full, cumulative + stage features": on_01(
        snapshot_mode="full", feature_layers=list(FEATURE_STAGES), **_CUM
    ),
    "full, cumulative + features from all teachers": on_01(
        snapshot_mode="full", feature_teachers="all", **_CUM
    ),
    "full, cumulative, no LA": on_01(snapshot_mode="full", logit_adjustment=0.0, **_CUM),
    "full, cumulative, teachers with running BN statistics": on_01(
        snapshot_mode="full", teacher_bn="running", **_CUM
    ),
    # Where the defaults' final accuracy goes in the evidence regime (each one change):
    "defaults, no distillation": on_02(mm_weight=0.0, feat_weight=0.0),
    "defaults, no feature term": on_02(feat_weight=0.0),
    "defaults, last teacher only": on_02(teachers="last"),
    "defaults, pruned copies": on_02(snapshot_mode="pruned"),
    "defaults, no fine-tune after pruning": on_02(post_prune_epochs=0),
    "defaults, no distillation, no fine-tune after pruning": on_02(
        mm_weight=0.0, feat_weight=0.0, post_prune_epochs=0
    ),
    # Capacity for the late experiences (the keep search falls back to the fair keep on
    # most experiences, so the last one trains 20-30% of the weights):
    "defaults, keep 10% of the free weights each experience": on_02(prune_ratio=0.9),
    "defaults, keep 5% of the free weights each experience": on_02(prune_ratio=0.95),
    RUNNING_BN: on_02(teacher_bn="running"),
    # M2KD's own replay (herding buffer, logit adjustment) with nothing pruned or frozen:
    "defaults, full copies, no distillation": on_02(
        snapshot_mode="full", mm_weight=0.0, feat_weight=0.0
    ),
    "defaults, faithful keep with a 0.1 drop": on_02(
        prune_ratio=FaithfulKeep(max_drop=0.1, samples=None).plain()
    ),
    # Over 0.3's running-statistics teachers: M2KD's own passes measured on a part of
    # each experience's training pass (the default since; docs/benchmarks/run-time.md)
    # or on the whole of it, as before.
    SAMPLED: _PART,
    WHOLE: dict(prune_ratio=WHOLE_PASS_KEEP, **WHOLE_PASS),  # = RUNNING_BN's options
    # Teacher selection over today's defaults (the part of the pass spelled out): on 2+1
    # the teachers' term costs final accuracy (docs/benchmarks/evidence.md), so fewer.
    "defaults (part of the pass), last teacher only": dict(**_PART, teachers="last"),
    "defaults (part of the pass), last teacher, every class it knew (LwF)": dict(
        **_PART, teachers="last", teacher_slice="cumulative"
    ),
    # The nested store's cost is in the classes just learned; on 5x2 under 0.2 the
    # post-prune fine-tune was part of it (docs/benchmarks/evidence.md).
    "defaults (part of the pass), no fine-tune after pruning": dict(
        **_PART, post_prune_epochs=0
    ),
    # A keep search that tolerates what the fine-tune wins back: keeps less on the early
    # experiences, more free weights for the late ones of a long stream.
    "defaults (part of the pass), faithful keep with a 0.1 drop": dict(
        _PART, prune_ratio=FaithfulKeep(max_drop=0.1, samples=1024).plain()
    ),
}
