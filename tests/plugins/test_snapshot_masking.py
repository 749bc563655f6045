"""SnapshotMaskingPlugin beside plugins that load weights, and its BatchNorm re-estimation."""

from __future__ import annotations

import pytest
import torch
from avalanche.benchmarks.scenarios.validation_scenario import benchmark_with_validation_stream
from avalanche.evaluation.metrics import accuracy_metrics
from avalanche.training import Naive
from avalanche.training.plugins import EarlyStoppingPlugin, EvaluationPlugin, SupervisedPlugin

from avalanche_m2kd import M2KDStrategy
from avalanche_m2kd.data import split_digits
from avalanche_m2kd.plugins import SnapshotMaskingPlugin


class _Recorder(SupervisedPlugin):
    """After M2KD's plugins: the eval-mode outputs of the model as each snapshot was recorded."""

    def __init__(self, probe):
        super().__init__()
        self.probe, self.outputs, self.epochs = probe, [], []

    def after_training_exp(self, strategy, **kwargs):
        model = strategy.model
        was = model.training
        model.eval()
        with torch.no_grad():
            self.outputs.append(model(self.probe))
        model.train(was)
        self.epochs.append(strategy.clock.train_exp_epochs)


def _early_stopping_run(conv_net, **m2kd):
    torch.manual_seed(0)
    benchmark = benchmark_with_validation_stream(
        split_digits(5, seed=0, flatten=False), 0.3, shuffle=True, seed=0
    )
    probe = torch.stack([benchmark.test_stream[0].dataset[i][0] for i in range(32)])
    model, recorder = conv_net(), _Recorder(probe)
    m2kd.setdefault("restore_released_at", "next_experience")  # the recorder reads the snapshot
    strategy = M2KDStrategy(
        model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), train_mb_size=32,
        train_epochs=4, eval_every=1, mem_size=40,
        evaluator=EvaluationPlugin(accuracy_metrics(stream=True), loggers=[]),
        plugins=[EarlyStoppingPlugin(patience=1, val_stream_name="valid_stream"), recorder], **m2kd,
    )
    for i, exp in enumerate(benchmark.train_stream):
        strategy.train(exp, eval_streams=[benchmark.valid_stream[i]])
    return strategy, recorder, probe


def test_nested_store_beside_early_stopping_stays_consistent(conv_net):
    strategy, recorder, probe = _early_stopping_run(conv_net)
    store = strategy.snapshots
    assert min(recorder.epochs) < 4  # early stopping did stop (and reload) at least once
    assert len(store) == 5 and [len(c) for c in store.classes] == [2] * 5
    assert int(max(o.max() for o in store.owners.values())) == 5  # owners 1..5, one per snapshot
    for k, expected in enumerate(recorder.outputs):  # every teacher is its snapshot, bit for bit
        seen = sorted(c for exp in store.classes[: k + 1] for c in exp)  # (other rows are 0)
        assert torch.equal(store.teacher(k).run(probe, "running")[0][:, seen], expected[:, seen]), k


def test_owned_weights_changed_between_experiences_are_refused(conv_net, digits_images):
    model = conv_net()
    strategy = M2KDStrategy(model, torch.optim.SGD(model.parameters(), lr=0.05), train_mb_size=32,
                            mem_size=0, evaluator=EvaluationPlugin(loggers=[]))
    strategy.train(digits_images.train_stream[0])
    with torch.no_grad():
        model[0].weight.mul_(1.01)  # e.g. a best-model reload placed after M2KD's plugins
    with pytest.raises(RuntimeError, match="changed after they were recorded"):
        strategy.train(digits_images.train_stream[1])


def test_recalibrated_statistics_are_those_of_the_pruned_model(conv_net, digits_images):
    """With ``recalibrate_bn`` the recorded snapshot normalises with the statistics the
    pruned weights produce on the training data; without it, with the dense model's."""
    exp = digits_images.train_stream[0]
    x = torch.stack([exp.dataset[i][0] for i in range(len(exp.dataset))])
    stats = {}
    for recalibrate in (True, False):
        torch.manual_seed(0)
        model = conv_net()
        masking = SnapshotMaskingPlugin("nested", post_prune_epochs=0, n_experiences=5,
                                        recalibrate_bn=recalibrate)
        strategy = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05),
                         train_mb_size=len(x), train_epochs=2, plugins=[masking],
                         evaluator=EvaluationPlugin(loggers=[]))
        strategy.train(exp)
        with torch.no_grad():
            pre_bn = model[0](x)  # the pruned first conv's output on the whole experience
        stats[recalibrate] = (model[1].running_mean.clone(), pre_bn.mean((0, 2, 3)))
    recal_mean, actual = stats[True]
    torch.testing.assert_close(recal_mean, actual, atol=1e-5, rtol=1e-5)  # one batch: exact mean
    stale_mean, actual = stats[False]
    assert (stale_mean - actual).abs().max() > 10 * (recal_mean - stats[True][1]).abs().max() + 1e-4


def test_recalibrate_bn_must_be_a_bool():
    with pytest.raises(ValueError, match="recalibrate_bn"):
        SnapshotMaskingPlugin("nested", recalibrate_bn="yes")  # type: ignore[arg-type]


# ------------------------------------------------- the plugin alone, inside Naive
def _naive(model, plugins, epochs=2, optimizer=None):
    optimizer = optimizer or torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    return Naive(model=model, optimizer=optimizer, train_mb_size=32, train_epochs=epochs,
                 plugins=plugins, evaluator=EvaluationPlugin(loggers=[]))


class _Weights(SupervisedPlugin):
    """After the masking plugin: the weights as each snapshot was recorded."""

    def __init__(self):
        super().__init__()
        self.weights = []

    def after_training_exp(self, strategy, **kwargs):
        self.weights.append({n: p.detach().clone() for n, p in strategy.model.named_parameters()})


def test_full_storage_in_naive_records_exact_snapshots_and_freezes_nothing(conv_net, digits_images):
    probe = torch.stack([digits_images.test_stream[0].dataset[i][0] for i in range(16)])
    masking, recorder, weights = SnapshotMaskingPlugin("full"), _Recorder(probe), _Weights()
    assert masking.nested_training is None and masking.mode == "full"
    strategy = _naive(conv_net(), [masking, recorder, weights])
    for exp in digits_images.train_stream[:3]:
        strategy.train(exp)
    store = masking.store
    assert len(store) == 3 and store.classes == [
        sorted(int(c) for c in e.classes_in_this_experience) for e in digits_images.train_stream[:3]
    ]
    for k in range(3):  # every column, bit for bit: full copies
        assert torch.equal(store.teacher(k).run(probe, "running")[0], recorder.outputs[k]), k
    for name in ("0.weight", "3.weight"):  # nothing frozen: every weight trained on
        moved = weights.weights[2][name] != weights.weights[0][name]
        assert float(moved.float().mean()) > 0.99, name
    restored = SnapshotMaskingPlugin("full")
    restored.load_state_dict(masking.state_dict())
    restored.store.bind(strategy.model)
    assert torch.equal(restored.store.teacher(1)(probe), store.teacher(1)(probe))


def test_pruned_storage_from_prune_ratio_or_an_object(conv_net, digits_images):
    from avalanche_m2kd.storage import PrunedStorage

    quarter = SnapshotMaskingPlugin("pruned", prune_ratio=0.75).store.storage
    default = SnapshotMaskingPlugin("pruned").store.storage
    assert isinstance(quarter, PrunedStorage) and quarter.density == 0.25
    assert isinstance(default, PrunedStorage) and default.density == 0.5
    given = SnapshotMaskingPlugin(PrunedStorage(density=0.25))
    assert given.prune_ratio == 0.75 and given.nested_training is None
    with pytest.raises(ValueError, match="`prune_ratio` to be None with a PrunedStorage"):
        SnapshotMaskingPlugin(PrunedStorage(0.25), prune_ratio=0.5)
    with pytest.raises(ValueError, match="float in \\[0, 1\\) with snapshot_mode='pruned'"):
        SnapshotMaskingPlugin("pruned", prune_ratio="fair")
    weights = _Weights()
    strategy = _naive(conv_net(), [given, weights], epochs=1)
    strategy.train(digits_images.train_stream[0])
    teacher = dict(given.store.teacher(0).named_parameters())
    for name in given.store.prunable:
        kept = teacher["module." + name] != 0
        assert abs(float(kept.float().mean()) - 0.25) < 0.01
        assert torch.equal(teacher["module." + name][kept], weights.weights[0][name][kept])
        assert bool((weights.weights[0][name] != 0).all())  # the live model is not pruned


def test_a_repeated_experience_is_refused_in_naive(conv_net, digits_images):
    masking = SnapshotMaskingPlugin("full")
    strategy = _naive(conv_net(), [masking], epochs=1)
    strategy.train(digits_images.train_stream[0])
    with pytest.raises(
        ValueError, match="already introduced by experience 0.*not class-incremental"
    ):
        strategy.train(digits_images.train_stream[0])
    assert len(masking.store) == 1
