"""The storage objects on their own: resolution, encode / decode, bytes, state."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from avalanche_m2kd.snapshots import SnapshotStore, prunable_weight_names
from avalanche_m2kd.storage import (
    FullStorage,
    NestedStorage,
    PrunedStorage,
    SnapshotStorage,
    make_storage,
)


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
        nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 6),
    )  # fmt: skip


PRUNABLE = ["0.weight", "4.weight"]
CLASSES = [[0, 1]]


def test_make_storage_turns_each_mode_into_its_class_once():
    assert [type(make_storage(m)) for m in ("nested", "pruned", "full")] == [
        NestedStorage, PrunedStorage, FullStorage,
    ]  # fmt: skip
    quarter, default = make_storage("pruned", pruned_density=0.25), make_storage("pruned")
    assert isinstance(quarter, PrunedStorage) and quarter.density == 0.25
    assert isinstance(default, PrunedStorage) and default.density == 0.5  # its default
    given = PrunedStorage(0.3)
    assert make_storage(given) is given
    modes = r"\('nested', 'pruned', 'full'\)"
    with pytest.raises(ValueError, match=rf"`snapshot_mode` to be one of {modes}"):
        make_storage("sparse")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`pruned_density`.*PrunedStorage"):
        make_storage(given, pruned_density=0.5)
    for bad in (0.0, 1.5, True, "half"):
        with pytest.raises(ValueError, match=r"`pruned_density` to be a float in \(0, 1\]"):
            make_storage("pruned", pruned_density=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"`density` to be a float in \(0, 1\]"):
        PrunedStorage(0)


def test_a_store_takes_a_storage_object_and_reports_its_mode():
    storage = PrunedStorage(density=0.25)
    store = SnapshotStore(storage, head_name="6")
    assert store.storage is storage and store.mode == "pruned"
    net = _net()
    store.record(net, [0, 1])
    w = dict(store.teacher(0).named_parameters())["module.4.weight"]
    assert int((w != 0).sum()) == 128  # a quarter of 8 x 64


@pytest.mark.parametrize("storage", [FullStorage(), PrunedStorage(0.5), NestedStorage()])
def test_decode_gives_back_every_state_dict_entry(storage: SnapshotStorage):
    net = _net()
    assert prunable_weight_names(net, "6") == PRUNABLE
    storage.bind(net, "6", PRUNABLE)
    if isinstance(storage, NestedStorage):
        storage.prune(net, 0, 0.5)
    record = storage.encode(net, "6", PRUNABLE, CLASSES)
    head = net.get_parameter("6.weight").detach().clone()
    with torch.no_grad():  # the live head moves on: the record keeps its own copy
        net.get_parameter("6.weight").add_(1.0)
    state = net.state_dict()
    tensors = storage.decode(record, CLASSES, net)
    assert set(tensors) == set(state)
    for name in ("1.running_mean", "1.weight", "4.bias"):  # small state: copies
        assert torch.equal(tensors[name], state[name])
    assert torch.equal(tensors["6.weight"][:2], head[:2])  # the head as recorded
    head_rest = tensors["6.weight"][2:]
    if storage.head_rows_only:  # rows of classes not seen yet are not kept
        assert not head_rest.any()
    else:
        assert torch.equal(head_rest, head[2:])
    kept = tensors["4.weight"] != 0
    expected = {"full": 512, "pruned": 256, "nested": 256}[storage.mode]
    assert int(kept.sum()) == expected
    assert torch.equal(tensors["4.weight"][kept], state["4.weight"][kept])


def test_only_the_records_and_owners_are_counted():
    net = _net()
    full, pruned, nested = FullStorage(), PrunedStorage(0.5), NestedStorage()
    nested.bind(net, "6", PRUNABLE)
    nested.prune(net, 0, 0.5)  # owners at 1 bit: ceil(36 / 8) + 512 / 8 bytes
    records = {s.mode: [s.encode(net, "6", PRUNABLE, CLASSES)] for s in (full, pruned, nested)}
    state = net.state_dict()
    total = sum(t.numel() * t.element_size() for t in state.values())
    weights = (36 + 512) * 4
    head_rows = 2 * (8 + 1) * 4  # two classes seen of six
    head = (6 * 8 + 6) * 4
    assert full.nbytes(records["full"]) == total
    masks_and_values = (5 + 64) + (18 + 256) * 4
    assert pruned.nbytes(records["pruned"]) == total - weights + masks_and_values
    assert nested.nbytes(records["nested"]) == (5 + 64) + total - weights - head + head_rows
    for s in (full, pruned, nested):
        by_name = s.nbytes_by_name(records[s.mode], CLASSES)
        assert set(by_name) == set(state) and sum(by_name.values()) == s.nbytes(records[s.mode])


def test_each_storage_saves_only_its_own_entries():
    assert set(FullStorage().state_dict()) == {"layouts"}
    assert set(PrunedStorage(0.25).state_dict()) == {"layouts", "pruned_density"}
    assert set(NestedStorage().state_dict()) == {"layouts", "owner_bits", "owner_shapes", "owners"}
    restored = PrunedStorage(0.5)
    restored.load_state_dict({"layouts": [], "pruned_density": 0.25})
    assert restored.density == 0.25  # the saved density is the snapshots'
    with pytest.raises(ValueError, match="pruned_density"):
        restored.load_state_dict({"layouts": [], "pruned_density": 2.0})
    assert restored.density == 0.25  # refused before anything changed


def test_nested_storage_checks_what_it_is_bound_to_and_asked():
    storage = NestedStorage()
    with pytest.raises(RuntimeError, match="bind"):
        storage.prune(_net(), 0, 0.5)
    with pytest.raises(ValueError, match="needs prunable conv/linear layers outside the head '0'"):
        storage.bind(nn.Sequential(nn.Linear(4, 2)), "0", [])
    net = _net()
    storage.bind(net, "6", PRUNABLE)
    with pytest.raises(RuntimeError, match="non-zero free weights.*call prune"):
        storage.encode(net, "6", PRUNABLE, CLASSES)
    released = storage.prune(net, 0, 0.25)
    assert storage.owner_bits == 1
    for name, mask in released.items():
        owner = storage.owner(name)
        assert torch.equal(mask, owner == 0) and not net.get_parameter(name)[mask].any()
        assert abs(float((owner == 1).float().mean()) - 0.25) < 0.02
    fractions = {n: float((o == 0).float().mean()) for n, o in storage.owners.items()}
    assert storage.free_fractions() == fractions
    with pytest.raises(KeyError, match="no owner indices"):
        storage.owner("6.weight")


def test_nested_only_methods_on_a_store_of_another_storage_say_so():
    store = SnapshotStore("full")
    assert store.owner_bits == 0
    for call in (lambda: store.owners, store.free_masks, store.free_fractions,
                 lambda: store.owner("0.weight"), lambda: store.prune(_net(), 0, 0.5)):  # fmt: skip
        with pytest.raises(RuntimeError, match="is for snapshot_mode='nested', not 'full'"):
            call()
