"""The snapshot store: exact teachers, frozen owned weights, bytes, state round trip."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pytest
import torch
from avalanche.models import IncrementalClassifier
from avalanche.training.plugins import EvaluationPlugin, SupervisedPlugin
from torch import nn

from avalanche_m2kd import M2KDStrategy, SnapshotStore
from avalanche_m2kd.pruning import keep_fraction, snapshot_mask


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
    probe = torch.cat(
        [benchmark.test_stream[i].dataset[j][0].unsqueeze(0) for i in range(5) for j in range(4)]
    )
    recorder = _Recorder(probe)
    model = conv_net(head=head)
    # the recorder reads the live model after each experience: the snapshot itself only
    # while the released weights wait for the next experience
    kwargs.setdefault("restore_released_at", "next_experience")
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
def test_teachers_are_bit_exact_after_later_experiences(
    digits_images, mode, incremental_head, conv_net
):
    head = IncrementalClassifier(16, initial_out_features=2) if incremental_head else None
    strategy, recorder = _train(digits_images, conv_net, mode, head=head)
    store = strategy.snapshots
    assert len(store) == 5
    for k in range(5):
        teacher = store.teacher(k)
        assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
        teacher.train()  # a teacher can never leave eval mode
        assert not teacher.training
        out, expected = teacher(recorder.probe), recorder.outputs[k]
        seen = sorted(c for exp in store.classes[: k + 1] for c in exp)
        assert torch.equal(out[:, seen], expected[:, seen]), f"teacher {k} differs"
        if mode == "full" or incremental_head:  # IncrementalClassifier masks unseen units
            assert torch.equal(out, expected), f"teacher {k} differs"
        else:  # nested keeps no head row of the classes the snapshot had not seen
            unseen = [c for c in range(out.shape[1]) if c not in seen]
            assert torch.equal(out[:, unseen], torch.zeros_like(out[:, unseen]))


def test_nested_owned_weights_never_change_and_released_stay_zero(digits_images, conv_net):
    strategy, recorder = _train(digits_images, conv_net, "nested", prune_ratio="fair")
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
    assert store.owner_bits == 2  # owners 0..3
    owners = sum(math.ceil(state[n].numel() * 2 / 8) for n in store.prunable)
    body = _state_bytes(state, skip=store.prunable + ["8.weight", "8.bias"])
    head_rows = sum(2 * (k + 1) * (16 + 1) * 4 for k in range(3))  # 2 new classes each
    assert store.nbytes() == owners + 3 * body + head_rows
    small = _state_bytes(state, skip=store.prunable)
    assert full.snapshots.nbytes() == 3 * _state_bytes(state)
    masks = sum((state[n].numel() + 7) // 8 for n in store.prunable)
    values = sum(round(0.25 * state[n].numel()) * 4 for n in store.prunable)
    assert pruned.snapshots.nbytes() == 3 * (masks + values + small)
    for s in (store, full.snapshots, pruned.snapshots):
        by_name = s.nbytes_by_name()
        assert sum(by_name.values()) == s.nbytes() and set(by_name) == set(state)
    assert store.nbytes() < full.snapshots.nbytes() / 3


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


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v)


@pytest.mark.parametrize("mode", ["nested", "pruned", "full"])
def test_state_dict_round_trip_rebuilds_identical_teachers(digits_images, mode, conv_net):
    strategy, recorder = _train(digits_images, conv_net, mode, n_exp=3)
    store = strategy.snapshots
    state = store.state_dict()
    live = {p.data_ptr() for p in strategy.model.parameters()}
    assert all(t.data_ptr() not in live for t in _tensors(state))
    # the state holds exactly the tensors nbytes() counts
    assert sum(t.numel() * t.element_size() for t in _tensors(state)) == store.nbytes()
    if mode == "nested":  # no prunable (live) weight is copied into the state
        assert all(n not in [e[0] for e in lay] for lay in state["layouts"] for n in store.prunable)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    restored = SnapshotStore(mode)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    restored.bind(strategy.model)
    assert len(restored) == 3 and restored.classes == store.classes
    assert restored.nbytes() == store.nbytes() and restored.owner_bits == store.owner_bits
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


# ------------------------------------------------ nested format, without training


def _small_net(n_classes: int = 40) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
        nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, n_classes),
    )  # fmt: skip


@torch.no_grad()
def _simulate(store: SnapshotStore, model: nn.Module, n_snapshots: int, per_exp: int = 2):
    """Record ``n_snapshots`` experiences of random weights through the store's API.

    Returns the probe batch, the model's logits and its state at each recording,
    and the owner width after each recording.
    """
    x = torch.randn(6, 1, 6, 6)
    store.bind(model)
    outputs, states, widths = [], [], []
    for t in range(n_snapshots):
        params = dict(model.named_parameters())
        for name, free in store.free_masks().items():
            params[name].copy_(torch.where(free, torch.randn_like(params[name]), params[name]))
        for name, tensor in model.state_dict().items():
            if name not in store.prunable and tensor.is_floating_point():
                tensor.copy_(torch.rand_like(tensor) + 0.5)  # biases, BN (var > 0), head
        store.prune(model, t, keep_fraction("fair", t, n_snapshots))
        store.record(model, classes=range(per_exp * t, per_exp * (t + 1)))
        outputs.append(model.eval()(x))
        states.append({n: v.clone() for n, v in model.state_dict().items()})
        widths.append(store.owner_bits)
    return x, outputs, states, widths


def _assert_teachers_exact(store: SnapshotStore, x, outputs, states, per_exp: int = 2):
    for k in range(len(store)):
        teacher = store.teacher(k)
        seen = list(range(per_exp * (k + 1)))
        rebuilt = {n.removeprefix("module."): v for n, v in teacher.state_dict().items()}
        assert set(rebuilt) == set(states[k])
        for name, value in states[k].items():
            if name.startswith("6."):  # the head: rows of seen classes, zero elsewhere
                assert torch.equal(rebuilt[name][seen], value[seen]), (k, name)
                assert not rebuilt[name][per_exp * (k + 1) :].any(), (k, name)
            else:
                assert torch.equal(rebuilt[name], value), (k, name)
        assert torch.equal(teacher(x)[:, seen], outputs[k][:, seen]), k


def test_nested_five_snapshots_take_three_bits_per_weight():
    store, model = SnapshotStore("nested"), _small_net()
    x, outputs, states, widths = _simulate(store, model, 5)
    assert widths == [1, 2, 2, 3, 3]  # ceil(log2(T + 1)) after T snapshots
    # owners: 36 conv + 512 linear weights at 3 bits = ceil(108 / 8) + 192 bytes
    assert store.nbytes_by_name()["0.weight"] == 14 and store.nbytes_by_name()["4.weight"] == 192
    # per snapshot k: BN weight, bias, mean, var (4 x 4 floats) + num_batches_tracked (int64)
    # + the 8 biases of layer 4 + 2 (k + 1) head rows of 8 weights and 1 bias
    small = [4 * 4 * 4 + 8 + 8 * 4 + 2 * (k + 1) * 9 * 4 for k in range(5)]
    assert store.nbytes() == 14 + 192 + sum(small) == 1806
    assert sum(store.nbytes_by_name().values()) == store.nbytes()
    _assert_teachers_exact(store, x, outputs, states)


def test_nested_owner_width_grows_past_fifteen_snapshots():
    store, model = SnapshotStore("nested"), _small_net()
    x, outputs, states, widths = _simulate(store, model, 17)
    assert widths[14] == 4 and widths[15:] == [5, 5]  # re-packed at the 16th snapshot
    numel = {"0.weight": 36, "4.weight": 512}
    assert {n: store.nbytes_by_name()[n] for n in numel} == {
        n: math.ceil(v * 5 / 8) for n, v in numel.items()
    }
    owners = store.owners
    assert owners["4.weight"].dtype == torch.uint8 and int(owners["4.weight"].max()) == 17
    _assert_teachers_exact(store, x, outputs, states)  # snapshots packed at 4 bits too


def test_nested_state_dict_is_the_packed_form_and_round_trips():
    store, model = SnapshotStore("nested"), _small_net()
    x, outputs, states, _ = _simulate(store, model, 5)
    state = store.state_dict()
    assert state["owner_bits"] == 3
    assert {n: t.dtype for n, t in state["owners"].items()} == {
        "0.weight": torch.uint8,
        "4.weight": torch.uint8,
    }
    assert sum(t.numel() * t.element_size() for t in _tensors(state)) == store.nbytes()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    restored = SnapshotStore("nested")
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert restored.nbytes() == store.nbytes() == 1806
    assert all(torch.equal(restored.owners[n], o) for n, o in store.owners.items())  # before bind
    restored.bind(model)
    _assert_teachers_exact(restored, x, outputs, states)


def test_nested_rejects_a_corrupt_or_foreign_state():
    store, model = SnapshotStore("nested"), _small_net()
    _simulate(store, model, 3)
    state = store.state_dict()
    with pytest.raises(ValueError, match="corrupt"):
        SnapshotStore("nested").load_state_dict({**state, "owner_bits": 3})
    with pytest.raises(ValueError, match="format"):
        SnapshotStore("nested").load_state_dict({**state, "format": 1})
    restored = SnapshotStore("nested")
    restored.load_state_dict(state)
    other = _small_net()
    other[0] = nn.Conv2d(1, 4, 2, bias=False)  # same layer names, another shape
    with pytest.raises(ValueError, match="another architecture"):
        restored.bind(other)


def test_nested_prune_refuses_more_than_max_snapshots():
    store, model = SnapshotStore("nested"), _small_net()
    store.bind(model)
    with pytest.raises(ValueError, match="at most 255"):
        store.prune(model, 255, 0.5)


# ------------------------------------------------------- teachers' BatchNorm statistics
def _bn_net() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 4)
    )
    net.train()
    for _ in range(3):  # give the running statistics values unlike any one batch's
        net(torch.randn(16, 6) * 3 + 1)
    return net


def test_teacher_batch_norm_modes():
    net = _bn_net()
    store = SnapshotStore("full", head_name="4")
    store.record(net, [0, 1, 2, 3])
    teacher = store.teacher(0)
    bn = teacher.module.get_submodule("1")
    bn_stats = [f"1.{n}" for n in ("running_mean", "running_var", "num_batches_tracked")]
    stats = [teacher.module.get_buffer(n).clone() for n in bn_stats]
    x = torch.randn(10, 6)

    # "running": the snapshot's eval-mode output.
    torch.testing.assert_close(teacher.run(x, "running")[0], net.eval()(x), rtol=0, atol=0)
    # "batch": normalised with x's own statistics, dropout still off — what Avalanche's
    # LwF teacher (a train-mode copy) gives, minus the dropout.
    net.train()
    dropout = net[3]
    assert isinstance(dropout, nn.Dropout)
    dropout.p = 0.0
    expected = net(x)
    batch_out = teacher.run(x, "batch")[0]
    torch.testing.assert_close(batch_out, expected)
    assert not torch.allclose(batch_out, teacher.run(x, "running")[0])
    # The stored statistics are neither used nor changed, and the teacher stays frozen.
    for before, name in zip(stats, bn_stats, strict=True):
        assert torch.equal(before, teacher.module.get_buffer(name))
    assert not teacher.training and not bn.training and bn.track_running_stats
    # Asking again for either mode gives that mode's output.
    torch.testing.assert_close(teacher.run(x, "batch")[0], batch_out, rtol=0, atol=0)
    with pytest.raises(ValueError, match="batch_norm"):
        teacher.run(x, "eval")  # type: ignore[arg-type]


# ------------------------------------------------------------- autocast teachers
def _bn_conv_teacher(conv_net):
    torch.manual_seed(0)
    net = conv_net()
    net.train()
    for _ in range(3):  # running statistics unlike any one batch's
        net(torch.randn(16, 1, 8, 8) * 2 + 0.5)
    store = SnapshotStore("full")
    store.record(net, list(range(10)))
    teacher = store.teacher(0)
    teacher.capture(["4", "8:input"])
    return teacher


@pytest.mark.parametrize("batch_norm", ["batch", "running"])
def test_bf16_autocast_teacher_returns_float32_close_to_fp32(conv_net, batch_norm):
    teacher = _bn_conv_teacher(conv_net)
    x = torch.randn(32, 1, 8, 8)
    logits, feats = teacher.run(x, batch_norm)
    logits16, feats16 = teacher.run(x, batch_norm, torch.bfloat16)
    # Outputs come back as float32; bf16 keeps 8 mantissa bits, and every output is
    # within 2 % of the largest fp32 output (0.6 % measured on this net).
    assert logits16.dtype == torch.float32
    assert all(f.dtype == torch.float32 for f in feats16.values())
    for ref, low in [(logits, logits16)] + [(feats[s], feats16[s]) for s in feats]:
        assert (low - ref).abs().max() <= 0.02 * ref.abs().max()
    assert not torch.equal(logits16, logits)  # it did run in bf16
    # Asking again in fp32 gives the fp32 outputs.
    assert torch.equal(teacher.run(x, batch_norm)[0], logits)
    assert all(p.dtype == torch.float32 for p in teacher.parameters())  # weights untouched


def test_teacher_dtype_validation():
    from avalanche_m2kd.snapshots import validate_teacher_dtype

    assert validate_teacher_dtype(None) is None
    assert validate_teacher_dtype(torch.float32) is None
    assert validate_teacher_dtype(torch.bfloat16, "cpu") is torch.bfloat16
    assert validate_teacher_dtype(torch.float16, "cuda") is torch.float16
    with pytest.raises(ValueError, match="`teacher_dtype`.*float16.*slower"):
        validate_teacher_dtype(torch.float16, "cpu")
    for bad in (torch.float64, torch.int8, "bfloat16"):
        with pytest.raises(ValueError, match="`teacher_dtype`"):
            validate_teacher_dtype(bad)  # type: ignore[arg-type]
    store = SnapshotStore("full", head_name="1")
    store.record(nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2)), [0, 1])
    with pytest.raises(ValueError, match="`dtype`"):
        store.teacher(0).run(torch.ones(2, 4), dtype=torch.float16)


# ------------------------------------------------------------- teacher caching
def test_uncached_store_holds_at_most_one_teacher_and_frees_it_at_once():
    import gc
    import weakref

    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    model_bytes = sum(t.numel() * t.element_size() for t in net.state_dict().values())
    cached, uncached = SnapshotStore("full"), SnapshotStore("full", cache_teachers=False)
    for store in (cached, uncached):
        store.capture_features(["0"])
        for k in range(3):
            store.record(net, [k])
    x = torch.randn(5, 4)
    gc.disable()  # freed by reference counting alone: no cycle keeps a teacher alive
    try:
        first = weakref.ref(uncached.teacher(0).module)  # its dense weights
        outputs = [uncached.teacher(k).run(x)[0] for k in range(3)]
        assert first() is None
    finally:
        gc.enable()
    assert uncached.held_teachers() == [2] and uncached.teacher_nbytes() == model_bytes
    assert all(torch.equal(cached.teacher(k).run(x)[0], outputs[k]) for k in range(3))
    assert cached.held_teachers() == [0, 1, 2] and cached.teacher_nbytes() == 3 * model_bytes
    cached.cache_teachers = False  # turning caching off frees what is held
    assert cached.held_teachers() == [] and cached.teacher_nbytes() == 0
    with pytest.raises(ValueError, match="`cache_teachers`"):
        SnapshotStore("full", cache_teachers=0)  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["nested", "full"])
def test_teachers_take_the_live_models_memory_format_and_stay_bit_exact(conv_net, mode):
    net = conv_net().to(memory_format=torch.channels_last)
    net.train()
    net(torch.randn(8, 1, 8, 8))
    store = SnapshotStore(mode)
    if mode == "nested":
        store.bind(net)
        store.prune(net, 0, 0.5)
    store.record(net, list(range(10)))
    teacher = store.teacher(0)
    live = dict(net.named_parameters())
    assert all(p.stride() == live[n].stride() for n, p in teacher.module.named_parameters())
    assert teacher.module.get_parameter("3.weight").is_contiguous(
        memory_format=torch.channels_last
    )
    x = torch.randn(4, 1, 8, 8)
    assert torch.equal(teacher.run(x)[0], net.eval()(x))


def test_channels_last_student_trains_with_bit_exact_nested_teachers(digits_images, conv_net):
    def channels_last_net(head=None):
        return conv_net(head=head).to(memory_format=torch.channels_last)

    strategy, recorder = _train(digits_images, channels_last_net, "nested", n_exp=3)
    store = strategy.snapshots
    for k in range(3):
        seen = sorted(c for exp in store.classes[: k + 1] for c in exp)
        out = store.teacher(k)(recorder.probe)
        assert torch.equal(out[:, seen], recorder.outputs[k][:, seen]), f"teacher {k} differs"


def test_teacher_outputs_follow_an_input_modified_in_place():
    net = nn.Sequential(nn.Linear(4, 3))
    store = SnapshotStore("full")
    store.record(net, classes=[0, 1, 2])
    teacher = store.teacher(0)
    x = torch.ones(2, 4)
    a = teacher(x)
    x.mul_(0)
    assert torch.equal(teacher(x), net(x)) and not torch.equal(teacher(x), a)
    # Within a step the store runs a teacher once per unmodified input, whatever the caller.
    first = store.run_teacher(0, x)[0]
    assert store.run_teacher(0, x)[0] is first
    x.add_(1)
    assert torch.equal(store.run_teacher(0, x)[0], net(x))
    store.end_step()
    assert store.run_teacher(0, x)[0] is not first


def test_teacher_index_out_of_range_says_the_valid_range():
    net = nn.Sequential(nn.Linear(4, 3))
    store = SnapshotStore("full")
    with pytest.raises(IndexError, match=r"holds 0 \(valid indices: none yet"):
        store.teacher(0)
    store.record(net, classes=[0])
    store.record(net, classes=[1])
    with pytest.raises(
        IndexError, match=r"no snapshot -1: the store holds 2 \(valid indices: 0\.\.1"
    ):
        store.teacher(-1)


# ------------------------------------------------------- states of earlier versions
FORMAT2 = Path(__file__).parent / "data" / "snapshot_store_format2.pt"


@pytest.mark.parametrize("mode", ["nested", "pruned", "full"])
def test_a_format_2_state_loads_and_rebuilds_the_same_teachers(mode):
    """``tests/data/snapshot_store_format2.pt`` was written by the store of commit
    28567d1 (format 2, every mode's entries in every state): three snapshots of random
    weights of a small net, with the live model, a probe and each teacher's logits."""
    saved = torch.load(FORMAT2, weights_only=True)[mode]
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
        nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 6),
    )  # fmt: skip
    model.load_state_dict(saved["model"])
    assert saved["store"]["format"] == 2
    store = SnapshotStore(mode)
    store.load_state_dict(saved["store"])
    store.bind(model)
    assert len(store) == 3 and store.classes == [[0, 1], [2, 3], [4, 5]]
    assert store.nbytes() == saved["nbytes"]
    # The saved logits were computed on another machine, whose convolution kernels may
    # round differently in the last bit (seen: 1 ulp on some logits of about 100): the
    # same teachers to float32 rounding there; bit for bit against this machine's below.
    for k in range(3):
        torch.testing.assert_close(store.teacher(k)(saved["probe"]), saved["outputs"][k],
                                   rtol=1e-6, atol=1e-6, msg=f"teacher {k}")
    resaved = store.state_dict()  # written again in this version's format
    assert resaved["format"] == 3 and set(resaved) - set(saved["store"]) == set()
    again = SnapshotStore(mode)
    again.load_state_dict(resaved)
    again.bind(model)
    for k in range(3):
        assert torch.equal(again.teacher(k)(saved["probe"]), store.teacher(k)(saved["probe"])), k
