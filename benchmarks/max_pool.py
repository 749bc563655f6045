"""2x2 max-pooling as four strided views: ``max_pool2d``'s values and gradients, ~10x faster on CPU.

On this project's CPU (torch 2.14.1, one thread), ``torch.nn.functional.max_pool2d(x, 2)``
on the harness CNN's first activation (128 x 32 x 28 x 28) takes longer than the 3x3
convolution before it (about 25 ms against 21 ms; ``relu`` on the same tensor: 1 ms),
and in a profile of an M2KD run the pooling was the single most expensive call
(``python -m benchmarks.max_pool`` measures it again). The maximum of the four strided
views ``x[..., i::2, j::2]`` is the same tensor, bit for bit, in a tenth of the time.

Only forwards without gradients take it (the M2KD teachers', evaluation's, BatchNorm
re-estimation's, the keep search's): in training, ``max_pool2d`` routes each window's
gradient to its first maximum, where ``torch.maximum`` would split ties, and its own
backward is cheap.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MaxPool2x2", "max_pool_2x2"]



def max_pool_2x2(x: Tensor) -> Tensor:
    """``F.max_pool2d(x, 2)`` for inputs of even height and width, as the maximum of
    four strided views: the same values, bit for bit. Differentiable through
    ``torch.maximum`` (whose gradient splits ties, unlike ``max_pool2d``'s): for
    forwards without gradients; :class:`MaxPool2x2` uses it only there.

    Example:
        >>> x = torch.randn(2, 3, 6, 4).relu()  # ReLU's zeros: ties in many windows
        >>> torch.equal(max_pool_2x2(x), F.max_pool2d(x, 2))
        True
    """
    if x.shape[-1] % 2 or x.shape[-2] % 2:
        raise ValueError(f"Expected an even height and width, but got shape {tuple(x.shape)}")
    top = torch.maximum(x[..., 0::2, 0::2], x[..., 0::2, 1::2])
    return torch.maximum(top, torch.maximum(x[..., 1::2, 0::2], x[..., 1::2, 1::2]))


class MaxPool2x2(nn.MaxPool2d):
    """``nn.MaxPool2d(2)``, computed by :func:`max_pool_2x2` in forwards that need no
    gradient (evaluation, teachers, BatchNorm re-estimation, herding, keep search) on
    inputs of even height and width, by ``nn.MaxPool2d``'s kernel otherwise (training:
    the same gradients as ever). The same values either way; an ``nn.MaxPool2d`` to
    ``isinstance``, with the same (empty) ``state_dict``.

    Example:
        >>> pool, x = MaxPool2x2(), torch.randn(4, 2, 8, 8)
        >>> with torch.no_grad():
        ...     torch.equal(pool(x), nn.MaxPool2d(2)(x))
        True
    """

    def __init__(self) -> None:  # noqa: D107
        super().__init__(2)

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        needs_grad = torch.is_grad_enabled() and x.requires_grad
        if needs_grad or x.shape[-1] % 2 or x.shape[-2] % 2:
            return super().forward(x)
        return max_pool_2x2(x)


def _milliseconds(step: Any, reps: int) -> float:
    step()
    start = time.perf_counter()
    for _ in range(reps):
        step()
    return 1000 * (time.perf_counter() - start) / reps


def main(argv: list[str] | None = None) -> None:
    """``python -m benchmarks.max_pool``: milliseconds of both poolings' forwards on the
    harness CNN's first activation, in this process."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.max_pool",
                                description=__doc__.splitlines()[0])
    p.add_argument("--shape", type=int, nargs=4, default=[128, 32, 28, 28])
    p.add_argument("--reps", type=int, default=20)
    args = p.parse_args(argv)
    x = torch.randn(*args.shape).relu()
    rows = [("forward, no gradient", lambda: F.max_pool2d(x, 2), lambda: max_pool_2x2(x))]
    print(f"shape {args.shape}, {torch.get_num_threads()} thread(s), torch {torch.__version__}")
    print("| pass | max_pool2d ms | max_pool_2x2 ms | ratio |\n|---|---|---|---|")
    for name, theirs, ours in rows:
        a, b = _milliseconds(theirs, args.reps), _milliseconds(ours, args.reps)
        print(f"| {name} | {a:.2f} | {b:.2f} | {a / b:.1f}x |")


if __name__ == "__main__":
    main()
