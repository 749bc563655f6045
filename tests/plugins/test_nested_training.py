"""NestedTrainingPlugin inside Avalanche's Naive, added by SnapshotMaskingPlugin for
nested storage: frozen owned weights, the prune schedule, released weights."""

from __future__ import annotations

import pytest
import torch
from avalanche.training import Naive
from avalanche.training.plugins import EvaluationPlugin, SupervisedPlugin

from avalanche_m2kd.plugins import NestedTrainingPlugin, SnapshotMaskingPlugin
from avalanche_m2kd.pruning import FaithfulKeep
from avalanche_m2kd.snapshots import SnapshotStore
from avalanche_m2kd.storage import NestedStorage


class _Spy(SupervisedPlugin):
    """Placed after the masking plugin: what the model looks like after its hooks."""

    def __init__(self, store: SnapshotStore):
        super().__init__()
        self.store = store
        self.epochs: list[tuple[int, bool, bool]] = []
        self.max_owned_grad = 0.0
        self.at_start: list[dict[str, torch.Tensor]] = []

    def before_training_exp(self, strategy, **kwargs):
        self.at_start.append({n: p.detach().clone() for n, p in strategy.model.named_parameters()})

    def after_backward(self, strategy, **kwargs):
        params = dict(strategy.model.named_parameters())
        for name, owner in self.store.owners.items():
            owned = (owner > 0) & (owner <= len(self.store))  # snapshots already recorded
            grad = params[name].grad[owned]
            self.max_owned_grad = max(self.max_owned_grad, float(grad.abs().sum()))

    def after_training_epoch(self, strategy, **kwargs):
        t, params = len(self.store), dict(strategy.model.named_parameters())
        owners = self.store.owners
        pruned = any(bool((o == t + 1).any()) for o in owners.values())
        free_zero = all(not params[n][o == 0].any() for n, o in owners.items())
        self.epochs.append((strategy.clock.train_exp_epochs, pruned, free_zero))


class _BeforePruning(SupervisedPlugin):
    """Placed before the masking plugin: the weights of the last epoch before pruning."""

    def __init__(self):
        super().__init__()
        self.dense: list[dict[str, torch.Tensor]] = []

    def after_training_epoch(self, strategy, **kwargs):
        if strategy.clock.train_exp_epochs == 1:  # the second epoch ends (0-based count)
            self.dense.append({n: p.detach().clone() for n, p in strategy.model.named_parameters()})


def _run(conv_net, benchmark, n_exp=2, optimizer=torch.optim.Adam, **options):
    torch.manual_seed(0)
    model = conv_net()
    # the mechanism under the fixed schedule, the live model between experiences sparse
    options.setdefault("prune_ratio", "fair")
    options.setdefault("restore_released_at", "next_experience")
    masking = SnapshotMaskingPlugin(
        NestedStorage(), post_prune_epochs=1, n_experiences=5, **options
    )
    spy, before = _Spy(masking.store), _BeforePruning()
    strategy = Naive(
        model=model, optimizer=optimizer(model.parameters(), lr=0.01, weight_decay=0.01),
        train_mb_size=32, train_epochs=3, plugins=[before, masking, spy],
        evaluator=EvaluationPlugin(loggers=[]),
    )  # fmt: skip
    weights = []
    for exp in benchmark.train_stream[:n_exp]:
        strategy.train(exp)
        weights.append({n: p.detach().clone() for n, p in model.named_parameters()})
    return masking, spy, before, weights, strategy


def test_masking_adds_the_nested_plugin_only_for_nested_storage():
    nested = SnapshotMaskingPlugin("nested", warm_start_released=False)
    assert isinstance(nested.nested_training, NestedTrainingPlugin)
    assert nested.nested_training.store is nested.store
    nested.warm_start_released = True  # the plugin's attributes are the nested plugin's
    assert nested.nested_training.warm_start_released is True
    assert nested.prune_ratio == FaithfulKeep()
    full = SnapshotMaskingPlugin("full")
    assert full.nested_training is None and full.prune_ratio == 0.5
    with pytest.raises(ValueError, match="post_prune_epochs"):  # checked whatever the storage
        SnapshotMaskingPlugin("full", post_prune_epochs=-1)
    with pytest.raises(ValueError, match="`store` to have nested storage"):
        NestedTrainingPlugin(SnapshotStore("full"))
    with pytest.raises(ValueError, match="restore_released_at"):
        NestedTrainingPlugin(SnapshotStore("nested"), restore_released_at="later")  # type: ignore[arg-type]


def test_owned_weights_do_not_move_under_adam_with_weight_decay(conv_net, digits_images):
    masking, spy, _, weights, _ = _run(conv_net, digits_images, n_exp=3)
    store = masking.store
    assert len(store) == 3 and spy.max_owned_grad == 0.0
    for name, owner in store.owners.items():
        for k in range(3):  # weights owned by snapshot k kept their value to the end
            owned = (owner >= 1) & (owner <= k + 1)
            assert owned.any()
            assert torch.equal(weights[2][name][owned], weights[k][name][owned]), (name, k)
        free = owner == 0  # the free weights did train
        assert not torch.equal(spy.at_start[1][name][free], spy.at_start[2][name][free])


def test_pruning_happens_after_epoch_train_epochs_minus_post_prune_epochs(conv_net, digits_images):
    masking, spy, _, _, _ = _run(conv_net, digits_images, n_exp=1)
    # (the clock's 0-based epoch, pruned yet, free weights all zero) after each of the
    # 3 epochs: pruned after the second (3 - post_prune_epochs), released held at zero
    assert spy.epochs == [(0, False, False), (1, True, True), (2, True, True)]
    for owner in masking.store.owners.values():  # "fair" over 5: a fifth kept
        assert abs(float((owner == 1).float().mean()) - 0.2) < 0.05


@pytest.mark.parametrize("when", ["next_experience", "end_of_experience"])
def test_released_weights_come_back_with_their_trained_values(conv_net, digits_images, when):
    masking, spy, before, weights, _ = _run(
        conv_net, digits_images, n_exp=2, restore_released_at=when
    )
    owners = masking.store.owners
    for name, owner in owners.items():
        released = owner != 1  # by experience 0's pruning (later owners were free then)
        between = weights[0][name][released]  # the live model after experience 0
        if when == "next_experience":
            assert not between.any()  # the sparse snapshot between experiences
        else:
            assert torch.equal(between, before.dense[0][name][released])
        restarted = spy.at_start[1][name][released]  # experience 1 starts from the trained values
        assert torch.equal(restarted, before.dense[0][name][released])
        teacher_w = dict(masking.store.teacher(0).named_parameters())["module." + name]
        assert not teacher_w[released].any()  # the snapshot is sparse either way


def test_without_warm_start_released_weights_restart_at_zero(conv_net, digits_images):
    masking, spy, _, _, _ = _run(conv_net, digits_images, n_exp=2, warm_start_released=False)
    for name, owner in masking.store.owners.items():
        assert not spy.at_start[1][name][owner != 1].any()


def test_owned_weights_changed_between_experiences_are_refused_in_naive(conv_net, digits_images):
    _, _, _, _, strategy = _run(conv_net, digits_images, n_exp=1, optimizer=torch.optim.SGD)
    with torch.no_grad():
        strategy.model[3].weight.add_(0.01)
    with pytest.raises(RuntimeError, match="changed after they were recorded.*'3.weight'"):
        strategy.train(digits_images.train_stream[1])


def test_state_dict_keeps_the_released_values_on_cpu(conv_net, digits_images):
    masking, _, before, _, _ = _run(conv_net, digits_images, n_exp=1)
    state = masking.nested_training.state_dict()
    owners = masking.store.owners
    assert set(state["released"]) == set(owners)
    for name, values in state["released"].items():
        assert values.device.type == "cpu"
        assert torch.equal(values, torch.where(owners[name] == 1, 0.0, before.dense[0][name]))
    fresh = SnapshotMaskingPlugin(NestedStorage())
    fresh.load_state_dict(masking.state_dict())
    assert fresh.nested_training is not None
    assert set(fresh.nested_training.state_dict()["released"]) == set(owners)
