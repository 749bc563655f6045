"""The teacher options every distillation plugin shares: autocast dtype and caching."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from avalanche.training.plugins import EvaluationPlugin, SupervisedPlugin

from avalanche_m2kd import M2KDStrategy, MultiLevelDistillationPlugin, MultiModelDistillationPlugin, SnapshotStore


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
    strategy.snapshots.cache_teachers = cache  # nested store: teachers rebuilt from the live weights
    for exp in digits_images.train_stream[:3]:
        strategy.train(exp)
    return spy


def test_uncached_teachers_are_freed_every_step_and_give_bit_equal_losses(digits_images, conv_net):
    cached = _train_m2kd(digits_images, conv_net, cache=True)
    uncached = _train_m2kd(digits_images, conv_net, cache=False)
    assert len(uncached.losses) == len(cached.losses) > 0
    assert all(torch.equal(a, b) for a, b in zip(cached.losses, uncached.losses))
    assert all(held == [] for held in uncached.held)
    assert [0] in cached.held and [0, 1] in cached.held  # the default keeps them all


def test_teachers_run_before_the_student_forward_with_the_same_losses(conv_net):
    """``before_forward`` runs the teachers; ``before_backward`` gives the loss it gave before."""
    model, store, plugins, strategy = _plugins_on_store(conv_net)
    x = torch.randn(16, 1, 8, 8)
    reference = _distillation_loss(model, plugins, strategy, x)  # no before_forward: computed late

    calls = []
    forward = store.teacher(0).module.forward
    store.teacher(0).module.forward = lambda inp: (calls.append("teacher"), forward(inp))[1]
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
