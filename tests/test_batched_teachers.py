"""Batched teachers (``teacher_batching="vmap"`` / ``"streams"``) give the loop's logits,
features and losses to float rounding, on the CPU."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from avalanche.models import IncrementalClassifier
from avalanche.training.plugins import EvaluationPlugin, SupervisedPlugin

from avalanche_m2kd import (
    M2KDStrategy,
    MultiLevelDistillationPlugin,
    MultiModelDistillationPlugin,
    SnapshotStore,
)
from avalanche_m2kd.batched_teachers import StackedTeachers, TeacherStacks, check_teacher_batching

SPECS = ["1", "4", "8:input"]  # a BatchNorm output, a conv stage, the head's input


def _store(conv_net, mode="full", n=3, head=None):
    """A store of ``n`` distinct snapshots of a conv net with BatchNorm, capturing ``SPECS``."""
    torch.manual_seed(0)
    model = conv_net(head=head)
    store = SnapshotStore(mode)
    store.bind(model)
    for k in range(n):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1 * torch.randn_like(p))
            for m in model.modules():  # non-trivial running statistics
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.running_mean.normal_(0, 0.2)
                    m.running_var.uniform_(0.5, 2.0)
        if mode == "nested":
            store.prune(model, k, keep=1 / (n + 1 - k))
        store.record(model, [2 * k, 2 * k + 1])
    store.capture_features(SPECS)
    return model, store


def _max_diff(a, b) -> float:
    """Largest absolute difference between two lists of (logits, features)."""
    diffs = []
    for (la, fa), (lb, fb) in zip(a, b, strict=True):
        assert la.dtype == lb.dtype == torch.float32 and la.shape == lb.shape
        assert fa.keys() == fb.keys() == set(SPECS)
        diffs.append((la - lb).abs().max().item())
        diffs += [(fa[s] - fb[s]).abs().max().item() for s in SPECS]
    return max(diffs)


@pytest.mark.parametrize("mode", ["full", "nested"])
@pytest.mark.parametrize("batch_norm", ["batch", "running"])
def test_vmap_gives_the_loops_logits_and_features(conv_net, mode, batch_norm):
    _, store = _store(conv_net, mode)
    x = torch.randn(16, 1, 8, 8)
    running = [m.running_mean.clone() for k in range(3) for m in store.teacher(k).modules()
               if isinstance(m, torch.nn.BatchNorm2d)]
    loop = store.run_teachers([0, 1, 2], x, batch_norm)
    store.end_step()
    vmapped = store.run_teachers([0, 1, 2], x, batch_norm, batching="vmap")
    assert _max_diff(loop, vmapped) < 1e-5  # measured 2.4e-7
    after = [m.running_mean for k in range(3) for m in store.teacher(k).modules()
             if isinstance(m, torch.nn.BatchNorm2d)]
    # stored statistics untouched
    assert all(torch.equal(a, b) for a, b in zip(running, after, strict=True))
    if batch_norm == "batch":  # the batch's statistics really are used
        assert (loop[0][0] - store.teacher(0).run(x, "running")[0]).abs().max() > 1e-3


def test_vmap_with_bf16_teachers_is_as_close_to_fp32_as_the_loop_with_bf16_autocast(conv_net):
    """vmap runs every layer in bf16 (autocast keeps BatchNorm in fp32): on this net
    (features up to ~6) its largest deviation from fp32 was 0.064-0.070 against the
    loop's 0.034-0.042 (3 inputs)."""
    _, store = _store(conv_net)
    x = torch.randn(16, 1, 8, 8)
    fp32 = store.run_teachers([0, 1, 2], x, "batch")
    store.end_step()
    loop = store.run_teachers([0, 1, 2], x, "batch", torch.bfloat16)
    store.end_step()  # else the loop's outputs are reused for this step
    vmapped = store.run_teachers([0, 1, 2], x, "batch", torch.bfloat16, "vmap")
    assert 0 < _max_diff(fp32, vmapped) < 3 * _max_diff(fp32, loop)
    stacks = store._stacks._stacks
    assert {key[2] for key in stacks} == {torch.bfloat16}
    assert all(p.dtype == torch.bfloat16 for s in stacks.values() for p in s.params.values())


def test_streams_on_cpu_is_the_loop(conv_net):
    _, store = _store(conv_net)
    x = torch.randn(8, 1, 8, 8)
    loop = store.run_teachers([0, 1, 2], x, "batch")
    store.end_step()
    streams = store.run_teachers([0, 1, 2], x, "batch", batching="streams")
    assert _max_diff(loop, streams) == 0.0


def test_run_teachers_keeps_outputs_for_the_step_and_runs_each_teacher_once(conv_net):
    _, store = _store(conv_net)
    x = torch.randn(8, 1, 8, 8)
    first = store.run_teachers([0, 1, 2], x, "batch", batching="vmap")
    assert store.run_teachers([2], x, "batch", batching="vmap")[0] is first[2]  # memo
    assert store.run_teacher(1, x, "batch") is first[1]  # the loop's memo too
    store.end_step()
    assert store.run_teachers([1], x, "batch", batching="vmap")[0] is not first[1]


def test_teachers_of_different_shapes_are_grouped_and_singletons_run_as_in_the_loop(conv_net):
    """An IncrementalClassifier grows between snapshots: 2 + 1 teachers of two shapes."""
    torch.manual_seed(0)
    model = conv_net(head=IncrementalClassifier(16, initial_out_features=4))
    store = SnapshotStore("full")
    store.bind(model)
    for classes in [[0, 1], [2, 3], [4, 5]]:
        model[8].adaptation(SimpleNamespace(classes_in_this_experience=classes))  # grows at k = 2
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1 * torch.randn_like(p))
        store.record(model, classes)
    shapes = [store.teacher(k).run(torch.zeros(2, 1, 8, 8))[0].shape[1] for k in range(3)]
    assert shapes == [4, 4, 6]
    x = torch.randn(8, 1, 8, 8)
    loop = [store.teacher(k).run(x, "batch") for k in range(3)]
    vmapped = store.run_teachers([0, 1, 2], x, "batch", batching="vmap")
    assert torch.equal(loop[2][0], vmapped[2][0])  # alone in its group: the loop itself
    assert (loop[0][0] - vmapped[0][0]).abs().max() < 1e-5
    (key,) = store._stacks._stacks  # one stack, of teachers 0 and 1
    assert key[0] == (0, 1)


def test_a_sampled_subset_is_gathered_from_the_groups_stack(conv_net):
    _, store = _store(conv_net, n=4)
    x = torch.randn(8, 1, 8, 8)
    loop = [store.teacher(k).run(x, "batch") for k in (1, 3)]
    subset = store.run_teachers([1, 3], x, "batch", batching="vmap")
    assert max((a[0] - b[0]).abs().max().item() for a, b in zip(loop, subset, strict=True)) < 1e-5
    (stack,) = store._stacks._stacks.values()
    assert stack.size == 4  # the whole group is stacked once, the subset gathered per call
    assert (
        store.teacher_nbytes() == sum(store.teacher(k).nbytes() for k in range(4)) + stack.nbytes()
    )
    store.release_teachers()
    assert store._stacks is None and store.teacher_nbytes() == 0


def test_uncached_store_runs_the_loop(conv_net):
    _, store = _store(conv_net)
    store.cache_teachers = False
    x = torch.randn(8, 1, 8, 8)
    outputs = store.run_teachers([0, 1, 2], x, "batch", batching="vmap")
    assert store._stacks is None and store.held_teachers() == [2]
    assert torch.equal(outputs[0][0], store.teacher(0).run(x, "batch")[0])


def test_a_stack_is_rebuilt_for_new_teacher_objects(conv_net):
    _, store = _store(conv_net)
    teachers = [store.teacher(k) for k in range(3)]
    stacks, x = TeacherStacks(), torch.randn(4, 1, 8, 8)
    stacks.run(teachers, x, "running", None, "vmap")
    (first,) = stacks._stacks.values()
    assert first.stacks(teachers)
    store.release_teachers()
    fresh = [store.teacher(k) for k in range(3)]
    stacks.run(fresh, x, "running", None, "vmap")
    assert not first.stacks(fresh) and next(iter(stacks._stacks.values())).stacks(fresh)


def test_stacking_refuses_teachers_of_different_shapes(conv_net):
    a = SnapshotStore("full")
    net = conv_net()
    a.bind(net)
    a.record(net, [0, 1])
    b = SnapshotStore("full")
    other = conv_net(n_classes=4)
    b.bind(other)
    b.record(other, [0, 1])
    with pytest.raises(ValueError, match="one architecture"):
        StackedTeachers([a.teacher(0), b.teacher(0)])
    with pytest.raises(ValueError, match="at least one"):
        StackedTeachers([])


def _plugins(conv_net, batching, **options):
    model, store = _store(conv_net, "nested")
    mm = MultiModelDistillationPlugin(store=store, teacher_batching=batching, **options)
    ml = MultiLevelDistillationPlugin(feature_layers=["1", "4"], store=store, teachers="all",
                                      teacher_batching=batching, **options)
    strategy = SimpleNamespace(model=model, experience=None, device="cpu")
    for plugin in (mm, ml):
        plugin.before_training_exp(strategy)
    return model, (mm, ml), strategy


def _losses(model, plugins, strategy, x):
    """The logit and the feature loss of one step, in Avalanche's hook order."""
    strategy.mb_x = x
    for plugin in plugins:
        plugin.before_forward(strategy)
    strategy.mb_output = model(x)
    losses = []
    for plugin in plugins:
        strategy.loss = torch.zeros(())
        plugin.before_backward(strategy)
        losses.append(strategy.loss)
    for plugin in plugins:
        plugin.after_training_iteration(strategy)
    return losses


@pytest.mark.parametrize("batching", ["vmap", "streams"])
def test_plugin_losses_equal_the_loops(conv_net, batching):
    x = torch.randn(16, 1, 8, 8)
    reference = _losses(*_plugins(conv_net, "loop"), x)
    losses = _losses(*_plugins(conv_net, batching), x)
    assert all(r.item() > 0 for r in reference)
    assert max(abs(a.item() - b.item()) for a, b in zip(reference, losses, strict=True)) < 1e-6


def test_plugin_losses_with_bf16_vmapped_teachers_are_close_to_the_loops(conv_net):
    x = torch.randn(16, 1, 8, 8)
    reference = _losses(*_plugins(conv_net, "loop", teacher_dtype=torch.bfloat16), x)
    losses = _losses(*_plugins(conv_net, "vmap", teacher_dtype=torch.bfloat16), x)
    assert [b.item() for b in losses] == pytest.approx([a.item() for a in reference], rel=0.05)


class _Losses(SupervisedPlugin):
    def __init__(self):
        super().__init__()
        self.losses: list[torch.Tensor] = []

    def before_backward(self, strategy, **kwargs):  # after the distillation plugins
        self.losses.append(strategy.loss.detach().clone())


def _train(digits_images, conv_net, batching):
    torch.manual_seed(0)
    model, spy = conv_net(), _Losses()
    strategy = M2KDStrategy(
        model,
        torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
        train_mb_size=32,
        train_epochs=2,
        post_prune_epochs=0,
        mem_size=20,
        feature_layers=["1", "4"],
        feature_teachers="all",
        teacher_batching=batching,
        evaluator=EvaluationPlugin(loggers=[]),
        plugins=[spy],
    )
    for exp in digits_images.train_stream[:4]:
        strategy.train(exp)
    return strategy, spy.losses


def test_m2kd_run_with_vmapped_teachers_has_the_loops_losses(digits_images, conv_net):
    """4 experiences, nested store, logits from all 3 teachers and features from all:
    every step's loss within float rounding of the loop's (measured: 2.4e-7 at most)."""
    loop, loop_losses = _train(digits_images, conv_net, "loop")
    vmapped, vmap_losses = _train(digits_images, conv_net, "vmap")
    assert len(vmap_losses) == len(loop_losses) > 40
    assert max((a - b).abs().item() for a, b in zip(loop_losses, vmap_losses, strict=True)) < 1e-5
    assert vmapped.m2kd_config["teacher_batching"] == "vmap"
    assert loop.m2kd_config["teacher_batching"] == "loop"
    assert vmapped.snapshots._stacks is None  # dropped with the teachers at the last record


def test_teacher_batching_is_checked_at_construction(mlp):
    assert check_teacher_batching("streams") == "streams"
    model = mlp()
    with pytest.raises(ValueError, match="`teacher_batching` to be one of"):
        M2KDStrategy(model, torch.optim.SGD(model.parameters(), lr=0.1), teacher_batching="threads")
    with pytest.raises(
        ValueError, match="`teacher_batching` to be 'loop' with cache_teachers=False"
    ):
        M2KDStrategy(model, torch.optim.SGD(model.parameters(), lr=0.1), teacher_batching="vmap",
                     cache_teachers=False)
    with pytest.raises(ValueError, match="`teacher_batching`"):
        MultiModelDistillationPlugin(teacher_batching="vmap", cache_teachers=False)
