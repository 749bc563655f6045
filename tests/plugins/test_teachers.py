"""The teacher runner every distillation plugin is built on: options, caching, one run per step."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from avalanche.training.plugins import EvaluationPlugin, SupervisedPlugin

import avalanche_m2kd.plugins
from avalanche_m2kd import (
    M2KDStrategy,
    MultiLevelDistillationPlugin,
    MultiModelDistillationPlugin,
    SnapshotStore,
    TeacherOptions,
    TeacherPlugin,
)


def _plugins_on_store(conv_net, **options):
    """A conv net, a full store of 3 distinct snapshots and both plugins on it."""
    torch.manual_seed(0)
    model = conv_net()
    store = SnapshotStore("full")
    store.bind(model)
    for k in range(3):
        store.record(model, [2 * k, 2 * k + 1])
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1 * torch.randn_like(p))
    mm = MultiModelDistillationPlugin(store=store, **options)
    ml = MultiLevelDistillationPlugin(feature_layers=["4"], store=store, teachers="all", **options)
    strategy = SimpleNamespace(model=model, experience=None, device="cpu")
    for plugin in (mm, ml):
        plugin.before_training_exp(strategy)
    return model, store, (mm, ml), strategy


def _distillation_loss(model, plugins, strategy, x):
    strategy.mb_x = x
    strategy.mb_output = model(x)
    strategy.loss = torch.zeros(())
    for plugin in plugins:
        plugin.before_backward(strategy)
    return strategy.loss


def test_bf16_teachers_give_a_finite_float32_loss_close_to_fp32(conv_net):
    x = torch.randn(16, 1, 8, 8)
    model, _, plugins, strategy = _plugins_on_store(conv_net)
    reference = _distillation_loss(model, plugins, strategy, x)
    for plugin in plugins:
        plugin.teacher_dtype = torch.bfloat16
    loss = _distillation_loss(model, plugins, strategy, x)
    assert loss.dtype == torch.float32 and torch.isfinite(loss) and loss.requires_grad
    # 0.2 % apart on this net (bf16 targets, fp32 loss); we allow 2 %.
    assert loss.item() == pytest.approx(reference.item(), rel=0.02)
    assert loss.item() != reference.item()
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_plugins_reject_a_bad_teacher_dtype(conv_net):
    for cls in (MultiModelDistillationPlugin, MultiLevelDistillationPlugin):
        with pytest.raises(ValueError, match="`teacher_dtype`"):
            cls(teacher_dtype=torch.int8)
    plugin = MultiModelDistillationPlugin(teacher_dtype=torch.float16)  # fine on CUDA ...
    with pytest.raises(ValueError, match="`teacher_dtype`.*CPU"):  # ... not on CPU, before any step
        plugin.before_training_exp(SimpleNamespace(model=conv_net(), experience=None, device="cpu"))
    assert MultiModelDistillationPlugin(teacher_dtype=torch.float32).teacher_dtype is None


def test_cache_teachers_option_sets_the_store():
    store = SnapshotStore("full")
    MultiModelDistillationPlugin(store=store, cache_teachers=False)
    assert store.cache_teachers is False
    MultiLevelDistillationPlugin(store=store)  # None leaves the store's setting
    assert store.cache_teachers is False
    assert MultiModelDistillationPlugin(cache_teachers=False).store.cache_teachers is False


class _Spy(SupervisedPlugin):
    """Records the loss of every iteration and the teachers the store holds after it."""

    def __init__(self):
        super().__init__()
        self.losses: list[torch.Tensor] = []
        self.held: list[list[int]] = []

    def before_backward(self, strategy, **kwargs):  # after the distillation plugins
        self.losses.append(strategy.loss.detach().clone())

    def after_training_iteration(self, strategy, **kwargs):  # after theirs too
        self.held.append(strategy.snapshots.held_teachers())


def _train_m2kd(digits_images, conv_net, cache: bool) -> _Spy:
    torch.manual_seed(0)
    model, spy = conv_net(), _Spy()
    strategy = M2KDStrategy(model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
                            train_mb_size=32, train_epochs=1, post_prune_epochs=0, mem_size=20,
                            evaluator=EvaluationPlugin(loggers=[]), plugins=[spy])
    # nested store: teachers rebuilt from the live weights
    strategy.snapshots.cache_teachers = cache
    for exp in digits_images.train_stream[:3]:
        strategy.train(exp)
    return spy


def test_uncached_teachers_are_freed_every_step_and_give_bit_equal_losses(digits_images, conv_net):
    cached = _train_m2kd(digits_images, conv_net, cache=True)
    uncached = _train_m2kd(digits_images, conv_net, cache=False)
    assert len(uncached.losses) == len(cached.losses) > 0
    assert all(torch.equal(a, b) for a, b in zip(cached.losses, uncached.losses, strict=True))
    assert all(held == [] for held in uncached.held)
    assert [0] in cached.held and [0, 1] in cached.held  # the default keeps them all


def test_teachers_run_before_the_student_forward_with_the_same_losses(conv_net):
    """``before_forward`` runs the teachers; ``before_backward`` gives the loss it gave before."""
    model, store, plugins, strategy = _plugins_on_store(conv_net)
    store.output_cache.enabled = False  # the per-step reuse is tested, not the per-sample one
    x = torch.randn(16, 1, 8, 8)
    reference = _distillation_loss(model, plugins, strategy, x)  # no before_forward: computed late

    calls = []
    forward = store.teacher(0).module.forward

    def traced(inp):
        calls.append("teacher")
        return forward(inp)

    store.teacher(0).module.forward = traced
    strategy.mb_x = x.clone()
    for plugin in plugins:
        plugin.before_forward(strategy)
    assert calls == ["teacher"]  # the shared teacher ran once, before the student
    strategy.mb_output = model(strategy.mb_x)
    strategy.loss = torch.zeros(())
    for plugin in plugins:
        plugin.before_backward(strategy)
    assert calls == ["teacher"]  # nothing ran again
    assert torch.equal(strategy.loss, reference)


def test_teachers_follow_inputs_replaced_after_before_forward(conv_net):
    model, store, plugins, strategy = _plugins_on_store(conv_net)
    x, augmented = torch.randn(16, 1, 8, 8), torch.randn(16, 1, 8, 8)
    strategy.mb_x = x
    for plugin in plugins:
        plugin.before_forward(strategy)
    strategy.mb_x = augmented  # e.g. a later plugin's augmentation
    strategy.mb_output = model(augmented)
    strategy.loss = torch.zeros(())
    for plugin in plugins:
        plugin.before_backward(strategy)
    assert torch.equal(strategy.loss, _distillation_loss(model, plugins, strategy, augmented))


@pytest.mark.parametrize("order", ["logits first", "features first"])
def test_a_teacher_both_plugins_share_runs_once_per_step_in_either_order(conv_net, order):
    """One TeacherOptions for both plugins: each teacher runs once per mini-batch, whichever
    plugin asks first, and the loss is the same in both orders."""
    model, store, (mm, ml), strategy = _plugins_on_store(conv_net)
    shared = TeacherOptions(teacher_bn="batch", cache_teachers=None)
    mm.teacher_options = ml.teacher_options = shared
    plugins = (mm, ml) if order == "logits first" else (ml, mm)
    x = torch.randn(16, 1, 8, 8)
    reference = _distillation_loss(model, (mm, ml), strategy, x)
    store.end_step()
    calls = []
    for k in range(len(store)):
        forward = store.teacher(k).module.forward

        def traced(inp, k=k, f=forward):
            calls.append(k)
            return f(inp)

        store.teacher(k).module.forward = traced
    strategy.mb_x = x
    for plugin in plugins:
        plugin.before_forward(strategy)
    strategy.mb_output = model(x)
    strategy.loss = torch.zeros(())
    for plugin in plugins:
        plugin.before_backward(strategy)
    assert sorted(calls) == [0, 1, 2]  # both plugins distil from all 3: each ran once
    assert torch.allclose(strategy.loss, reference, rtol=1e-6, atol=0)


# Avalanche types no `__init_subclass__` keyword: mypy does not know `supports_distributed`.
class _LogitL2(TeacherPlugin, supports_distributed=True):  # type: ignore[call-arg]
    """A distillation loss of one's own on the public base: L2 to the last snapshot's logits."""

    def teacher_outputs(self, strategy):
        ids = self.teacher_ids("last")
        return [logits for logits, _ in self.run_teachers(ids, strategy.mb_x)] if ids else None

    def before_backward(self, strategy, **kwargs):
        targets = self.pending_outputs(strategy)
        if targets is not None:
            strategy.loss = strategy.loss + (strategy.mb_output - targets[0]).pow(2).mean()


def test_a_plugin_of_ones_own_on_teacher_plugin_inside_naive(digits, mlp):
    from avalanche.training import Naive

    model = mlp()
    plugin = _LogitL2(
        teacher_options=TeacherOptions(teacher_dtype=torch.bfloat16, cache_teachers=False)
    )
    losses = []

    class Spy(SupervisedPlugin):
        def before_backward(self, strategy, **kwargs):
            losses.append((strategy.experience.current_experience, float(strategy.loss)))

    strategy = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05),
                     criterion=torch.nn.CrossEntropyLoss(), train_mb_size=64,
                     evaluator=EvaluationPlugin(loggers=[]), plugins=[plugin, Spy()])
    for exp in digits.train_stream[:2]:
        strategy.train(exp)
    assert len(plugin.store) == 2 and plugin.store.mode == "full"  # its own store, recorded
    assert plugin.store.cache_teachers is False and plugin.store.held_teachers() == []
    assert plugin.teacher_dtype is torch.bfloat16
    assert {e for e, _ in losses} == {0, 1}
    assert isinstance(avalanche_m2kd.plugins.TeacherPlugin, type)
    assert avalanche_m2kd.TeacherPlugin is TeacherPlugin
