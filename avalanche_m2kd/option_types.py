"""M2KD's options as three small frozen objects, each validated once when it is made.

:class:`SnapshotOptions` (what is kept of each finished model), :class:`DistillationOptions`
(the two loss terms) and :class:`TeacherOptions` (how the teachers run) hold every M2KD
option of :class:`~avalanche_m2kd.M2KDStrategy` but the four that concern one part only
(``mem_size``, ``logit_adjustment``, ``head_name``, ``mixed_precision``). Their fields are
named as the strategy's keywords, and their defaults are the strategy's. A value out of
range raises a ``ValueError`` naming the field, when the object is made; nothing
downstream checks it again. Choices are the arguments of the ``Literal`` types
(:func:`~avalanche_m2kd.options.check_choice`).

The strategy takes either the flat keywords or the objects::

    M2KDStrategy(model, optimizer, temperature=3.0, teachers="last")
    M2KDStrategy(model, optimizer,
                 distillation_options=DistillationOptions(temperature=3.0, teachers="last"))

An object replaces every keyword of its group; giving it together with a keyword of that
group set to anything but its default is refused (:meth:`OptionGroup.resolve`), so one
run never has two values of one option. The distillation plugins take their part
(:meth:`~avalanche_m2kd.plugins.teachers.TeacherPlugin.from_options`), and
:func:`m2kd_config` turns the objects into the plain dictionary that checkpoints compare.

Example:
    >>> DistillationOptions(temperature=3.0).temperature
    3.0
    >>> DistillationOptions(teachers="first")
    Traceback (most recent call last):
    ...
    ValueError: Expected argument `teachers` to be one of ('all', 'last'), but got 'first'
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Literal, TypeVar

import torch

from avalanche_m2kd.batched_teachers import TeacherBatching, check_teacher_batching
from avalanche_m2kd.losses import FeatureLoss, TeacherSlice, sample_teachers
from avalanche_m2kd.options import check_bool, check_choice, check_int, check_number
from avalanche_m2kd.pruning import FaithfulKeep, PruneRatio, validate_prune_ratio
from avalanche_m2kd.snapshots import SnapshotMode, TeacherBatchNorm, validate_teacher_dtype

__all__ = [
    "DistillationOptions",
    "OptionGroup",
    "PLUGIN_TEACHER_OPTIONS",
    "ReleasedRestore",
    "SnapshotOptions",
    "TeacherOptions",
    "TeacherSet",
    "check_option_keywords",
    "m2kd_config",
    "option_keywords",
]

TeacherSet = Literal["all", "last"]
ReleasedRestore = Literal["next_experience", "end_of_experience"]
"""When nested training gives the weights released by pruning their trained values back:
right after the snapshot is recorded (``"end_of_experience"``, the default) or at the
start of the next experience (see :class:`SnapshotOptions`)."""
_Group = TypeVar("_Group", bound="OptionGroup")
_Function = TypeVar("_Function", bound=Callable[..., Any])


@dataclasses.dataclass(frozen=True, kw_only=True)
class OptionGroup:
    """Base of the option objects: building one from keywords, and its plain values."""

    argument: ClassVar[str]  # the strategy's keyword that takes the object

    @classmethod
    def resolve(
        cls: type[_Group],
        given: _Group | None,
        flat: Mapping[str, Any],
        default: _Group | None = None,
    ) -> _Group:
        """The group ``given`` to the strategy, or the one its flat keywords make.

        Args:
            given: the object passed as :attr:`argument`, or ``None``.
            flat: the keyword arguments (extra names are ignored).
            default: the values of the keywords not in ``flat`` (default ``cls()``; a
                plugin whose keywords have other defaults passes its own).

        Raises:
            ValueError: ``given`` is not a ``cls``, or is given together with a flat
                keyword of the group set to another value than its default.
        """
        default = cls() if default is None else default
        made = dataclasses.replace(
            default, **{f.name: flat[f.name] for f in dataclasses.fields(cls) if f.name in flat}
        )
        if given is None:
            return made
        if not isinstance(given, cls):
            raise ValueError(
                f"Expected argument `{cls.argument}` to be a {cls.__name__}, but got {given!r}"
            )
        changed = [
            f"{f.name}={getattr(made, f.name)!r}"
            for f in dataclasses.fields(cls)
            if getattr(made, f.name) != getattr(default, f.name)
        ]
        if changed:
            raise ValueError(
                f"Expected either `{cls.argument}` or the keywords it groups, but got both "
                f"({', '.join(changed)}): set them in the {cls.__name__}"
            )
        return given

    def plain(self) -> dict[str, Any]:
        """The fields as plain Python values: dtypes as strings, sequences as lists."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _plain(value: Any) -> Any:
    if isinstance(value, torch.dtype):
        return str(value)
    if isinstance(value, FaithfulKeep):
        return value.plain()
    if isinstance(value, tuple):
        return list(value)
    return value


def _freeze(obj: OptionGroup, name: str, string_is_one: bool = True) -> None:
    """A sequence field stored as a tuple, so the object is immutable; a string is a
    1-tuple (one layer name) when ``string_is_one``, else kept (``prune_ratio="fair"``)."""
    value = getattr(obj, name)
    if isinstance(value, str):
        if not string_is_one:
            return
        value = (value,)
    if isinstance(value, Sequence):
        object.__setattr__(obj, name, tuple(value))


@dataclasses.dataclass(frozen=True, kw_only=True)
class SnapshotOptions(OptionGroup):
    """What is kept of each finished experience's model.

    Read by :class:`~avalanche_m2kd.plugins.SnapshotMaskingPlugin`, which documents each
    option (under its own names: ``mode`` for ``snapshot_mode``).

    Args:
        snapshot_mode: ``"nested"`` (default, the paper's mask-based pruning: every
            snapshot inside the one network), ``"pruned"`` (pruned copies) or
            ``"full"`` (whole copies).
        prune_ratio: ``nested``: ``"fair"`` (every experience keeps ``1/N`` of each
            layer), a float in ``[0, 1)``, one float per experience or a
            :class:`~avalanche_m2kd.pruning.FaithfulKeep`; ``pruned``: the
            fraction of weights dropped from each copy. ``None`` (default): a
            ``FaithfulKeep()`` in ``nested``, 0.5 in ``pruned``. A sequence is kept as a tuple. See
            :class:`~avalanche_m2kd.plugins.SnapshotMaskingPlugin`.
        post_prune_epochs: fine-tuning epochs after pruning, an int >= 0 below
            ``train_epochs``; ``None`` (default): ``train_epochs // 4``.
        restore_released_at: ``nested``: when weights released by pruning get their
            trained values back, ``"end_of_experience"`` (default: the model
            evaluated between experiences is dense) or ``"next_experience"`` (it is
            the sparse snapshot).
        recalibrate_bn: ``nested``: re-estimate the BatchNorm running statistics of
            the pruned model on the experience's training mini-batches before its
            snapshot is recorded (default True).
        recalibrate_samples: ``nested``: each of those re-estimations uses the first
            mini-batches of a pass over the experience's training loader, whole
            mini-batches until at least this many samples (an int >= 1; default 512,
            ours); ``None``: the whole pass.
    """

    argument: ClassVar[str] = "snapshot_options"

    snapshot_mode: SnapshotMode = "nested"
    prune_ratio: PruneRatio | None = None
    post_prune_epochs: int | None = None
    restore_released_at: ReleasedRestore = "end_of_experience"
    recalibrate_bn: bool = True
    recalibrate_samples: int | None = 512

    def __post_init__(self) -> None:
        check_choice(self.snapshot_mode, SnapshotMode, "snapshot_mode")
        if self.prune_ratio is not None:
            validate_prune_ratio(self.prune_ratio)
            _freeze(self, "prune_ratio", string_is_one=False)
        if self.post_prune_epochs is not None:
            check_int(self.post_prune_epochs, "post_prune_epochs", minimum=0)
        check_choice(self.restore_released_at, ReleasedRestore, "restore_released_at")
        check_bool(self.recalibrate_bn, "recalibrate_bn")
        if self.recalibrate_samples is not None:
            check_int(self.recalibrate_samples, "recalibrate_samples", minimum=1)


@dataclasses.dataclass(frozen=True, kw_only=True)
class DistillationOptions(OptionGroup):
    r"""The two distillation terms: from which teachers, on what, with which weights.

    The logit term is :class:`~avalanche_m2kd.plugins.MultiModelDistillationPlugin`'s,
    the feature term :class:`~avalanche_m2kd.plugins.MultiLevelDistillationPlugin`'s;
    each documents its options under its own names (``weight``, ``loss``, ...).

    Args:
        temperature: softmax temperature ``T`` of the logit term, > 0 (default 2).
        mm_weight: ``lambda_mm``, the weight of the logit term, >= 0 (default 1).
        teacher_slice: ``"own"`` (default: teacher ``k`` supervises the classes it
            introduced) or ``"cumulative"`` (every class it knew).
        teachers: the logit term's teachers: ``"all"`` snapshots (default, the paper)
            or the ``"last"`` one (LwF-style).
        teacher_sample: distil the logits from only this many randomly drawn
            snapshots per mini-batch (an int >= 1; an unbiased estimate of the sum
            over all, see :class:`~avalanche_m2kd.plugins.MultiModelDistillationPlugin`);
            ``None`` (default) uses all.
        feature_layers: layers of the feature term (dotted names, ``":input"`` suffix
            for a module's input), checked against the model by the strategy; a
            sequence is kept as a tuple. Default ``None``: the head's input.
        feature_loss: the feature term's distance: ``"normalized_mse"`` (default),
            ``"mse"`` or ``"attention"``.
        feature_teachers: the feature term's teachers: the ``"last"`` snapshot
            (default) or ``"all"``.
        feat_weight: ``lambda_feat``, the weight of the feature term, >= 0 (default
            0.1; 0 leaves the feature plugin out).
    """

    argument: ClassVar[str] = "distillation_options"

    temperature: float = 2.0
    mm_weight: float = 1.0
    teacher_slice: TeacherSlice = "own"
    teachers: TeacherSet = "all"
    teacher_sample: int | None = None
    feature_layers: Sequence[str] | None = None
    feature_loss: FeatureLoss = "normalized_mse"
    feature_teachers: TeacherSet = "last"
    feat_weight: float = 0.1

    def __post_init__(self) -> None:
        check_number(self.temperature, "temperature", minimum=0.0, strict=True)
        check_number(self.mm_weight, "mm_weight", minimum=0.0)
        check_choice(self.teacher_slice, TeacherSlice, "teacher_slice")
        check_choice(self.teachers, TeacherSet, "teachers")
        if self.teacher_sample is not None:
            sample_teachers(1, self.teacher_sample)  # validates it
        if self.feature_layers is not None:
            _freeze(self, "feature_layers")
        check_choice(self.feature_loss, FeatureLoss, "feature_loss")
        check_choice(self.feature_teachers, TeacherSet, "feature_teachers")
        check_number(self.feat_weight, "feat_weight", minimum=0.0)


@dataclasses.dataclass(frozen=True, kw_only=True)
class TeacherOptions(OptionGroup):
    """How the teachers run on a mini-batch; one object shared by both distillation plugins.

    Read by :class:`~avalanche_m2kd.plugins.TeacherPlugin`.

    Args:
        teacher_bn: statistics of the teachers' BatchNorm layers on the distilled
            mini-batch: ``"running"`` (default: each snapshot's stored statistics, its
            eval mode; a sample's outputs then depend on it alone, so the store runs
            each sample through each teacher once an experience,
            :mod:`avalanche_m2kd.output_cache`) or ``"batch"`` (the mini-batch's own, as
            the student in training mode and Avalanche's ``LwF``; 0.2's default). The
            two tie in accuracy, and ``"running"`` makes M2KD's run about 1.45× faster:
            :doc:`/benchmarks/evidence`.
        teacher_dtype: autocast dtype of the teacher forwards: ``None`` (default,
            float32), ``torch.bfloat16`` (any device) or ``torch.float16`` (CUDA
            only, its CPU kernels are slow: refused on a CPU when an experience
            starts); teacher logits and features come back as float32, so the
            losses stay fp32. What it saves and costs: :doc:`/benchmarks/cost`.
        cache_teachers: the snapshot store's
            :attr:`~avalanche_m2kd.snapshots.SnapshotStore.cache_teachers`: ``True``
            (default, fastest) keeps every teacher dense for the experience;
            ``False`` rebuilds and frees them inside each step (at most one dense
            teacher at a time: memory against rebuild time, :doc:`/benchmarks/cost`).
            ``None`` leaves the store's setting (a plugin's default,
            :data:`PLUGIN_TEACHER_OPTIONS`); it is one setting of the store, for every
            plugin on it.
        teacher_batching: how the teachers of one mini-batch run: ``"loop"``
            (default: one after the other, bit-exact nested teachers), ``"vmap"``
            (same-architecture teachers as one ``torch.func.vmap`` forward over their
            stacked weights, features captured too; holds a stacked copy of the
            teachers) or ``"streams"`` (each teacher on its own CUDA stream; the loop
            on a CPU). Batched losses equal the loop's to float rounding. Needs
            ``cache_teachers``. See :mod:`avalanche_m2kd.batched_teachers`.
    """

    argument: ClassVar[str] = "teacher_options"

    teacher_bn: TeacherBatchNorm = "running"
    teacher_dtype: torch.dtype | None = None
    cache_teachers: bool | None = True
    teacher_batching: TeacherBatching = "loop"

    def __post_init__(self) -> None:
        check_choice(self.teacher_bn, TeacherBatchNorm, "teacher_bn")
        validate_teacher_dtype(self.teacher_dtype)
        if self.cache_teachers is not None:
            check_bool(self.cache_teachers, "cache_teachers")
        check_teacher_batching(self.teacher_batching, self.cache_teachers)


PLUGIN_TEACHER_OPTIONS = TeacherOptions(cache_teachers=None)
"""The defaults of a :class:`~avalanche_m2kd.plugins.TeacherPlugin`'s teacher keywords:
:class:`TeacherOptions`' but ``cache_teachers=None``, which leaves the store's caching as
it is (the strategy's default keeps it on)."""


def m2kd_config(*groups: OptionGroup, **options: Any) -> dict[str, Any]:
    """Every option as a plain value: the groups' fields, then ``options``.

    :class:`~avalanche_m2kd.M2KDStrategy` keeps it as ``m2kd_config``;
    :mod:`avalanche_m2kd.checkpoint` refuses to resume into a strategy whose dictionary
    differs, so its keys and values are those checkpoints have always held.

    Example:
        >>> config = m2kd_config(TeacherOptions(teacher_dtype=torch.bfloat16), mem_size=20)
        >>> config["teacher_dtype"], config["mem_size"]
        ('torch.bfloat16', 20)
    """
    config: dict[str, Any] = {}
    for group in groups:
        config.update(group.plain())
    config.update({name: _plain(value) for name, value in options.items()})
    return config


def option_parameters(*groups: type[OptionGroup] | OptionGroup) -> list[inspect.Parameter]:
    """One keyword-only parameter per field of ``groups``, in their order: its name,
    default and type read from the class, where they are written (once). A group given
    as an object gives its values as the defaults (a plugin's own).

    Example:
        >>> print(option_parameters(TeacherOptions)[0])
        teacher_bn: Literal['batch', 'running'] = 'running'
        >>> print(option_parameters(TeacherOptions)[1])
        teacher_dtype: torch.dtype | None = None
    """
    params = []
    for group in groups:
        cls = group if isinstance(group, type) else type(group)
        hints = typing.get_type_hints(cls)
        params += [
            inspect.Parameter(
                f.name, inspect.Parameter.KEYWORD_ONLY, annotation=hints[f.name],
                default=f.default if isinstance(group, type) else getattr(group, f.name),
            )
            for f in dataclasses.fields(cls)
        ]
    return params


def option_keywords(
    *groups: type[OptionGroup] | OptionGroup,
) -> Callable[[_Function], _Function]:
    """Decorate a function that takes its option keywords as ``**options``: its
    signature (``inspect.signature``, ``help()``, the options page) lists the fields of
    ``groups`` as keyword-only parameters before its own. ``**options`` stays last: an
    Avalanche strategy called with positional arguments drops every keyword its
    signature does not name, so a misspelt option must reach ``**options`` to be
    refused. The function checks the names with :func:`check_option_keywords`.

    Example:
        >>> @option_keywords(TeacherOptions)
        ... def plugin(store=None, **options): ...
        >>> list(inspect.signature(plugin).parameters)
        ['store', 'teacher_bn', 'teacher_dtype', 'cache_teachers', 'teacher_batching', 'options']
    """

    def decorate(function: _Function) -> _Function:
        signature = inspect.signature(function)
        own = list(signature.parameters.values())
        first_keyword = next(
            (i for i, p in enumerate(own) if p.kind in (p.KEYWORD_ONLY, p.VAR_KEYWORD)), len(own)
        )
        params = own[:first_keyword] + option_parameters(*groups) + own[first_keyword:]
        function.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
        return function

    return decorate


def check_option_keywords(
    options: Mapping[str, Any], groups: Sequence[type[OptionGroup] | OptionGroup], owner: str
) -> None:
    """Refuse a keyword in ``options`` that no field of ``groups`` has, as Python refuses
    an unknown keyword (a ``TypeError`` naming ``owner``, the function's qualified name).

    Example:
        >>> check_option_keywords({"temprature": 3.0}, [DistillationOptions], "M2KDStrategy")
        Traceback (most recent call last):
        ...
        TypeError: M2KDStrategy() got an unexpected keyword argument 'temprature'
    """
    known = {f.name for group in groups for f in dataclasses.fields(group)}  # class or object
    for name in options:
        if name not in known:
            raise TypeError(f"{owner}() got an unexpected keyword argument {name!r}")
