"""Capturing named intermediate outputs, and finding the classifier head.

A *layer spec* is a dotted module name as listed by ``model.named_modules()``
(``"layer2"``, ``"features.3"``): its forward **output** is captured. Appending
``":input"`` captures the module's first **input** instead; ``"classifier:input"`` is
the penultimate representation, which is M2KD's default feature level because it
exists in every classification model.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["FeatureCapture", "check_head", "find_head", "resolve_layer_specs", "INPUT_SUFFIX"]

INPUT_SUFFIX = ":input"


def _named_module(model: nn.Module, spec: str) -> tuple[str, nn.Module, bool]:
    name, capture_input = (
        (spec[: -len(INPUT_SUFFIX)], True) if spec.endswith(INPUT_SUFFIX) else (spec, False)
    )
    modules = dict(model.named_modules())
    if name not in modules or name == "":
        valid = [n for n in modules if n]
        close = difflib.get_close_matches(name, valid, n=3, cutoff=0.5)
        hint = f"Did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
        shown = ", ".join(valid[:60]) + (f", ... ({len(valid)} in all)" if len(valid) > 60 else "")
        raise ValueError(
            f"Unknown layer {name!r} in feature_layers: the model has no such module. "
            f"{hint}Valid names (append ':input' for a module's input; "
            f"`[n for n, _ in model.named_modules()]` lists them all): {shown}"
        )
    return name, modules[name], capture_input


def resolve_layer_specs(model: nn.Module, specs: Iterable[str]) -> list[str]:
    """Validate layer specs against ``model`` and return them as a list.

    Raises:
        ValueError: for an unknown module name; the message lists the valid names.
    """
    specs = list(specs)
    if not specs:
        raise ValueError("Expected at least one layer name in `feature_layers`, got none")
    for spec in specs:
        _named_module(model, spec)
    return specs


class FeatureCapture:
    """Forward hooks that record named intermediate tensors of a model.

    Use as a context manager or with :meth:`attach` / :meth:`detach`; after each
    forward pass :attr:`features` maps every spec to its tensor (not detached, so
    the student's features keep their graph).

    Args:
        model: the module to observe.
        specs: layer specs (see the module docstring).

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
        >>> with FeatureCapture(net, ["1", "2:input"]) as cap:
        ...     _ = net(torch.zeros(5, 4))
        >>> sorted(cap.features), tuple(cap.features["1"].shape)
        (['1', '2:input'], (5, 3))
    """

    def __init__(self, model: nn.Module, specs: Sequence[str]) -> None:
        self.model = model
        self.specs = resolve_layer_specs(model, specs)
        self.features: dict[str, Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    @staticmethod
    def _make_hook(
        spec: str, capture_input: bool, features: dict[str, Tensor]
    ) -> Callable[[nn.Module, tuple[Any, ...], Any], None]:
        # The hook holds the ``features`` dict, not ``self``: no reference cycle
        # module -> hook -> capture -> module, so a dropped teacher is freed at once
        # (by reference counting, without waiting for the garbage collector).
        def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            value = inputs[0] if capture_input else output
            if not isinstance(value, Tensor):
                raise TypeError(
                    f"Layer {spec!r} produced a {type(value).__name__}, not a tensor: "
                    "pick a module whose output (or first input) is a single tensor"
                )
            features[spec] = value

        return hook

    def attach(self) -> FeatureCapture:
        """Register the hooks (idempotent); forgets earlier captures."""
        if not self._handles:
            self.features = {}
            for spec in self.specs:
                _, module, capture_input = _named_module(self.model, spec)
                self._handles.append(
                    module.register_forward_hook(
                        self._make_hook(spec, capture_input, self.features)
                    )
                )
        return self

    def detach(self) -> None:
        """Remove the hooks (the last captured tensors stay readable)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def collect(self) -> list[Tensor]:
        """The captured tensors in spec order; fails clearly if one is missing."""
        missing = [s for s in self.specs if s not in self.features]
        if missing:
            raise RuntimeError(
                f"Layers {missing} were not run by the last forward pass: feature layers "
                "must be on the path from the input to the output"
            )
        return [self.features[s] for s in self.specs]

    def __enter__(self) -> FeatureCapture:
        return self.attach()

    def __exit__(self, *exc: object) -> None:
        self.detach()


def find_head(model: nn.Module, head_name: str | None = None) -> str:
    """Dotted name of the classifier head of ``model``.

    With ``head_name`` given, it is checked and returned. Otherwise the head is the
    model's only ``IncrementalClassifier`` if it has one, else its last
    ``nn.Linear`` (in registration order), which is the head of every common
    classification architecture (ResNets, iCaRL's ResNet-32, MLPs).

    Raises:
        ValueError: the model has a task-incremental multi-head classifier, several
            incremental classifiers, no linear layer, or ``head_name`` is unknown.
    """
    from avalanche.models import IncrementalClassifier, MultiHeadClassifier

    modules = dict(model.named_modules())
    linear_like = [
        n for n, m in modules.items() if isinstance(m, (nn.Linear, IncrementalClassifier))
    ]
    if head_name is not None:
        if head_name not in modules or head_name == "":
            raise ValueError(
                f"Unknown head_name {head_name!r}: the model has no such module. "
                f"Linear modules of this model: {linear_like or 'none'}"
            )
        return head_name
    if any(isinstance(m, MultiHeadClassifier) for m in modules.values()):
        raise ValueError(
            "The model has a MultiHeadClassifier (one head per task): M2KD is "
            "class-incremental and needs a single head; use IncrementalClassifier or "
            "an nn.Linear sized for all classes"
        )
    incremental = [n for n, m in modules.items() if isinstance(m, IncrementalClassifier)]
    if len(incremental) > 1:
        raise ValueError(
            f"The model has several IncrementalClassifier heads {incremental}: pass "
            "head_name= to say which one produces the output"
        )
    if incremental:
        return incremental[0]
    linears = [n for n, m in modules.items() if isinstance(m, nn.Linear) and n]
    if not linears:
        raise ValueError(
            f"Could not find the classifier head of {type(model).__name__}: it has no "
            "nn.Linear or IncrementalClassifier. Pass head_name= with the dotted name "
            "of the module that produces the logits"
        )
    return linears[-1]


@torch.no_grad()
def check_head(model: nn.Module, head_name: str, x: Tensor | None) -> None:
    """Check on the input ``x`` that module ``head_name`` produces ``model``'s output.

    The model runs once in eval mode (its mode is restored). Nothing is raised when
    no linear module's output equals the model's (a model that post-processes its
    logits): only a head contradicted by another module is refused. ``x=None`` (no
    input to probe with, e.g. an empty experience) checks nothing.

    Raises:
        ValueError: another ``nn.Linear`` / ``IncrementalClassifier`` produces the
            output, not ``head_name``; the message names it and how to pass it.

    Example:
        >>> class Net(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.fc, self.aux = nn.Linear(3, 2), nn.Linear(3, 4)
        ...     def forward(self, x):
        ...         return self.fc(x)
        >>> check_head(Net(), "aux", torch.zeros(1, 3))
        Traceback (most recent call last):
        ...
        ValueError: The classifier head found, 'aux', does not produce the model's output: 'fc' does. Pass head_name='fc' to M2KDStrategy (or to the plugins)
    """  # noqa: E501 (the doctest's exception message is one line)
    from avalanche.models import IncrementalClassifier

    if x is None:
        return
    outputs: dict[str, Tensor] = {}
    handles = []
    for name, module in model.named_modules():
        if name and isinstance(module, (nn.Linear, IncrementalClassifier)):
            def hook(m: nn.Module, inputs: tuple[Any, ...], out: Any, name: str = name) -> None:
                outputs[name] = out
            handles.append(module.register_forward_hook(hook))
    was_training = model.training
    try:
        model.eval()
        y = model(x)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    if not isinstance(y, Tensor):
        return

    def produces(name: str) -> bool:
        out = outputs.get(name)
        return isinstance(out, Tensor) and out.shape == y.shape and torch.equal(out, y)

    if produces(head_name):
        return
    producers = [n for n in outputs if produces(n)]
    if producers:
        raise ValueError(
            f"The classifier head found, {head_name!r}, does not produce the model's "
            f"output: {producers[-1]!r} does. Pass head_name={producers[-1]!r} to "
            "M2KDStrategy (or to the plugins)"
        )
