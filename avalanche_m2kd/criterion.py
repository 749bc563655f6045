"""Cross-entropy corrected for the class imbalance of replayed mini-batches.

In class-incremental training with a small exemplar memory, a mini-batch holds many
samples of the few new classes and a handful of each old class (Avalanche's
``ReplayPlugin`` draws half of every batch from the memory, so with one new class
and eight old ones the new class is eight times as frequent as each old one). Plain
cross-entropy then learns that skewed prior, and the model predicts new classes for
old-class images ("recency bias"). Distillation restricted to the old classes'
logits cannot undo it: it never looks at the new classes' logits.

*Logit adjustment* (Menon et al., "Long-tail learning via logit adjustment",
ICLR 2021) trains on ``z + tau * log(prior)`` instead of ``z``: the model then fits
the class-balanced posterior, and predicting with the plain ``z`` is unbiased.
:class:`LogitAdjustedCrossEntropy` estimates the prior from the labels of the
training mini-batches themselves, so it works with any sampler or replay scheme.
This is not part of M2KD's paper; it is our addition, chosen by measurement
(README, "Results").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["LogitAdjustedCrossEntropy", "logit_adjusted_cross_entropy"]


def logit_adjusted_cross_entropy(
    logits: Tensor, targets: Tensor, class_prior: Tensor, tau: float = 1.0, min_prior: float = 1e-4
) -> Tensor:
    """Cross-entropy of ``logits + tau * log(class_prior)`` (mean over the batch).

    Args:
        logits: ``(N, C)`` scores.
        targets: ``(N,)`` class indices.
        class_prior: ``(C,)`` class frequencies of the training distribution (need
            not sum to 1); entries below ``min_prior`` are clamped to it.
        tau: strength of the adjustment; 0 gives plain cross-entropy.
        min_prior: floor of the prior, so absent classes get a large but finite shift.

    Example:
        >>> z = torch.tensor([[0.0, 0.0]])
        >>> prior = torch.tensor([0.8, 0.2])
        >>> round(logit_adjusted_cross_entropy(z, torch.tensor([1]), prior).item(), 4)  # -log 0.2
        1.6094
    """
    shift = tau * torch.log(class_prior.to(logits.dtype).clamp_min(min_prior))
    return F.cross_entropy(logits + shift.to(logits.device), targets)


class LogitAdjustedCrossEntropy(nn.Module):
    """Cross-entropy with logit adjustment by the running class frequency of training batches.

    A drop-in for ``nn.CrossEntropyLoss()`` as the ``criterion`` of any Avalanche
    strategy (``M2KDStrategy`` uses it by default, see its ``logit_adjustment``
    option). While gradients are enabled (training), each call updates an
    exponential moving average of the label frequencies of the mini-batches
    (``momentum``) and returns :func:`logit_adjusted_cross_entropy` with it; when a
    label the criterion has never trained on appears (a new experience), the
    average restarts from that batch. Under ``torch.no_grad`` (Avalanche's
    evaluation) it is plain cross-entropy, so evaluation losses stay comparable.
    Predictions are never adjusted: the adjustment only shapes training.

    Args:
        tau: strength of the adjustment (1 = Menon et al.'s; 0 = plain cross-entropy).
        momentum: weight of the past in the running frequency, in [0, 1).

    Example:
        >>> criterion = LogitAdjustedCrossEntropy()
        >>> z = torch.zeros(4, 3, requires_grad=True)
        >>> loss = criterion(z, torch.tensor([0, 0, 0, 1]))  # prior (0.75, 0.25, 0)
        >>> [round(p, 2) for p in criterion.class_prior.tolist()]
        [0.75, 0.25, 0.0]
    """

    def __init__(self, tau: float = 1.0, momentum: float = 0.9) -> None:
        super().__init__()
        if tau < 0:
            raise ValueError(f"Expected argument `tau` to be >= 0, but got {tau}")
        if not 0 <= momentum < 1:
            raise ValueError(f"Expected argument `momentum` to be in [0, 1), but got {momentum}")
        self.tau = tau
        self.momentum = momentum
        self.class_prior: Tensor | None = None
        self._trained: Tensor | None = None

    def reset(self) -> None:
        """Forget the running frequency and the classes trained so far."""
        self.class_prior = None
        self._trained = None

    def get_extra_state(self) -> dict[str, Tensor | None]:
        """The running prior and trained classes, so ``state_dict()`` holds them."""
        return {"class_prior": self.class_prior, "trained": self._trained}

    def set_extra_state(self, state: dict[str, Tensor | None]) -> None:
        """Restore :meth:`get_extra_state` (through ``load_state_dict``)."""
        self.class_prior = state["class_prior"]
        self._trained = state["trained"]

    @torch.no_grad()
    def _update(self, targets: Tensor, n_classes: int) -> Tensor:
        # Everything stays on the targets' device, without a Python branch on tensor
        # values, so a CUDA training step never waits for the GPU here.
        device = targets.device
        counts = torch.bincount(targets.detach(), minlength=n_classes)[:n_classes]
        freq = counts.double() / counts.sum().clamp_min(1)
        seen = counts > 0
        trained = torch.zeros(n_classes, dtype=torch.bool, device=device)
        if self._trained is not None:  # a grown head keeps the classes trained so far
            trained[: self._trained.numel()] = self._trained.to(device)
        if self.class_prior is None:
            prior = freq
        else:
            past = torch.zeros(n_classes, dtype=torch.float64, device=device)
            past[: self.class_prior.numel()] = self.class_prior.to(device)[:n_classes]
            new_class = (seen & ~trained).any()  # a new experience: restart the average
            prior = torch.where(new_class, freq, self.momentum * past + (1 - self.momentum) * freq)
        self._trained = trained | seen
        self.class_prior = prior
        return prior

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        """The adjusted loss while training, plain cross-entropy otherwise."""
        if not torch.is_grad_enabled() or self.tau == 0:
            return F.cross_entropy(logits, targets)
        prior = self._update(targets, logits.shape[1])
        return logit_adjusted_cross_entropy(logits, targets, prior, self.tau)
