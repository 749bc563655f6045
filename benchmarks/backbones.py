"""Backbones of the comparison harness: a small CNN for CPUs, CIFAR-style ResNets for GPUs.

Every backbone has the same two parts, so that Avalanche's ``ICaRL`` (which takes a
feature extractor and a classifier) and the other strategies (one model) see the
same network:

* ``feature_extractor``: an ``nn.Sequential`` whose named children
  (``stage1``, ``stage2``, ``stage3``) are the levels of M2KD's multi-level term;
* ``classifier``: the head, an Avalanche ``IncrementalClassifier`` (it grows with the
  classes seen and masks unseen units) or, for iCaRL, a plain ``nn.Linear`` over all
  classes.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from avalanche.models import IncrementalClassifier
from torch import nn

from benchmarks.max_pool import MaxPool2x2

__all__ = ["FEATURE_STAGES", "Backbone", "make_backbone"]

#: The three stage outputs, as dotted module names of a :class:`Backbone`.
FEATURE_STAGES = (
    "feature_extractor.stage1",
    "feature_extractor.stage2",
    "feature_extractor.stage3",
)


def _conv_block(c_in: int, c_out: int, pool: bool) -> nn.Sequential:
    layers = [
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]
    if pool:
        layers.append(MaxPool2x2())  # nn.MaxPool2d(2), ~10x faster without gradients
    return nn.Sequential(*layers)


class Backbone(nn.Module):
    """``classifier(feature_extractor(x))``, exposing both parts (see the module docstring)."""

    def __init__(self, feature_extractor: nn.Sequential, classifier: nn.Module) -> None:  # noqa: D107
        super().__init__()
        self.feature_extractor = feature_extractor
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.classifier(self.feature_extractor(x))


def _small_cnn(in_channels: int, width: int) -> tuple[nn.Sequential, int]:
    """Three conv-BN-ReLU stages (28 -> 14 -> 7 -> global average), ``4 * width`` features."""
    return (
        nn.Sequential(
            OrderedDict(
                stage1=_conv_block(in_channels, width, pool=True),
                stage2=_conv_block(width, 2 * width, pool=True),
                stage3=_conv_block(2 * width, 4 * width, pool=False),
                pool=nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()),
            )
        ),
        4 * width,
    )


def _resnet(in_channels: int, depth: int) -> tuple[nn.Sequential, int]:
    """Avalanche's CIFAR ResNet (``make_icarl_net``, iCaRL's initialisation), depth 20 or 32.

    Its global average pool takes 28x28 inputs as they are.
    """
    from avalanche.models import initialize_icarl_net, make_icarl_net

    if (depth - 2) % 6:
        raise ValueError(f"Expected a CIFAR ResNet depth 6n+2 (20, 32, ...), but got {depth}")
    net = make_icarl_net(num_classes=10, n=(depth - 2) // 6, c=in_channels)
    net.apply(initialize_icarl_net)
    head_in = net.classifier.in_features
    stages = net.feature_extractor  # conv+bn+relu, stage 1, stage 2, stage 3, pool
    return (
        nn.Sequential(
            OrderedDict(
                stem=stages[0],
                stage1=stages[1],
                stage2=stages[2],
                stage3=stages[3],
                pool=nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()),
            )
        ),
        head_in,
    )


def make_backbone(
    name: str = "cnn", *, in_channels: int = 1, n_classes: int = 10, initial_classes: int = 2,
    width: int = 32, incremental_head: bool = True,
) -> Backbone:
    """Build a backbone by name.

    Args:
        name: ``"cnn"`` (the CPU default: three 3x3 conv-BN-ReLU stages of
            ``width``, ``2*width``, ``4*width`` channels, max-pool after the first two,
            global average pool; 92k parameters at width 32), ``"resnet20"`` or
            ``"resnet32"`` (Avalanche's ``make_icarl_net`` with ``in_channels``).
        in_channels: image channels.
        n_classes: classes of a fixed head (iCaRL).
        initial_classes: initial units of an ``IncrementalClassifier`` head.
        width: channels of the CNN's first stage.
        incremental_head: ``IncrementalClassifier`` (True) or ``nn.Linear(n_classes)``.

    Returns:
        A :class:`Backbone`.
    """
    if name == "cnn":
        features, dim = _small_cnn(in_channels, width)
    elif name in ("resnet20", "resnet32"):
        features, dim = _resnet(in_channels, int(name[len("resnet"):]))
    else:
        raise ValueError(f"Expected backbone 'cnn', 'resnet20' or 'resnet32', but got {name!r}")
    head = (
        IncrementalClassifier(dim, initial_out_features=initial_classes)
        if incremental_head
        else nn.Linear(dim, n_classes)
    )
    return Backbone(features, head)
