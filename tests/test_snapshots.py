"""The snapshot store: exact teachers, frozen owned weights, bytes, state round trip."""

from __future__ import annotations

import pytest
import torch
from avalanche.models import IncrementalClassifier
from avalanche.training.plugins import EvaluationPlugin, SupervisedPlugin
from torch import nn

from avalanche_m2kd import M2KDStrategy, SnapshotStore
from avalanche_m2kd.pruning import snapshot_mask


class _Recorder(SupervisedPlugin):
    """Keeps the model's eval outputs and weights at the moment each snapshot is taken."""

    def __init__(self, probe: torch.Tensor):
        super().__init__()
        self.probe = probe
        self.outputs: list[torch.Tensor] = []
        self.weights: list[dict[str, torch.Tensor]] = []

    @torch.no_grad()
    def after_training_exp(self, strategy, **kwargs):
        model = strategy.model
        was_training = model.training
        model.eval()
        self.outputs.append(model(self.probe).clone())
        model.train(was_training)
        self.weights.append({n: p.detach().clone() for n, p in model.named_parameters()})


def _train(benchmark, conv_net, mode, head=None, n_exp=5, **kwargs):
    probe = torch.cat([benchmark.test_stream[i].dataset[j][0].unsqueeze(0) for i in range(5) for j in range(4)])
    recorder = _Recorder(probe)
    model = conv_net(head=head)
    strategy = M2KDStrategy(
        model,
        torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4),
        train_mb_size=32,
        train_epochs=3,
        post_prune_epochs=1,
        mem_size=20,
        snapshot_mode=mode,
        evaluator=EvaluationPlugin(loggers=[]),
        plugins=[recorder],
        **kwargs,
    )
    for exp in benchmark.train_stream[:n_exp]:
        strategy.train(exp)
    return strategy, recorder


@pytest.mark.parametrize("mode", ["nested", "full"])
@pytest.mark.parametrize("incremental_head", [False, True])
def test_teachers_are_bit_exact_after_later_experiences(digits_images, mode, incremental_head, conv_net):
    head = IncrementalClassifier(16, initial_out_features=2) if incremental_head else None
    strategy, recorder = _train(digits_images, conv_net, mode, head=head)
    store = strategy.snapshots
    assert len(store) == 5
    for k in range(5):
        teacher = store.teacher(k)
        assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
        teacher.train()  # a teacher can never leave eval mode
        assert not teacher.training
        out = teacher(recorder.probe)
        assert torch.equal(out, recorder.outputs[k]), f"teacher {k} differs"


def test_nested_owned_weights_never_change_and_released_stay_zero(digits_images, conv_net):
    strategy, recorder = _train(digits_images, conv_net, "nested")
    store = strategy.snapshots
    live = dict(strategy.model.named_parameters())
    for name in store.prunable:
        owner = store.owners[name]
        for k in range(5):
            owned = snapshot_mask(owner, k + 1)
            # weights owned by snapshot <= k are identical to their value when k was recorded
            assert torch.equal(live[name][owned], recorder.weights[k][name][owned])
            teacher_w = dict(store.teacher(k).named_parameters())["module." + name]
            assert torch.equal(teacher_w[~owned], torch.zeros_like(teacher_w[~owned]))
            assert torch.equal(teacher_w[owned], live[name][owned])
    # 'fair' share: each of the 5 experiences owns about a fifth of every layer
    for name in store.prunable:
        counts = torch.bincount(store.owners[name].flatten().long(), minlength=6)[1:]
        assert counts.sum() == store.owners[name].numel()
        assert (counts.float() / counts.sum() - 0.2).abs().max() < 0.05, counts


def _state_bytes(state: dict[str, torch.Tensor], skip=()) -> int:
    return sum(t.numel() * t.element_size() for n, t in state.items() if n not in skip)


def test_nbytes_counts_what_each_mode_holds(digits_images, conv_net):
    nested, _ = _train(digits_images, conv_net, "nested", n_exp=3)
    full, _ = _train(digits_images, conv_net, "full", n_exp=3)
    pruned, _ = _train(digits_images, conv_net, "pruned", n_exp=3, prune_ratio=0.75)
    state = full.model.state_dict()
    store = nested.snapshots
    prunable_numel = sum(state[n].numel() for n in store.prunable)
    small = _state_bytes(state, skip=store.prunable)
    assert store.nbytes() == prunable_numel * 1 + 3 * small  # uint8 owner + small states
    assert full.snapshots.nbytes() == 3 * _state_bytes(state)
    masks = sum((state[n].numel() + 7) // 8 for n in store.prunable)
    values = sum(round(0.25 * state[n].numel()) * 4 for n in store.prunable)
    assert pruned.snapshots.nbytes() == 3 * (masks + values + small)
    assert store.nbytes() < full.snapshots.nbytes() / 2


def test_pruned_teachers_are_the_magnitude_pruned_snapshots(digits_images, conv_net):
    strategy, recorder = _train(digits_images, conv_net, "pruned", n_exp=2, prune_ratio=0.5)
    for k in range(2):
        weights = dict(strategy.snapshots.teacher(k).named_parameters())
        for name in strategy.snapshots.prunable:
            w, recorded = weights["module." + name], recorder.weights[k][name]
            kept = w != 0
            assert abs(kept.float().mean().item() - 0.5) < 0.01
            assert torch.equal(w[kept], recorded[kept])
            assert recorded[kept].abs().min() >= recorded[~kept].abs().max()


@pytest.mark.parametrize("mode", ["nested", "pruned", "full"])
def test_state_dict_round_trip_rebuilds_identical_teachers(digits_images, mode, tmp_path, conv_net):
    strategy, recorder = _train(digits_images, conv_net, mode, n_exp=3)
    store = strategy.snapshots
    state = store.state_dict()
    live = {id(p) for p in strategy.model.parameters()}
    flat = [state["owners"]] + [s for snap in state["snapshots"] for s in snap.values()]
    assert all(id(t) not in live for d in flat for t in d.values())
    if mode == "nested":  # no prunable (live) weight is copied into the state
        assert all(n not in snap["state"] for snap in state["snapshots"] for n in store.prunable)
    path = tmp_path / "store.pt"
    torch.save(state, path)
    restored = SnapshotStore(mode)
    restored.load_state_dict(torch.load(path, weights_only=True))
    restored.bind(strategy.model)
    assert len(restored) == 3 and restored.classes == store.classes
    assert restored.nbytes() == store.nbytes()
    for k in range(3):
        assert torch.equal(restored.teacher(k)(recorder.probe), store.teacher(k)(recorder.probe))


def test_load_state_dict_rejects_other_mode():
    store = SnapshotStore("full")
    with pytest.raises(ValueError, match="mode"):
        SnapshotStore("nested").load_state_dict(store.state_dict())


def test_teacher_index_out_of_range():
    store = SnapshotStore("full")
    store.bind(nn.Sequential(nn.Linear(2, 2)))
    with pytest.raises(IndexError, match="holds 0"):
        store.teacher(0)
