"""The harness's method registry: building, stored bytes, the total-memory split, seeding.

Everything runs on a synthetic 5-class stream of 1x28x28 images (2 classes, then 1 by 1)
with a width-4 CNN, one epoch: seconds on a CPU.
"""

from __future__ import annotations

import math
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from avalanche.training.templates import SupervisedTemplate

from benchmarks import methods
from benchmarks.methods import (
    METHODS,
    Method,
    Setting,
    avalanche_internals,
    base,
    bic,
    m2kd,
    model_bytes,
    naive,
    seed_everything,
)
from benchmarks.methods import der as der_module

STRUCTURE = ((0, 1), (2,), (3,), (4,))
SETTING = Setting(n_classes=5, experience_classes=STRUCTURE, width=4, batch_size=8, epochs=1)
FAST = {"bic": {"stage_2_epochs": 2}}  # BiC's 200 bias epochs are not what is tested here


def _stream(per_class: int = 12, seed: int = 1):
    """A class-incremental stream with SETTING's structure; class c has mean pixel ~c/5."""
    from avalanche.benchmarks.scenarios.deprecated.generators import nc_benchmark
    from torch.utils.data import TensorDataset

    g = torch.Generator().manual_seed(seed)
    targets = [c for c in range(5) for _ in range(per_class)]
    x = (
        torch.rand(len(targets), 1, 28, 28, generator=g) * 0.5
        + torch.tensor(targets).view(-1, 1, 1, 1) / 5
    )
    data = TensorDataset(x, torch.tensor(targets))
    data.targets = targets
    return nc_benchmark(
        train_dataset=data,
        test_dataset=data,
        n_experiences=4,
        task_labels=False,
        shuffle=False,
        fixed_class_order=list(range(5)),
        per_exp_classes={0: 2, 1: 1, 2: 1, 3: 1},
        class_ids_from_zero_from_first_exp=True,
    )


def _trained(name: str, n_exemplars: int):
    torch.manual_seed(0)
    strategy = METHODS[name].build(n_exemplars, SETTING, FAST.get(name))
    for exp in _stream().train_stream:
        strategy.train(exp, num_workers=0)
    return strategy


def test_registry_holds_every_headline_method_and_builds_each():
    assert list(METHODS) == [
        "naive", "replay", "replay-la", "replay-la-0.75", "lwf", "lwf-la", "icarl", "er-ace",
        "der", "der-eval-mask", "bic", "bic-union", "m2kd", "m2kd-full",
    ]
    for name, method in METHODS.items():
        assert isinstance(method, Method) and method.name == name
        strategy = method.build(
            0 if method.exemplars != "required" else 10, SETTING, FAST.get(name)
        )
        assert isinstance(strategy, SupervisedTemplate)
    with pytest.raises(ValueError, match="already registered"):
        methods.register(naive.NaiveMethod("naive"))
    taus = {name: METHODS[name].build(10, SETTING)._criterion.tau
            for name in ("replay-la", "replay-la-0.75")}
    assert taus == {"replay-la": 1.0, "replay-la-0.75": 0.75}
    with pytest.raises(ValueError, match="no option"):
        METHODS["der"].build(10, SETTING, {"alhpa": 0.2})


@pytest.fixture(scope="module")
def trained():
    """Every method trained once with 10 exemplars (naive without)."""
    return {
        name: _trained(name, 0 if m.exemplars == "never" else 10) for name, m in METHODS.items()
    }


def test_stored_bytes_per_method(trained):
    image = 784
    model = model_bytes(SETTING.model("final"))
    stored = {name: METHODS[name].stored_bytes(s, SETTING) for name, s in trained.items()}
    assert sum(stored["naive"].values()) == 0
    for name in ("replay", "replay-la", "er-ace", "m2kd", "m2kd-full"):
        assert stored[name]["exemplars"] == 10 * image, name
    for name in ("lwf", "lwf-la"):
        assert stored[name] == dict(stored["replay"], models=model)
    assert stored["der"]["exemplars"] == 10 * image and stored["der"]["logits"] == 10 * 5 * 4
    assert stored["icarl"]["exemplars"] == 5 * math.ceil(10 / 5) * image
    # its classifier holds class means
    assert stored["icarl"]["models"] > model_bytes(SETTING.model("fixed"))
    assert stored["bic"]["validation"] == 1 * image and stored["bic"]["models"] == model
    # one bias layer
    assert 0 < stored["bic"]["exemplars"] <= 10 * image and stored["bic"]["other"] == 4 + 4 + 8
    assert stored["m2kd"]["snapshots"] == trained["m2kd"].snapshots.nbytes() > 0
    assert stored["m2kd-full"]["snapshots"] > stored["m2kd"]["snapshots"]


def test_predicted_fixed_bytes_are_what_training_leaves(trained):
    """What the total-memory split charges before training is what the run holds after.

    M2KD's store is predicted by a dry run on a stand-in of the stream (other data,
    untrained model): the real run on this stream must hold exactly those bytes.
    """
    for name, strategy in trained.items():
        stored = METHODS[name].stored_bytes(strategy, SETTING)
        besides = sum(
            v for k, v in stored.items() if k not in ("exemplars", "logits", "validation")
        )
        assert besides == METHODS[name].fixed_bytes(SETTING, FAST.get(name)), name
        if METHODS[name].exemplars != "never":
            memory = stored["exemplars"] + stored["logits"] + stored["validation"]
            assert memory <= METHODS[name].exemplar_bytes(10, SETTING, FAST.get(name)), name


@pytest.mark.parametrize("name", [n for n, m in METHODS.items() if m.exemplars != "never"])
def test_total_memory_split_never_exceeds_the_budget(name):
    method = METHODS[name]
    fixed = method.fixed_bytes(SETTING, FAST.get(name))
    for total in (fixed - 1, fixed + 783, fixed + 784 * 10 + 37, fixed + 10**6):
        n = method.exemplars_for(total, SETTING, FAST.get(name))
        if n is None:
            assert total < fixed + method.exemplar_bytes(
                method.min_exemplars(FAST.get(name)), SETTING, FAST.get(name)
            )
            continue
        assert fixed + method.exemplar_bytes(n, SETTING, FAST.get(name)) <= total
        # the most that fits
        assert fixed + method.exemplar_bytes(n + 1, SETTING, FAST.get(name)) > total


def test_total_memory_prices():
    total = 100_000
    assert METHODS["replay"].exemplars_for(total, SETTING) == total // 784
    assert METHODS["der"].exemplars_for(total, SETTING) == total // (784 + 5 * 4)
    lwf = METHODS["lwf"].exemplars_for(total, SETTING)
    assert lwf == (total - model_bytes(SETTING.model("final"))) // 784
    bic = METHODS["bic"].exemplars_for(total, SETTING, FAST["bic"])
    assert bic + int(0.1 * bic) <= (total - METHODS["bic"].fixed_bytes(SETTING)) // 784
    m2kd = METHODS["m2kd"].exemplars_for(total, SETTING)
    # its store is smaller
    assert m2kd == (total - METHODS["m2kd"].fixed_bytes(SETTING)) // 784 and m2kd > lwf
    assert METHODS["naive"].exemplars_for(total, SETTING) is None
    assert (
        METHODS["m2kd-full"].exemplars_for(METHODS["m2kd-full"].fixed_bytes(SETTING) - 1, SETTING)
        is None
    )


def test_icarl_price_covers_its_rounded_up_class_shares():
    # 2, 3, 4, 5 classes seen: ceil(11 / k) * k is 12, 12, 12, 15 exemplars
    assert METHODS["icarl"].exemplar_bytes(11, SETTING) == 15 * 784
    # holds at most 8, 9, 8, 10; 9 would hold 12
    fixed = METHODS["icarl"].fixed_bytes(SETTING)
    assert METHODS["icarl"].exemplars_for(fixed + 11 * 784, SETTING) == 8


def test_seed_everything_seeds_random_numpy_and_torch():
    seed_everything(5)
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    seed_everything(5)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a
    seed_everything(6)
    assert random.random() != a[0] and np.random.rand() != a[1]


def test_store_dry_run_leaves_the_global_generators_alone():
    seed_everything(1)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    seed_everything(1)
    m2kd.STORE_BYTES_CACHE.clear()
    m2kd.store_bytes(METHODS["m2kd"], SETTING)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_bic_scheduler_workaround_is_scoped(trained):
    bic_module = avalanche_internals.bic_module
    assert bic_module.MultiStepLR is torch.optim.lr_scheduler.MultiStepLR  # restored after the runs
    plugin = base.find_plugin(trained["bic"], bic_module.BiCPlugin)
    # bias correction ran
    assert plugin.bias_layer is not None and plugin.bias_layer.clss.tolist() == [4]
    with avalanche_internals.bic_scheduler_without_verbose():
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        # avalanche's call goes through
        bic_module.MultiStepLR(opt, milestones=[1], gamma=0.1, verbose=False)
    assert bic_module.MultiStepLR is torch.optim.lr_scheduler.MultiStepLR


def test_der_masks_unseen_classes_like_an_incremental_head_and_keeps_logits_of_the_fixed_head(
    trained,
):
    from types import SimpleNamespace

    from avalanche_m2kd.plugins import SeenClassesMaskingPlugin

    der = trained["der"]
    assert der.model.classifier.out_features == 5  # a fixed head over all classes
    assert all(t.shape == (5,) for t in der.storage_policy.buffer.logits)
    assert [type(p) for p in der.plugins if isinstance(p, SeenClassesMaskingPlugin)] == [
        SeenClassesMaskingPlugin
    ]
    eval_only = METHODS["der"].build(10, SETTING, {"mask_unseen": "eval"})
    assert any(isinstance(p, der_module.PredictSeenClasses) for p in eval_only.plugins)
    state = SimpleNamespace(experience=_stream().train_stream[0], mb_output=torch.zeros(3, 5))
    mask = der_module.PredictSeenClasses()
    mask.before_training_exp(state)
    mask.after_forward(state)
    assert torch.equal(state.mb_output, torch.zeros(3, 5))  # training sees every unit
    mask.after_eval_forward(state)
    assert (state.mb_output[:, :2] == 0).all() and (state.mb_output[:, 2:] == -1000).all()


def test_bic_distils_over_the_classes_as_its_paper_does():
    new, old = torch.randn(4, 3), torch.randn(4, 3)
    paper = bic.RepairedBiCPlugin(mem_size=10, T=2)
    expected = -(torch.softmax(old / 2, dim=1) * torch.log_softmax(new / 2, dim=1)).sum(1).mean()
    assert torch.allclose(paper.cross_entropy(new, old), expected)
    # softmax over the mini-batch
    shipped = bic.RepairedBiCPlugin(mem_size=10, T=2, distillation="avalanche")
    expected = -(torch.softmax(old / 2, dim=0) * torch.log_softmax(new / 2, dim=1)).sum(1).mean()
    assert torch.allclose(shipped.cross_entropy(new, old), expected)
    with pytest.raises(ValueError, match="distillation"):
        bic.RepairedBiCPlugin(mem_size=10, distillation="tf")


def test_each_method_lives_in_its_own_registered_module():
    by_module: dict[str, set[str]] = {}
    for method in METHODS.values():
        by_module.setdefault(type(method).__module__, set()).add(method.name)
    assert sorted(by_module) == sorted(f"benchmarks.methods.{m}" for m in methods.MODULES)
    assert by_module["benchmarks.methods.bic"] == {"bic", "bic-union"}


def test_avalanche_private_names_are_used_in_the_internals_module_only():
    import re
    from pathlib import Path

    private = re.compile(r"_ICaRLPlugin|plugins import bic\b|\bbic_module\.MultiStepLR|\.logits\b")
    folder = Path(methods.__file__).parent
    users = sorted(p.name for p in folder.glob("*.py") if private.search(p.read_text()))
    assert users == ["avalanche_internals.py"]
    buffer, logits = avalanche_internals.der_memory(SimpleNamespace(
        storage_policy=SimpleNamespace(buffer=SimpleNamespace(logits=[torch.zeros(5)]))))
    assert logits == buffer.logits
