"""The generators' state: saved and restored for Python, NumPy and torch alike."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from avalanche_m2kd.rng import preserved_rng, rng_state, set_rng_state


def _draws() -> tuple[float, float, float]:
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def test_state_round_trip_covers_every_generator() -> None:
    state = rng_state()
    first = _draws()
    set_rng_state(state)
    assert _draws() == first


def test_preserved_rng_leaves_generators_as_before_even_when_the_block_raises() -> None:
    state = rng_state()
    expected = _draws()
    set_rng_state(state)
    with pytest.raises(RuntimeError, match="inside"), preserved_rng():
        _draws()
        raise RuntimeError("inside")
    assert _draws() == expected


def test_draws_inside_preserved_rng_still_advance_within_the_block() -> None:
    with preserved_rng():
        a, b = torch.rand(1), torch.rand(1)
    assert not torch.equal(a, b)
