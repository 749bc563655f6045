"""The option objects: validated once, the same strategy as the flat keywords, one config."""

from __future__ import annotations

import dataclasses
import inspect
import re
from typing import Any, get_args

import pytest
import torch
from avalanche.training.plugins import EvaluationPlugin

from avalanche_m2kd import (
    DistillationOptions,
    M2KDStrategy,
    MultiLevelDistillationPlugin,
    MultiModelDistillationPlugin,
    SnapshotOptions,
    SnapshotStore,
    TeacherOptions,
)
from avalanche_m2kd.checkpoint_format import read_config
from avalanche_m2kd.losses import FeatureLoss
from avalanche_m2kd.option_types import TeacherSet, m2kd_config
from avalanche_m2kd.pruning import FaithfulKeep

GROUPS = (SnapshotOptions, DistillationOptions, TeacherOptions)


def _strategy(mlp, **options):
    model = mlp()
    return M2KDStrategy(model, torch.optim.SGD(model.parameters(), lr=0.1),
                        evaluator=EvaluationPlugin(loggers=[]), **options)


def _config_before(model, **o: Any) -> dict[str, Any]:
    """``m2kd_config`` as M2KDStrategy built it by hand before the option objects
    (avalanche-m2kd 0.1.0): checkpoints written then hold this dictionary, but for
    ``prune_ratio``: 0.1.0 wrote ``None`` for its default, today's config holds the
    value that runs (a checkpoint's ``None`` is read as 0.1.0's ``"fair"``)."""
    from avalanche_m2kd.features import find_head

    d = {k: p.default for k, p in inspect.signature(M2KDStrategy.__init__).parameters.items()}
    d.update(o)
    layers, ratio = d["feature_layers"], d["prune_ratio"]
    if ratio is None:  # before 0.3 FaithfulKeep had no `samples`
        ratio = ({"faithful_keep": {"max_drop": 0.02, "shares": [0.125, 0.25, 0.5]}}
                 if d["snapshot_mode"] == "nested" else 0.5)
    return {
        "feature_layers": (None if layers is None
                           else list([layers] if isinstance(layers, str) else layers)),
        "mem_size": d["mem_size"],
        "snapshot_mode": d["snapshot_mode"],
        "prune_ratio": list(ratio) if isinstance(ratio, (list, tuple)) else ratio,
        **{k: d[k] for k in ("post_prune_epochs", "temperature", "mm_weight", "feat_weight",
                             "teacher_slice", "teachers", "feature_loss", "feature_teachers",
                             "teacher_bn", "logit_adjustment", "teacher_sample")},
        "head_name": find_head(model, d["head_name"]),
        "restore_released_at": d["restore_released_at"],
        "recalibrate_bn": d["recalibrate_bn"],
        "teacher_dtype": None if d["teacher_dtype"] is None else str(d["teacher_dtype"]),
        "cache_teachers": d["cache_teachers"],
        "teacher_batching": d["teacher_batching"],
        "mixed_precision": None if d["mixed_precision"] is None else str(d["mixed_precision"]),
    }


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"feature_layers": "2", "prune_ratio": (0.5, 0.25), "teacher_dtype": torch.bfloat16,
         "temperature": 3},
        {"snapshot_mode": "pruned", "prune_ratio": 0.3, "teachers": "last", "teacher_sample": 2,
         "mem_size": 0, "feature_layers": ["0", "2:input"], "cache_teachers": False,
         "mixed_precision": torch.bfloat16, "teacher_dtype": torch.float32,
         "post_prune_epochs": 0, "logit_adjustment": 0.0, "head_name": "4"},
        {"snapshot_mode": "full", "feat_weight": 0.0, "teacher_bn": "running",
         "recalibrate_bn": False, "restore_released_at": "end_of_experience",
         "teacher_batching": "vmap", "feature_loss": "attention"},
    ],
    ids=["defaults", "tuples-and-dtypes", "pruned-many", "full-no-features"],
)
def test_m2kd_config_keeps_the_keys_and_values_checkpoints_hold(mlp, options):
    # the values of the options 0.3 added that ran before them: the whole pass
    before_03: dict[str, Any] = {"recalibrate_samples": None}
    if options.get("snapshot_mode", "nested") == "nested" and "prune_ratio" not in options:
        before_03["prune_ratio"] = FaithfulKeep(samples=None)
    strategy = _strategy(mlp, **options, **before_03)
    saved = _config_before(strategy.model, **options)
    assert "recalibrate_samples" not in saved
    before = read_config(saved)  # what a resumed run compares with
    assert before is not None and strategy.m2kd_config == before
    config = strategy.m2kd_config
    assert [type(v) for v in config.values()] == [type(before[k]) for k in config]


def test_option_objects_build_the_strategy_the_flat_keywords_build(mlp):
    flat = {"snapshot_mode": "pruned", "prune_ratio": 0.25, "temperature": 4.0, "teachers": "last",
            "feature_layers": ["2"], "teacher_bn": "running", "cache_teachers": False}
    by_keywords = _strategy(mlp, **flat)
    by_objects = _strategy(
        mlp,
        snapshot_options=SnapshotOptions(snapshot_mode="pruned", prune_ratio=0.25),
        distillation_options=DistillationOptions(temperature=4.0, teachers="last",
                                                 feature_layers=["2"]),
        teacher_options=TeacherOptions(teacher_bn="running", cache_teachers=False),
    )
    assert by_objects.m2kd_config == by_keywords.m2kd_config
    assert by_objects.m2kd_options == by_keywords.m2kd_options
    for a, b in zip(by_keywords.plugins, by_objects.plugins, strict=True):
        assert type(a) is type(b)
    mm = next(p for p in by_objects.plugins if isinstance(p, MultiModelDistillationPlugin))
    ml = next(p for p in by_objects.plugins if isinstance(p, MultiLevelDistillationPlugin))
    assert (mm.temperature, mm.teachers, mm.teacher_bn, ml.feature_layers) == (
        4.0, "last", "running", ["2"]
    )
    assert mm.teacher_options is ml.teacher_options  # one teacher runner's settings, shared
    assert by_objects.snapshots.cache_teachers is False  # set on the store by the strategy ...
    assert mm.teacher_options.cache_teachers is None  # ... not by the plugins, which leave it


def test_an_object_with_a_keyword_of_its_group_is_refused(mlp):
    with pytest.raises(ValueError,
                       match=r"either `distillation_options` or the keywords.*temperature=3\.0"):
        _strategy(mlp, temperature=3.0, distillation_options=DistillationOptions())
    with pytest.raises(ValueError,
                       match=r"`snapshot_options` to be a SnapshotOptions, but got TeacherOptions"):
        _strategy(mlp, snapshot_options=TeacherOptions())
    # keywords of another group, or left at their default, go with an object
    strategy = _strategy(mlp, temperature=2.0, teacher_bn="running",
                         distillation_options=DistillationOptions(teachers="last"))
    assert strategy.m2kd_config["teachers"] == "last"
    assert strategy.m2kd_config["teacher_bn"] == "running"


def test_every_field_is_a_keyword_of_the_strategy_with_the_same_default():
    params = inspect.signature(M2KDStrategy.__init__).parameters
    for cls in GROUPS:
        assert cls.argument in params and params[cls.argument].default is None
        for field in dataclasses.fields(cls):
            assert params[field.name].default == field.default, (cls.__name__, field.name)
            assert params[field.name].kind is inspect.Parameter.KEYWORD_ONLY


def test_the_strategy_writes_no_option_of_a_group_again():
    """The flat keywords come from the classes: ``M2KDStrategy.__init__``'s own code
    declares none of them, so a field's default, type and description live in one place."""
    code = inspect.signature(M2KDStrategy.__init__)
    own = inspect.unwrap(M2KDStrategy.__init__).__code__  # under Avalanche's wrapper
    declared = set(own.co_varnames[: own.co_argcount + own.co_kwonlyargcount])
    assert {"model", "mem_size", "teacher_options"} <= declared
    fields = {f.name for cls in GROUPS for f in dataclasses.fields(cls)}
    assert not declared & fields
    assert code.parameters["teacher_dtype"].annotation == torch.dtype | None


def test_a_misspelt_keyword_is_a_type_error_with_or_without_positional_arguments(mlp):
    """Avalanche's wrapper drops, on a positional call, the keywords a signature does not
    name: until 0.3 ``M2KDStrategy(model, optimizer, temprature=3.0)`` trained at T=2."""
    with pytest.raises(TypeError, match="unexpected keyword argument.*temprature"):
        _strategy(mlp, temprature=3.0)
    model = mlp()
    with pytest.raises(TypeError, match="unexpected keyword argument.*temprature"):
        M2KDStrategy(model, torch.optim.SGD(model.parameters(), lr=0.1), temprature=3.0)


@pytest.mark.parametrize(
    "cls, bad, message",
    [
        (SnapshotOptions, {"snapshot_mode": "sparse"},
         "`snapshot_mode` to be one of ('nested', 'pruned', 'full')"),
        (SnapshotOptions, {"prune_ratio": 1.0}, "`prune_ratio`"),
        (SnapshotOptions, {"post_prune_epochs": -1}, "`post_prune_epochs` to be an int >= 0"),
        (SnapshotOptions, {"restore_released_at": "later"}, "`restore_released_at`"),
        (SnapshotOptions, {"recalibrate_bn": 1}, "`recalibrate_bn` to be a bool"),
        (DistillationOptions, {"temperature": 0}, "`temperature` to be a number > 0, but got 0"),
        (DistillationOptions, {"mm_weight": True}, "`mm_weight` to be a number >= 0"),
        (DistillationOptions, {"feat_weight": -0.5}, "`feat_weight` to be a number >= 0"),
        (DistillationOptions, {"teacher_slice": "all"}, "`teacher_slice`"),
        (DistillationOptions, {"teacher_sample": 0}, "`teacher_sample`"),
        (DistillationOptions, {"feature_loss": "l2"},
         "`feature_loss` to be one of " + str(get_args(FeatureLoss))),
        (DistillationOptions, {"feature_teachers": "first"}, "`feature_teachers` to be one of "
         + str(get_args(TeacherSet))),
        (TeacherOptions, {"teacher_bn": "eval"}, "`teacher_bn`"),
        (TeacherOptions, {"teacher_dtype": torch.int8}, "`teacher_dtype`"),
        (TeacherOptions, {"cache_teachers": "yes"}, "`cache_teachers` to be a bool"),
        (TeacherOptions, {"teacher_batching": "vmap", "cache_teachers": False},
         "`teacher_batching` to be 'loop'"),
    ],
)
def test_each_object_validates_itself_when_made(cls, bad, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        cls(**bad)


def test_objects_are_frozen_keyword_only_and_hold_tuples():
    options = DistillationOptions(feature_layers=["a", "b"])
    assert options.feature_layers == ("a", "b")
    assert DistillationOptions(feature_layers="a").feature_layers == ("a",)
    assert SnapshotOptions(prune_ratio=[0.5, 0.25]).prune_ratio == (0.5, 0.25)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.temperature = 3.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        DistillationOptions(2.0)  # type: ignore[call-arg]
    assert m2kd_config(options)["feature_layers"] == ["a", "b"]


def test_plugins_take_their_part_of_the_objects():
    distillation = DistillationOptions(temperature=3.0, mm_weight=0.5, teachers="last",
                                       teacher_sample=1, feature_layers=["2"], feature_loss="mse",
                                       feature_teachers="all", feat_weight=2.0)
    teacher = TeacherOptions(teacher_bn="running", teacher_dtype=torch.bfloat16,
                             cache_teachers=False)
    store = SnapshotStore("full")
    mm = MultiModelDistillationPlugin.from_options(distillation, teacher, store=store)
    assert (mm.temperature, mm.weight, mm.teachers, mm.teacher_sample) == (3.0, 0.5, "last", 1)
    assert (mm.teacher_bn, mm.teacher_dtype, store.cache_teachers) == (
        "running", torch.bfloat16, False
    )
    ml = MultiLevelDistillationPlugin.from_options(distillation, store=store)
    assert (ml.feature_layers, ml.loss, ml.teachers, ml.weight, ml.teacher_bn) == (
        ["2"], "mse", "all", 2.0, "running"
    )
    with pytest.raises(ValueError,
                       match=r"either `teacher_options` or the keywords.*teacher_bn='batch'"):
        MultiModelDistillationPlugin(teacher_bn="batch", teacher_options=TeacherOptions())


@pytest.mark.parametrize("prune_ratio", ["fair", 0.5, (0.5, 0.25)])
def test_every_prune_ratio_form_reaches_the_nested_plugin_as_given(mlp, prune_ratio):
    """``"fair"`` once became the 1-tuple ``("fair",)``, which the plugin refused."""
    strategy = _strategy(mlp, prune_ratio=prune_ratio)
    expected = tuple(prune_ratio) if isinstance(prune_ratio, tuple) else prune_ratio
    assert strategy.masking.prune_ratio == expected
    assert SnapshotOptions(prune_ratio=prune_ratio).prune_ratio == expected
