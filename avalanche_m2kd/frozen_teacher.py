"""A rebuilt snapshot as a teacher that can never train, and its autocast dtype check."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from avalanche_m2kd._torch import clear_hooks
from avalanche_m2kd.features import FeatureCapture

__all__ = ["FrozenTeacher", "TeacherBatchNorm", "validate_teacher_dtype"]

TeacherBatchNorm = Literal["batch", "running"]
_BN_MODES = ("batch", "running")
_AUTOCAST_DTYPES = (torch.bfloat16, torch.float16)


def validate_teacher_dtype(
    dtype: torch.dtype | None, device_type: str | None = None, name: str = "teacher_dtype"
) -> torch.dtype | None:
    """The checked autocast dtype of teacher forwards (``None``: full fp32).

    Args:
        dtype: ``None`` or ``torch.float32`` (no autocast; returned as ``None``),
            ``torch.bfloat16`` (any device), or ``torch.float16`` (not on CPU, whose
            float16 kernels are far slower than its float32 ones).
        device_type: the device the teachers run on (``"cpu"``, ``"cuda"``, ...);
            ``None`` checks only the dtype.
        name: the argument's name in the error message.

    Raises:
        ValueError: another dtype, or ``float16`` on ``"cpu"``.

    Example:
        >>> validate_teacher_dtype(torch.bfloat16, "cpu")
        torch.bfloat16
        >>> validate_teacher_dtype(torch.float32) is None
        True
    """
    if dtype is None or dtype == torch.float32:
        return None
    if dtype not in _AUTOCAST_DTYPES:
        raise ValueError(
            f"Expected argument `{name}` to be None, torch.float32, torch.bfloat16 or "
            f"torch.float16, but got {dtype!r}"
        )
    if dtype == torch.float16 and device_type == "cpu":
        raise ValueError(
            f"Expected argument `{name}` to be None or torch.bfloat16 on CPU, but got "
            "torch.float16: float16 autocast runs many times slower than float32 on CPU; "
            "use torch.bfloat16"
        )
    return dtype


def _set_tensor(module: nn.Module, name: str, value: Tensor) -> None:
    """Replace parameter or buffer ``name`` of ``module`` (its shape may change).

    ``value`` moves to the device of the tensor it replaces.
    """
    owner_name, _, attr = name.rpartition(".")
    owner = module.get_submodule(owner_name)
    params = dict(owner.named_parameters(recurse=False))
    buffers = dict(owner.named_buffers(recurse=False))
    # nn.Module.__setattr__ replaces a registered parameter (given a Parameter) or
    # buffer (given a tensor) in place, keeping a buffer's persistence
    if attr in params:
        setattr(owner, attr, nn.Parameter(value.to(params[attr].device), requires_grad=False))
    elif attr in buffers:
        setattr(owner, attr, value.to(buffers[attr].device))
    else:
        raise KeyError(f"{name!r} is neither a parameter nor a buffer of the model")


def _match_memory_format(module: nn.Module, like: nn.Module) -> None:
    """Give the parameters of ``module`` the strides of ``like``'s of the same shape.

    A teacher's rebuilt weights are contiguous; a student in ``torch.channels_last``
    gets teachers in the same layout, so that they run the snapshot's kernels (and
    stay bit-exact).
    """
    live = dict(like.named_parameters())
    for name, p in module.named_parameters():
        ref = live.get(name)
        if ref is not None and ref.shape == p.shape and ref.stride() != p.stride():
            p.data = torch.empty_like(ref, dtype=p.dtype, device=p.device).copy_(p.data)


def _shell(model: nn.Module, replaced: Iterable[str]) -> nn.Module:
    """A deep copy of ``model`` without its hooks, its gradients and the parameters
    named in ``replaced`` (empty stand-ins: they are replaced next, and a copy of
    them would cost the bulk of the model's bytes)."""
    params = dict(model.named_parameters())
    memo: dict[int, Any] = {
        id(params[n]): nn.Parameter(params[n].new_empty(0), requires_grad=False)
        for n in replaced
        if n in params
    }
    module = copy.deepcopy(model, memo)
    clear_hooks(module)  # the student's hooks must not fire in a teacher
    for p in module.parameters():
        p.grad = None
    return module


def _as_float32(t: Tensor) -> Tensor:
    return t.float() if t.is_floating_point() and t.dtype != torch.float32 else t


class FrozenTeacher(nn.Module):
    """A rebuilt snapshot that can never train.

    It stays in eval mode whatever the caller does (``train()`` is a no-op), all its
    parameters have ``requires_grad=False`` and every forward runs under
    ``torch.no_grad``. :meth:`run` also returns the features captured at the layer
    specs given to :meth:`capture`. Every call runs the network (no memo: an input
    changed in place gives new outputs); de-duplication within a training step is
    :meth:`avalanche_m2kd.snapshots.SnapshotStore.run_teacher`'s.

    Args:
        module: the network, already loaded with the snapshot's weights.
        feature_specs: layer specs to capture (see :mod:`avalanche_m2kd.features`).
    """

    def __init__(self, module: nn.Module, feature_specs: Sequence[str] = ()) -> None:
        super().__init__()
        self.module = module.requires_grad_(False)
        self._specs: list[str] = []
        self._capture: FeatureCapture | None = None
        self._batch_norms = [
            m
            for m in module.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
        ]
        self.capture(feature_specs)
        super().train(False)

    @classmethod
    def rebuild(
        cls, model: nn.Module, tensors: Mapping[str, Tensor], feature_specs: Sequence[str] = ()
    ) -> FrozenTeacher:
        """A teacher with ``model``'s modules and the ``state_dict`` entries ``tensors``.

        ``model`` is copied (without its hooks and gradients, and without the
        parameters ``tensors`` replaces), each tensor is moved to the device of the
        one it replaces, and the parameters get the strides of ``model``'s of the
        same shape (e.g. ``torch.channels_last``). ``model`` is left unchanged.
        """
        module = _shell(model, tensors)
        for name, tensor in tensors.items():
            _set_tensor(module, name, tensor)
        _match_memory_format(module, model)
        return cls(module, feature_specs)

    def train(self, mode: bool = True) -> FrozenTeacher:  # noqa: D102 - always eval
        return super().train(False)

    def capture(self, specs: Sequence[str]) -> None:
        """Also capture these layer specs from now on."""
        new = [s for s in specs if s not in self._specs]
        if not new:
            return
        if self._capture is not None:
            self._capture.detach()
        self._specs += new
        self._capture = FeatureCapture(self.module, self._specs).attach()

    @torch.no_grad()
    def run(
        self,
        x: Tensor,
        batch_norm: TeacherBatchNorm = "running",
        dtype: torch.dtype | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Logits and captured features for ``x``.

        Args:
            x: the input batch.
            batch_norm: ``"running"`` (default) normalises with the snapshot's stored
                BatchNorm statistics, exactly as the snapshot did in eval mode;
                ``"batch"`` normalises with the statistics of ``x`` itself, as the
                student does in training mode (the stored statistics are neither used
                nor changed). Other layers (dropout, ...) stay in eval mode.
            dtype: ``None`` (default) runs in the weights' precision;
                ``torch.bfloat16`` (or ``torch.float16``, not on CPU) runs the
                forward under ``torch.autocast`` on ``x``'s device type, and the
                logits and features come back as float32 (see
                :func:`validate_teacher_dtype`). The weights stay fp32.

        Raises:
            ValueError: an unknown ``batch_norm``, or a ``dtype`` that
                :func:`validate_teacher_dtype` rejects for ``x``'s device.
        """
        if batch_norm not in _BN_MODES:
            raise ValueError(
                f"Expected argument `batch_norm` to be one of {_BN_MODES}, but got {batch_norm!r}"
            )
        dtype = validate_teacher_dtype(dtype, x.device.type, "dtype")
        norms = self._batch_norms if batch_norm == "batch" else []
        for m in norms:
            m.training, m.track_running_stats = True, False
        try:
            if dtype is None:  # as before: under the caller's autocast, if any
                logits = self.module(x)
            else:
                with torch.autocast(x.device.type, dtype=dtype):
                    logits = self.module(x)
        finally:
            for m in norms:
                m.training, m.track_running_stats = False, True
        features = dict(self._capture.features) if self._capture is not None else {}
        if dtype is not None:
            logits = _as_float32(logits)
            features = {spec: _as_float32(t) for spec, t in features.items()}
        return logits, features

    def nbytes(self) -> int:
        """Bytes of the teacher's parameters and buffers (its dense weights)."""
        tensors = [*self.module.parameters(), *self.module.buffers()]
        return sum(t.numel() * t.element_size() for t in tensors)

    def forward(self, x: Tensor) -> Tensor:
        """The snapshot's logits for ``x``."""
        return self.run(x)[0]
