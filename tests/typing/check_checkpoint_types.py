"""Types a caller of the checkpoint API must keep, checked by mypy (``tests/test_typing.py``).

Never run: mypy reads it. ``assert_type`` fails the check when an expression's static type
differs from the one given, ``Any`` included, so a return type that loses the strategy's
class is caught here rather than in a user's type checker.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from avalanche_m2kd import M2KDStrategy
from avalanche_m2kd.checkpoint import maybe_load_checkpoint

if TYPE_CHECKING:
    from typing_extensions import assert_type  # typing.assert_type needs Python 3.11


class MyStrategy(M2KDStrategy):
    """A user's subclass: resuming must give back the subclass, not the base."""


def resume(built: M2KDStrategy, stream: Sequence[Any]) -> M2KDStrategy:
    strategy, start = maybe_load_checkpoint(built, "run.ckpt", stream)
    assert_type(strategy, M2KDStrategy)
    assert_type(start, int)
    return strategy


def resume_subclass(built: MyStrategy, stream: Sequence[Any]) -> MyStrategy:
    strategy, start = maybe_load_checkpoint(built, "run.ckpt", stream, map_location="cpu")
    assert_type(strategy, MyStrategy)
    return strategy
