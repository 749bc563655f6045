"""Owner-index pruning, the keep schedule, prune_ratio validation and bit packing."""

from __future__ import annotations

import math

import pytest
import torch

from avalanche_m2kd.pruning import (
    MAX_SNAPSHOTS,
    keep_fraction,
    magnitude_keep_mask,
    owner_bits,
    pack_bits,
    pack_uints,
    prune_free_weights,
    snapshot_mask,
    unpack_bits,
    unpack_uints,
    validate_prune_ratio,
)


def _free_owner(shape) -> torch.Tensor:
    return torch.zeros(shape, dtype=torch.uint8)


# --------------------------------------------------------------- prune_free_weights


def test_prune_keeps_the_exact_fraction_of_free_weights():
    weight = torch.randn(1000)
    new_owner, released = prune_free_weights(weight, _free_owner(1000), 1, keep=0.3)
    assert int((new_owner == 1).sum()) == 300
    assert int(released.sum()) == 700
    assert released.dtype == torch.bool
    # Every free weight is either kept or released, never both.
    assert not ((new_owner == 1) & released).any()
    assert int(((new_owner == 1) | released).sum()) == 1000


def test_prune_keeps_the_largest_magnitudes():
    weight = torch.randn(1000)
    new_owner, released = prune_free_weights(weight, _free_owner(1000), 1, keep=0.3)
    kept = weight[new_owner == 1].abs()
    dropped = weight[released].abs()
    assert kept.min() >= dropped.max()
    expected = set(torch.topk(weight.abs(), 300).indices.tolist())
    assert set((new_owner == 1).nonzero().squeeze(1).tolist()) == expected


def test_prune_leaves_owned_entries_untouched():
    weight = torch.randn(1000)
    owner = _free_owner(1000)
    owned = torch.randperm(1000)[:200]
    owner[owned] = 1
    weight[owned] *= 100  # owned weights are the largest, yet must not be re-ranked
    new_owner, released = prune_free_weights(weight, owner, 2, keep=0.3)

    assert (new_owner[owned] == 1).all()
    assert not released[owned].any()
    assert int((new_owner == 2).sum()) == 240  # 0.3 of the 800 free
    assert int(released.sum()) == 560
    free = owner == 0
    assert weight[new_owner == 2].abs().min() >= weight[released].abs().max()
    assert (new_owner[~free] == owner[~free]).all()
    # The input owner tensor is not modified in place.
    assert int((owner == 2).sum()) == 0


def test_prune_preserves_shape_of_conv_weights():
    weight = torch.randn(8, 4, 3, 3)
    new_owner, released = prune_free_weights(weight, _free_owner(weight.shape), 1, keep=0.5)
    assert new_owner.shape == weight.shape and released.shape == weight.shape
    assert new_owner.dtype == torch.uint8
    assert int((new_owner == 1).sum()) == round(0.5 * weight.numel())


@pytest.mark.parametrize("n_weights, n_experiences", [(1000, 5), (1000, 7), (257, 10)])
def test_fair_schedule_gives_every_experience_its_share(n_weights, n_experiences):
    owner = _free_owner(n_weights)
    weight = torch.randn(n_weights)
    for t in range(n_experiences):
        keep = keep_fraction("fair", t, n_experiences)
        owner, released = prune_free_weights(weight, owner, t + 1, keep)
        # The caller zeroes released weights; the next experience retrains them.
        weight = torch.where(released, torch.randn(n_weights), weight)
    counts = [int((owner == t + 1).sum()) for t in range(n_experiences)]
    share = n_weights / n_experiences
    assert all(abs(c - share) <= 1 for c in counts), counts
    assert sum(counts) == n_weights
    assert int((owner == 0).sum()) == 0


def test_fixed_ratio_chain_halves_the_share_each_experience():
    owner = _free_owner(1024)
    weight = torch.randn(1024)
    for t in range(4):
        owner, _ = prune_free_weights(weight, owner, t + 1, keep_fraction(0.5, t))
    assert [int((owner == t + 1).sum()) for t in range(4)] == [512, 256, 128, 64]
    assert int((owner == 0).sum()) == 64


def test_prune_with_no_free_weights_is_a_no_op():
    owner = torch.ones(10, dtype=torch.uint8)
    new_owner, released = prune_free_weights(torch.randn(10), owner, 2, keep=0.5)
    assert torch.equal(new_owner, owner)
    assert not released.any()


def test_prune_keep_one_and_keep_zero():
    weight = torch.randn(50)
    all_kept, rel = prune_free_weights(weight, _free_owner(50), 3, keep=1.0)
    assert (all_kept == 3).all() and not rel.any()
    none_kept, rel = prune_free_weights(weight, _free_owner(50), 3, keep=0.0)
    assert (none_kept == 0).all() and rel.all()


@pytest.mark.parametrize(
    "weight, owner, owner_value, keep, match",
    [
        (torch.randn(4), torch.zeros(5, dtype=torch.uint8), 1, 0.5, "differ"),
        (torch.randn(4), torch.zeros(4, dtype=torch.uint8), 0, 0.5, "owner value"),
        (torch.randn(4), torch.zeros(4, dtype=torch.uint8), 256, 0.5, "owner value"),
        (torch.randn(4), torch.zeros(4, dtype=torch.uint8), 1, -0.1, "keep fraction"),
        (torch.randn(4), torch.zeros(4, dtype=torch.uint8), 1, 1.5, "keep fraction"),
    ],
)
def test_prune_rejects_invalid_inputs(weight, owner, owner_value, keep, match):
    with pytest.raises(ValueError, match=match):
        prune_free_weights(weight, owner, owner_value, keep)


# -------------------------------------------------------------------- keep_fraction


def test_keep_fraction_fair_hand_values():
    assert [keep_fraction("fair", t, 4) for t in range(4)] == pytest.approx(
        [1 / 4, 1 / 3, 1 / 2, 1.0]
    )
    assert keep_fraction("fair", 0, 1) == 1.0


def test_keep_fraction_fair_needs_the_stream_length():
    with pytest.raises(ValueError, match="n_experiences"):
        keep_fraction("fair", 0)
    with pytest.raises(ValueError, match="past the end"):
        keep_fraction("fair", 4, 4)


def test_keep_fraction_float_is_one_minus_ratio_at_every_experience():
    assert keep_fraction(0.25, 0) == pytest.approx(0.75)
    assert keep_fraction(0.25, 9) == pytest.approx(0.75)
    assert keep_fraction(0.0, 3, 5) == 1.0


def test_keep_fraction_list_schedule_repeats_its_last_value():
    schedule = [0.5, 0.3]
    assert keep_fraction(schedule, 0) == pytest.approx(0.5)
    assert keep_fraction(schedule, 1) == pytest.approx(0.7)
    assert keep_fraction(schedule, 5) == pytest.approx(0.7)
    assert keep_fraction((0.9, 0.1), 0) == pytest.approx(0.1)


# -------------------------------------------------------------- validate_prune_ratio


@pytest.mark.parametrize("ratio", [0.0, 0.5, 0, "fair", [0.5, 0.3], (0.2,)])
def test_validate_prune_ratio_accepts_and_returns_unchanged(ratio):
    assert validate_prune_ratio(ratio) is ratio


@pytest.mark.parametrize("ratio", [1.0, 1.5, -0.1, "half", True, [], [0.5, 1.0], ["0.5"], None])
def test_validate_prune_ratio_rejects_with_the_argument_name(ratio):
    with pytest.raises(ValueError, match="prune_ratio"):
        validate_prune_ratio(ratio)


# --------------------------------------------------------------------- snapshot_mask


def test_snapshot_mask_selects_owners_up_to_the_snapshot():
    owner = torch.tensor([0, 1, 2, 3, 1, 0, 2], dtype=torch.uint8)
    assert snapshot_mask(owner, 1).tolist() == [False, True, False, False, True, False, False]
    assert snapshot_mask(owner, 2).tolist() == [False, True, True, False, True, False, True]
    assert snapshot_mask(owner, 3).tolist() == [False, True, True, True, True, False, True]


def test_snapshot_masks_are_nested_and_never_include_free_weights():
    owner = torch.randint(0, 6, (20, 30), dtype=torch.uint8)
    previous = torch.zeros_like(owner, dtype=torch.bool)
    for k in range(1, 6):
        mask = snapshot_mask(owner, k)
        assert mask.shape == owner.shape and mask.dtype == torch.bool
        assert (previous <= mask).all()  # snapshot k-1 is contained in snapshot k
        assert not mask[owner == 0].any()
        previous = mask
    assert torch.equal(previous, owner != 0)


# --------------------------------------------------------------- magnitude_keep_mask


@pytest.mark.parametrize("density", [0.0, 0.2, 0.25, 0.5, 1.0])
def test_magnitude_keep_mask_density_and_magnitudes(density):
    weight = torch.randn(10, 10)
    mask = magnitude_keep_mask(weight, density)
    assert mask.shape == weight.shape and mask.dtype == torch.bool
    assert int(mask.sum()) == round(density * 100)
    if 0 < density < 1:
        assert weight[mask].abs().min() >= weight[~mask].abs().max()


def test_magnitude_keep_mask_rejects_bad_density():
    with pytest.raises(ValueError, match="density"):
        magnitude_keep_mask(torch.randn(4), 1.5)
    with pytest.raises(ValueError, match="density"):
        magnitude_keep_mask(torch.randn(4), -0.1)


# ------------------------------------------------------------------------ bit packing


def test_pack_bits_hand_values():
    assert pack_bits(torch.tensor([True, False, True])).tolist() == [5]
    bits = torch.tensor([True] * 8 + [True, False, False, False, False, False, False, True, True])
    assert pack_bits(bits).tolist() == [255, 129, 1]


@pytest.mark.parametrize("shape", [(1,), (7,), (8,), (9,), (3, 5), (2, 3, 4), (4, 3, 3, 3), (0,)])
def test_pack_unpack_round_trip(shape):
    mask = torch.rand(shape) < 0.4
    packed = pack_bits(mask)
    numel = math.prod(shape)
    assert packed.dtype == torch.uint8
    assert packed.numel() == math.ceil(numel / 8)
    assert packed.element_size() * packed.numel() == math.ceil(numel / 8)
    restored = unpack_bits(packed, shape)
    assert restored.dtype == torch.bool
    assert restored.shape == torch.Size(shape)
    assert torch.equal(restored, mask)


def test_unpack_accepts_a_torch_size():
    mask = torch.rand(5, 3) < 0.5
    assert torch.equal(unpack_bits(pack_bits(mask), mask.shape), mask)


def test_unpack_bits_rejects_too_few_bytes():
    with pytest.raises(ValueError, match="another shape"):
        unpack_bits(torch.zeros(1, dtype=torch.uint8), (9,))


# ------------------------------------------------------------- packed owner indices


@pytest.mark.parametrize(
    "n_snapshots, bits",
    [
        (0, 0), (1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (7, 3), (8, 4), (10, 4), (15, 4), (16, 5),
        (255, 8),
    ],
)
def test_owner_bits_is_ceil_log2_of_t_plus_one(n_snapshots, bits):
    assert owner_bits(n_snapshots) == bits == math.ceil(math.log2(n_snapshots + 1))


@pytest.mark.parametrize("n", [-1, MAX_SNAPSHOTS + 1])
def test_owner_bits_rejects_counts_out_of_range(n):
    with pytest.raises(ValueError, match="at most 255 snapshots"):
        owner_bits(n)


def test_pack_uints_hand_values():
    # 4 bits: two values per byte, the first in the low nibble
    assert pack_uints(torch.tensor([1, 2, 3]), 4).tolist() == [0x21, 0x03]
    # 3 bits: fields straddle bytes; 5 = 101, 0 = 000, 7 = 111, LSB first
    assert pack_uints(torch.tensor([5, 0, 7]), 3).tolist() == [0b11000101, 0b1]
    assert pack_uints(torch.tensor([1, 0, 1, 1, 0, 0, 0, 0, 1]), 1).tolist() == [13, 1]
    assert pack_uints(torch.tensor([200, 7]), 8).tolist() == [200, 7]
    assert pack_uints(torch.zeros(10, dtype=torch.uint8), 0).numel() == 0


@pytest.mark.parametrize("bits", range(9))
@pytest.mark.parametrize("shape", [(1,), (7,), (8,), (9,), (3, 5), (4, 3, 3, 3), (0,)])
def test_pack_uints_round_trip_and_size(bits, shape):
    values = torch.randint(0, 1 << bits, shape, dtype=torch.uint8)
    packed = pack_uints(values, bits)
    assert packed.dtype == torch.uint8 and packed.dim() == 1
    assert packed.numel() == math.ceil(math.prod(shape) * bits / 8)
    restored = unpack_uints(packed, bits, shape)
    assert restored.dtype == torch.uint8 and restored.shape == torch.Size(shape)
    assert torch.equal(restored, values)


def test_pack_uints_repacks_to_a_wider_field():
    values = torch.randint(0, 16, (4, 3, 3, 3), dtype=torch.uint8)
    wider = pack_uints(unpack_uints(pack_uints(values, 4), 4, values.shape), 5)
    assert torch.equal(unpack_uints(wider, 5, values.shape), values)


@pytest.mark.parametrize(
    "values, bits, match",
    [
        (torch.tensor([4]), 2, "do not fit in 2 bits"),
        (torch.tensor([-1]), 3, "do not fit"),
        (torch.tensor([1]), 0, "do not fit in 0 bits"),
        (torch.tensor([1]), 9, "0..8"),
    ],
)
def test_pack_uints_rejects_values_that_do_not_fit(values, bits, match):
    with pytest.raises(ValueError, match=match):
        pack_uints(values, bits)


def test_unpack_uints_rejects_the_wrong_size_or_width():
    packed = pack_uints(torch.arange(10), 4)
    with pytest.raises(ValueError, match="another shape or width"):
        unpack_uints(packed, 4, (11,))
    with pytest.raises(ValueError, match="another shape or width"):
        unpack_uints(packed, 3, (10,))
    with pytest.raises(ValueError, match="0..8"):
        unpack_uints(packed, 9, (10,))
