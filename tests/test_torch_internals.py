"""Pins the PyTorch private names :mod:`avalanche_m2kd._torch` uses: a torch release that
renames a module's hook dictionaries, or adds a kind of hook :func:`clear_hooks` misses,
fails here."""

from __future__ import annotations

import copy

import torch
from torch import nn

from avalanche_m2kd._torch import HOOK_DICTS, clear_hooks


def test_every_hook_dict_exists_and_none_is_missed() -> None:
    module = nn.Linear(2, 2)
    for name in HOOK_DICTS:
        assert isinstance(getattr(module, name), dict), name
    # every per-module hook dictionary torch has today is in HOOK_DICTS
    present = {n for n, v in vars(module).items() if n.endswith("hooks") and isinstance(v, dict)}
    assert present <= set(HOOK_DICTS), sorted(present - set(HOOK_DICTS))


def test_a_deep_copy_keeps_no_hook_after_clear_hooks() -> None:
    calls: list[str] = []
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    model[0].register_forward_hook(lambda m, i, o: calls.append("forward"))
    model[0].register_forward_pre_hook(lambda m, i: calls.append("pre"))
    model[2].register_forward_hook(lambda m, a, k, o: calls.append("kwargs"), with_kwargs=True)
    model[2].register_forward_hook(lambda m, i, o: calls.append("always"), always_call=True)
    model[2].register_full_backward_hook(lambda m, gi, go: calls.append("backward"))
    model[2].register_full_backward_pre_hook(lambda m, go: calls.append("backward-pre"))
    model.register_state_dict_pre_hook(lambda m, prefix, keep_vars: calls.append("state"))
    x = torch.randn(5, 3, requires_grad=True)

    model(x).sum().backward()
    model.state_dict()
    assert sorted(set(calls)) == sorted(
        {"forward", "pre", "kwargs", "always", "backward", "backward-pre", "state"}
    )

    calls.clear()
    teacher = clear_hooks(copy.deepcopy(model))
    out = teacher(x)
    out.sum().backward()
    teacher.state_dict()
    assert calls == []
    torch.testing.assert_close(out, model[2](model[1](model[0](x))), rtol=0, atol=0)
    calls.clear()
    model(x)  # the original keeps its hooks
    assert "forward" in calls
