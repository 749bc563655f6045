"""FaithfulKeep: the schedule object, the search, and the search inside a strategy."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from avalanche_m2kd import M2KDStrategy, SnapshotOptions
from avalanche_m2kd.keep_search import accuracy_on, smallest_faithful_keep
from avalanche_m2kd.pruning import FaithfulKeep, keep_fraction, validate_prune_ratio


def test_faithful_keep_tries_parts_of_the_fair_keep_and_the_fair_keep_last():
    schedule = FaithfulKeep(max_drop=0.05, shares=[0.5, 0.25])
    assert schedule.shares == (0.25, 0.5)  # sorted, a tuple
    assert schedule.keeps(1, 5) == [0.0625, 0.125, 0.25]
    assert schedule.keeps(4, 5) == [1.0]
    assert keep_fraction(schedule, 1, 5) == 0.25  # the most it keeps
    assert validate_prune_ratio(schedule) is schedule
    assert schedule.plain() == {
        "faithful_keep": {"max_drop": 0.05, "shares": [0.25, 0.5], "samples": 1024}
    }
    assert FaithfulKeep(**schedule.plain()["faithful_keep"]) == schedule


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(max_drop=-0.1), "max_drop"),
        (dict(max_drop=True), "max_drop"),
        (dict(shares=()), "shares"),
        (dict(shares=(0.5, 1.0)), "shares"),
        (dict(shares=(0.0,)), "shares"),
        (dict(samples=0), "samples"),
        (dict(samples=256.0), "samples"),
        (dict(samples=True), "samples"),
    ],
)
def test_faithful_keep_refuses_values_out_of_range(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FaithfulKeep(**kwargs)


def _two_feature_net() -> nn.Module:
    """Class 0 reads input 0, class 1 reads input 1; the other 6 weights are noise."""
    net = nn.Sequential(nn.Linear(4, 4, bias=False), nn.Linear(4, 2, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.diag(torch.tensor([3.0, 3.0, 0.01, 0.01])))
        net[1].weight.copy_(torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]]))
    return net


def _batches():
    x = torch.zeros(40, 4)
    y = torch.arange(40) % 2
    x[y == 0, 0], x[y == 1, 1] = 1.0, 1.0
    x[:, 2:] = torch.randn(40, 2, generator=torch.Generator().manual_seed(0))
    return [(x[:20], y[:20]), (x[20:], y[20:])]


def test_the_search_keeps_the_smallest_faithful_fraction_and_leaves_the_model_alone():
    net = _two_feature_net()
    before = {n: p.clone() for n, p in net.state_dict().items()}
    owners = {"0.weight": torch.zeros(4, 4, dtype=torch.uint8)}
    # keep 1/16 of the 16 free weights: one diagonal entry (class 1 lost); 2/16: both
    search = smallest_faithful_keep(net, owners, 1, [1 / 16, 2 / 16, 1.0], _batches(), [0, 1],
                                    max_drop=0.02)
    assert search.dense == 1.0
    assert search.keep == 2 / 16
    assert [k for k, _ in search.tried] == [1 / 16, 2 / 16]
    assert search.tried[0][1] == 0.5  # one class left
    assert all(torch.equal(before[n], p) for n, p in net.state_dict().items())
    # nothing small enough is faithful: the last keep, unmeasured
    search = smallest_faithful_keep(net, owners, 1, [1 / 16, 1.0], _batches(), [0, 1], 0.0)
    assert search.keep == 1.0 and len(search.tried) == 1


def test_accuracy_is_judged_among_the_seen_classes_on_the_own_classes_samples():
    net = nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]))
    x, y = torch.eye(2), torch.tensor([0, 1])
    assert accuracy_on(net, [(x, y)], classes=[0, 1], seen=[0, 1]) == 1.0
    assert accuracy_on(net, [(x, y)], classes=[1], seen=[0, 1, 2]) == 0.0
    assert accuracy_on(net, [(x, y)], classes=[7], seen=[0, 1]) == 1.0  # none: every sample
    assert net.training


def test_m2kd_with_faithful_keep_prunes_what_it_measured(digits_images, conv_net):
    torch.manual_seed(0)
    model = conv_net()
    schedule = FaithfulKeep(max_drop=0.05)
    strategy = M2KDStrategy(
        model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), train_mb_size=32,
        train_epochs=3, mem_size=40, snapshot_options=SnapshotOptions(prune_ratio=schedule),
    )
    for exp in digits_images.train_stream[:3]:
        strategy.train(exp)
    searches = strategy.masking.nested_training.keep_searches
    assert [s["experience"] for s in searches] == [0, 1, 2]  # the last of 5 is not searched
    owners = strategy.snapshots.owners
    free = 1.0
    for t, search in enumerate(searches):
        assert search["keep"] in schedule.keeps(t, 5)
        assert search["keep"] <= 1 / (5 - t)
        for owner in owners.values():  # each layer: the chosen part of what was free
            owned = float((owner == t + 1).float().mean())
            assert abs(owned - search["keep"] * free) < 0.02
        free *= 1 - search["keep"]
        tried = dict((k, a) for k, a in search["tried"])
        if search["keep"] in tried:  # measured: within max_drop of the dense model
            assert search["dense"] - tried[search["keep"]] <= 0.05
        assert all(search["dense"] - a > 0.05 for k, a in tried.items() if k < search["keep"])
    assert strategy.m2kd_config["prune_ratio"] == schedule.plain()
    state = strategy.masking.state_dict()
    assert state["keep_searches"] == searches


def _measured_samples(strategy_factory, experiences):
    """Train, counting the samples of every batch each keep search and BatchNorm
    re-estimation is given."""
    from avalanche_m2kd.plugins import nested_training

    seen = {"search": [], "batchnorm": []}
    search, recal = nested_training.smallest_faithful_keep, nested_training.recalibrate_batch_norm

    def counting_search(model, owners, value, keeps, batches, *args, **kwargs):
        seen["search"].append(sum(len(y) for _, y in batches))
        return search(model, owners, value, keeps, batches, *args, **kwargs)

    def counting_recal(model, batches):
        batches = list(batches)
        seen["batchnorm"].append(sum(len(x) for x in batches))
        return recal(model, batches)

    strategy = strategy_factory()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(nested_training, "smallest_faithful_keep", counting_search)
        mp.setattr(nested_training, "recalibrate_batch_norm", counting_recal)
        for exp in experiences:
            strategy.train(exp)
    return strategy, seen


def _measuring_on(conv_net, samples):
    """A seeded M2KD whose keep search and re-estimations measure on ``samples``."""
    torch.manual_seed(0)
    model = conv_net()
    return M2KDStrategy(
        model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
        train_mb_size=32, train_epochs=2, mem_size=40,
        prune_ratio=FaithfulKeep(samples=samples), recalibrate_samples=samples,
    )


def test_the_search_and_the_re_estimation_measure_on_the_samples_asked_for(
    digits_images, conv_net
):
    experiences = digits_images.train_stream[:2]
    _, whole = _measured_samples(lambda: _measuring_on(conv_net, None), experiences)
    strategy, few = _measured_samples(lambda: _measuring_on(conv_net, 40), experiences)
    # whole mini-batches of 32 until at least 40 samples: two
    assert few["search"] == [64, 64] and set(few["batchnorm"]) == {64}
    assert all(n > 64 for n in whole["search"] + whole["batchnorm"])
    assert len(few["batchnorm"]) == len(whole["batchnorm"]) == 4  # sparse, then dense
    assert strategy.m2kd_config["recalibrate_samples"] == 40
    assert strategy.m2kd_config["prune_ratio"]["faithful_keep"]["samples"] == 40


def test_as_many_samples_as_the_pass_holds_changes_nothing(digits_images, conv_net):
    def run(samples):
        strategy = _measuring_on(conv_net, samples)
        for exp in digits_images.train_stream[:2]:
            strategy.train(exp)
        return strategy

    whole, capped = run(None), run(10**6)
    assert whole.masking.nested_training.keep_searches == (
        capped.masking.nested_training.keep_searches
    )
    for (name, a), b in zip(whole.model.state_dict().items(), capped.model.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name
