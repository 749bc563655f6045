"""SeenClassesMaskingPlugin alone, inside Avalanche's Naive."""

from __future__ import annotations

import torch
from avalanche.training import Naive
from avalanche.training.plugins import EvaluationPlugin, SupervisedPlugin

from avalanche_m2kd.plugins import SeenClassesMaskingPlugin


class _Outputs(SupervisedPlugin):
    """After the masking plugin: its outputs, and the model's own on the same inputs."""

    def __init__(self):
        super().__init__()
        self.train, self.eval = [], []

    def _keep(self, strategy, into):
        with torch.no_grad():
            into.append((strategy.mb_output.detach().clone(), strategy.model(strategy.mb_x)))

    def after_forward(self, strategy, **kwargs):
        self._keep(strategy, self.train)

    def after_eval_forward(self, strategy, **kwargs):
        self._keep(strategy, self.eval)


def _strategy(mlp, plugins):
    model = mlp()  # no BatchNorm, no dropout: a second forward gives the same outputs
    return Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05),
                 train_mb_size=32, train_epochs=1, eval_mb_size=64, plugins=plugins,
                 evaluator=EvaluationPlugin(loggers=[]))  # fmt: skip


def _classes(exp) -> list[int]:
    return sorted(int(c) for c in exp.classes_in_this_experience)


def test_unseen_units_get_the_mask_value_in_training_and_evaluation(mlp, digits):
    masking, outputs = SeenClassesMaskingPlugin(), _Outputs()
    strategy = _strategy(mlp, [masking, outputs])
    strategy.train(digits.train_stream[0])
    seen = _classes(digits.train_stream[0])
    unseen = [c for c in range(10) if c not in seen]
    assert outputs.train
    for masked, raw in outputs.train:
        assert bool((masked[:, unseen] == -1000.0).all())
        assert torch.equal(masked[:, seen], raw[:, seen])  # seen units untouched
    strategy.eval(digits.test_stream[:2])
    for masked, raw in outputs.eval:
        assert bool((masked[:, unseen] == -1000.0).all())
        assert set(masked.argmax(1).tolist()) <= set(seen)  # never an unseen prediction
        assert torch.equal(masked[:, seen], raw[:, seen])


def test_seen_classes_grow_with_the_stream_and_survive_a_state_round_trip(mlp, digits):
    masking, outputs = SeenClassesMaskingPlugin(mask_value=-50.0), _Outputs()
    strategy = _strategy(mlp, [masking, outputs])
    strategy.train(digits.train_stream[0])
    first = _classes(digits.train_stream[0])
    assert masking.state_dict() == {"seen": first}
    restored = SeenClassesMaskingPlugin(mask_value=-50.0)
    restored.load_state_dict(masking.state_dict())
    outputs.train.clear()
    strategy.plugins[strategy.plugins.index(masking)] = restored  # resume with the restored plugin
    strategy.train(digits.train_stream[1])
    both = sorted(first + _classes(digits.train_stream[1]))
    assert restored.state_dict() == {"seen": both}
    unseen = [c for c in range(10) if c not in both]
    for masked, raw in outputs.train:
        assert bool((masked[:, unseen] == -50.0).all())
        assert torch.equal(masked[:, both], raw[:, both])
