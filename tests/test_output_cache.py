"""Per-sample teacher outputs: a teacher on its stored statistics runs once per sample an
experience, gives what a fresh run gives, and batch-statistics teachers are never cached."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from avalanche_m2kd import M2KDStrategy
from avalanche_m2kd.frozen_teacher import FrozenTeacher
from avalanche_m2kd.output_cache import SampleOutputCache, sample_keys
from avalanche_m2kd.snapshots import SnapshotStore


def _net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 4),
    )


def _store(mode: str, net: nn.Module) -> SnapshotStore:
    store = SnapshotStore(mode, head_name="5")
    store.bind(net)
    with torch.no_grad():
        net(torch.randn(32, 1, 8, 8))  # not only the initial statistics
    net.eval()
    if mode == "nested":
        store.prune(net, 0, 0.5)
    store.record(net, [0, 1])
    return store


@pytest.fixture
def forwards(monkeypatch):
    """How many samples went through a teacher's forward."""
    seen: list[int] = []
    original = FrozenTeacher.run

    def run(self, x, *args, **kwargs):
        seen.append(len(x))
        return original(self, x, *args, **kwargs)

    monkeypatch.setattr(FrozenTeacher, "run", run)
    return seen


@pytest.mark.parametrize("mode", ["full", "nested", "pruned"])
def test_a_second_epoch_runs_no_teacher_and_matches_a_fresh_run(mode, forwards):
    store = _store(mode, _net())
    data = torch.randn(40, 1, 8, 8)
    first = [store.run_teacher(0, b, "running")[0] for b in data.split(16)]
    store.end_step()
    assert sum(forwards) == 40
    order = torch.randperm(40)
    shuffled = data[order]
    again = torch.cat([store.run_teacher(0, b.clone(), "running")[0] for b in shuffled.split(16)])
    assert sum(forwards) == 40  # every sample found
    assert torch.equal(again, torch.cat(first)[order])
    store.output_cache.enabled = False
    fresh = torch.cat([store.run_teacher(0, b.clone(), "running")[0] for b in shuffled.split(16)])
    assert sum(forwards) == 80
    torch.testing.assert_close(again, fresh)


def test_only_unseen_samples_run_and_the_rows_stay_in_batch_order(forwards):
    store = _store("full", _net())
    a, b = torch.randn(6, 1, 8, 8), torch.randn(4, 1, 8, 8)
    store.run_teacher(0, a, "running")
    store.end_step()
    mixed = torch.cat([b[:2], a[3:], b[2:]])
    out, _ = store.run_teacher(0, mixed, "running")
    assert forwards == [6, 4]
    store.output_cache.enabled = False
    torch.testing.assert_close(out, store.run_teacher(0, mixed.clone(), "running")[0])
    assert store.output_cache.nbytes() == 0  # turning it off frees the rows


def test_batch_statistics_are_never_cached(forwards):
    store = _store("full", _net())
    x = torch.randn(8, 1, 8, 8)
    for _ in range(3):
        store.run_teacher(0, x.clone(), "batch")
    assert forwards == [8, 8, 8] and store.output_cache.hits == 0


def test_a_new_snapshot_or_new_features_forget_the_rows(forwards):
    net = _net()
    store = _store("full", net)
    x = torch.randn(8, 1, 8, 8)
    store.run_teacher(0, x, "running")
    store.record(net, [2, 3])
    assert store.output_cache.nbytes() == 0
    store.run_teacher(0, x.clone(), "running")
    store.capture_features(["5:input"])
    logits, feats = store.run_teacher(0, x.clone(), "running")
    assert forwards == [8, 8, 8] and feats["5:input"].shape == (8, 6)
    store.run_teacher(0, x.clone(), "running")
    assert forwards == [8, 8, 8]
    assert store.teacher_nbytes() >= store.output_cache.nbytes() == 8 * (4 + 6) * 4


def test_the_byte_bound_keeps_what_fits_and_still_answers():
    cache = SampleOutputCache(max_bytes=3 * 4 * 2)  # three rows of two floats

    def double(v):
        return 2 * v, {}

    x = torch.arange(10.0).reshape(5, 2)
    torch.testing.assert_close(cache.run("t", x, double)[0], 2 * x)
    assert cache.nbytes() == 24
    y = torch.cat([x[4:], x[:1]])
    torch.testing.assert_close(cache.run("t", y, double)[0], 2 * y)
    assert (cache.hits, cache.misses) == (1, 6)
    with pytest.raises(ValueError, match="max_bytes"):
        SampleOutputCache(max_bytes=-1)
    with pytest.raises(ValueError, match="enabled"):
        cache.enabled = 1
    cache.enabled = False
    assert cache.nbytes() == 0 and cache.run("t", x, double)[0].equal(2 * x) and cache.nbytes() == 0


def test_keys_see_every_byte():
    x = torch.zeros(2, 3, 4)
    y = x.clone()
    y[1, 2, 3] = 1e-30
    assert sample_keys(x)[0] == sample_keys(y)[0] != sample_keys(y)[1]
    assert sample_keys(x.reshape(2, 12))[0] != sample_keys(x)[0]  # the shape is part of it


def test_training_with_the_cache_equals_training_without(digits_images, conv_net, forwards):
    def run(cache: bool):
        torch.manual_seed(0)
        model = conv_net()
        strategy = M2KDStrategy(
            model,
            torch.optim.SGD(model.parameters(), lr=0.05),
            train_mb_size=32,
            train_epochs=3,
            eval_mb_size=256,
            mem_size=20,
            teacher_bn="running",
            prune_ratio=0.5,
            post_prune_epochs=0,
            evaluator=None,
        )
        strategy.snapshots.output_cache.enabled = cache
        start = len(forwards)
        for exp in list(digits_images.train_stream)[:2]:
            strategy.train(exp)
        return model.state_dict(), sum(forwards[start:])

    cached, n_cached = run(True)
    fresh, n_fresh = run(False)
    assert n_cached < n_fresh / 2  # three epochs: the teacher runs on each sample once
    for name, value in fresh.items():
        torch.testing.assert_close(cached[name], value, rtol=1e-4, atol=1e-5, msg=name)


def test_keys_are_made_once_per_input_and_follow_in_place_changes(monkeypatch):
    from avalanche_m2kd import output_cache

    made = []
    original = output_cache.sample_keys
    monkeypatch.setattr(output_cache, "sample_keys", lambda x: made.append(1) or original(x))
    cache = SampleOutputCache()
    x = torch.ones(3, 2)
    for teacher in ("a", "b", "c"):
        cache.run(teacher, x, lambda v: (v.sum(1, keepdim=True), {}))
    assert len(made) == 1
    x.mul_(2)  # the same tensor, new values: new keys, new outputs
    out, _ = cache.run("a", x, lambda v: (v.sum(1, keepdim=True), {}))
    assert len(made) == 2 and out.flatten().tolist() == [4.0, 4.0, 4.0]
