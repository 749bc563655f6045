"""The one use of PyTorch's private names in the package: clearing a copy's hooks.

A teacher is a deep copy of the student, and ``copy.deepcopy`` copies the student's
forward and backward hooks with it (feature captures, other plugins' hooks): they must
not fire in the teacher. ``torch.nn.Module`` has no public way to remove hooks without
the handles their owners kept, so :func:`clear_hooks` empties the hook dictionaries
of each submodule; ``tests/test_torch_internals.py`` pins that it does (a torch release
that renames or adds one fails that test, not a run). Everything else the teachers do
with a module's tensors goes through public API (``named_parameters``,
``named_buffers``, ``setattr``, ``torch.func.functional_call``).
"""

from __future__ import annotations

from torch import nn

__all__ = ["HOOK_DICTS", "clear_hooks"]

#: The per-module hook dictionaries of ``torch.nn.Module`` :func:`clear_hooks` empties.
HOOK_DICTS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_state_dict_hooks",
    "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks",
    "_load_state_dict_post_hooks",
)


def clear_hooks(module: nn.Module) -> nn.Module:
    """Remove every hook registered on ``module`` and its submodules; return ``module``.

    Global hooks (``torch.nn.modules.module.register_module_forward_hook``) are not
    the module's and stay.

    Example:
        >>> import torch
        >>> layer = nn.Linear(2, 2)
        >>> _ = layer.register_forward_hook(lambda m, i, o: o * 0)
        >>> bool(layer(torch.ones(1, 2)).abs().sum() == 0)
        True
        >>> bool(clear_hooks(layer)(torch.ones(1, 2)).abs().sum() == 0)
        False
    """
    for m in module.modules():
        for name in HOOK_DICTS:
            getattr(m, name).clear()
    return module
