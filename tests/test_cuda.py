"""The CUDA paths, on a GPU: exact teachers, batched teachers, low-precision teachers and
student, checkpoints across devices, no host synchronisation in a training step, torchrun
with NCCL.

Every test here is marked ``cuda`` and skipped, with the reason, where
``torch.cuda.is_available()`` is false, so ``python -m pytest`` stays green on a CPU.
Run them alone with ``python -m pytest -m cuda tests/test_cuda.py``;
``python -m benchmarks.gpu_check`` runs them first. None of them has run yet: no GPU
was lent to this project when they were written.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from avalanche.evaluation.metrics import accuracy_metrics
from avalanche.training.plugins import EvaluationPlugin, SupervisedPlugin

from avalanche_m2kd import LogitAdjustedCrossEntropy, M2KDStrategy
from avalanche_m2kd.checkpoint import load_checkpoint, save_checkpoint

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(
        not torch.cuda.is_available(), reason="needs a CUDA GPU: torch.cuda.is_available() is false"
    ),
]

CUDA = torch.device("cuda")
# deterministic cuBLAS, read when it starts
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
ROOT = Path(__file__).resolve().parents[1]
ACC = "Top1_Acc_Stream/eval_phase/test_stream/Task000"


@contextlib.contextmanager
def _no_tf32():
    """Full fp32 convolutions and matmuls (TF32 rounds to 10 bits: loop and batched
    teachers would then differ by ~1e-3, which says nothing about batching)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@contextlib.contextmanager
def _deterministic():
    """Deterministic CUDA kernels (cuDNN's and PyTorch's), for bit-identical reruns."""
    saved = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic
    torch.use_deterministic_algorithms(True, warn_only=True)  # AdaptiveAvgPool2d's backward has no
    # deterministic CUDA kernel; with a 1x1 output each input gets a single atomic add.
    torch.backends.cudnn.deterministic = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0])
        torch.backends.cudnn.deterministic = saved[1]


def _evaluator(*metrics):
    return EvaluationPlugin(*metrics, loggers=[])


def _strategy(conv_net, device=CUDA, plugins=(), evaluator=None, **options):
    torch.manual_seed(0)
    model = conv_net()
    options = {
        "mem_size": 20,
        "train_epochs": 2,
        "post_prune_epochs": 1,
        "feature_layers": ["1", "4"],
        **options,
    }
    return M2KDStrategy(
        model,
        torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
        train_mb_size=32,
        eval_mb_size=256,
        device=device,
        evaluator=evaluator or _evaluator(),
        plugins=list(plugins),
        **options,
    )


class _Recorder(SupervisedPlugin):
    """The model's eval-mode outputs on ``probe`` when each snapshot is recorded."""

    def __init__(self, probe: torch.Tensor) -> None:
        super().__init__()
        self.probe, self.outputs = probe, []

    @torch.no_grad()
    def after_training_exp(self, strategy, **kwargs):
        was = strategy.model.training
        strategy.model.eval()
        self.outputs.append(strategy.model(self.probe.to(strategy.device)).clone())
        strategy.model.train(was)


def _probe(benchmark) -> torch.Tensor:
    return torch.stack([benchmark.test_stream[i].dataset[j][0] for i in range(5) for j in range(8)])


@pytest.mark.parametrize("mode", ["nested", "full"])
def test_teachers_are_bit_exact_on_cuda_after_later_experiences(digits_images, conv_net, mode):
    recorder = _Recorder(_probe(digits_images))
    strategy = _strategy(conv_net, snapshot_mode=mode, plugins=[recorder])
    for exp in digits_images.train_stream:
        strategy.train(exp)
    store, probe = strategy.snapshots, recorder.probe.to(CUDA)
    assert len(store) == 5 and all(p.is_cuda for p in strategy.model.parameters())
    for k in range(5):
        out = store.teacher(k).run(probe, "running")[0]
        assert out.is_cuda
        seen = sorted(c for exp in store.classes[: k + 1] for c in exp)  # nested: other rows are 0
        assert torch.equal(out[:, seen], recorder.outputs[k][:, seen]), f"teacher {k} differs"


@pytest.mark.parametrize("batching", ["vmap", "streams"])
@pytest.mark.parametrize("batch_norm", ["batch", "running"])
def test_batched_teachers_give_the_loops_outputs_on_cuda(
    digits_images, conv_net, batching, batch_norm
):
    strategy = _strategy(conv_net, feature_teachers="all")
    for exp in digits_images.train_stream[:4]:
        strategy.train(exp)
    store, x = strategy.snapshots, _probe(digits_images).to(CUDA)
    with _no_tf32():
        loop = store.run_teachers(range(4), x, batch_norm)
        store.end_step()
        batched = store.run_teachers(range(4), x, batch_norm, batching=batching)
        torch.cuda.synchronize()
    for (la, fa), (lb, fb) in zip(loop, batched, strict=True):
        torch.testing.assert_close(lb, la, rtol=1e-4, atol=1e-5)
        assert fa.keys() == fb.keys() == {"1", "4"}
        for spec in fa:
            torch.testing.assert_close(fb[spec], fa[spec], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("batching", ["loop", "vmap", "streams"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_low_precision_teachers_on_cuda(digits_images, conv_net, dtype, batching):
    strategy = _strategy(
        conv_net,
        teacher_dtype=dtype,
        teacher_batching=batching,
        feature_teachers="all",
        evaluator=_evaluator(accuracy_metrics(stream=True)),
    )
    for exp in digits_images.train_stream[:3]:
        strategy.train(exp)
    # chance is 1/6 (CPU, bf16 loop: 0.36)
    assert strategy.eval(digits_images.test_stream[:3])[ACC] > 0.3
    store, x = strategy.snapshots, _probe(digits_images).to(CUDA)
    fp32 = store.run_teachers([0, 1], x, "batch")
    store.end_step()
    low = store.run_teachers([0, 1], x, "batch", dtype, batching)
    for (ref, _), (out, feats) in zip(fp32, low, strict=True):
        assert out.dtype == torch.float32 and all(f.dtype == torch.float32 for f in feats.values())
        assert torch.isfinite(out).all()
        scale = ref.abs().max().item()
        assert 0 < (out - ref).abs().max().item() < 0.05 * scale  # low precision, and only that


def test_fp16_student_with_grad_scaler_resumes_on_cuda(
    digits_images, conv_net, tmp_path, identical
):
    """mixed_precision=float16 on CUDA: the GradScaler's state is saved and restored, and a
    run resumed after experience 1 ends bit-identical to the uninterrupted one (with
    deterministic kernels)."""
    path = tmp_path / "run.ckpt"
    with _deterministic():
        whole = _strategy(conv_net, mixed_precision=torch.float16)
        assert whole.grad_scaler is not None and whole.grad_scaler.is_enabled()
        for exp in digits_images.train_stream[:4]:
            whole.train(exp)
            if exp.current_experience == 1:
                save_checkpoint(whole, path)
                saved_scaler = whole.grad_scaler.state_dict()
        resumed = _strategy(conv_net, mixed_precision=torch.float16)
        assert load_checkpoint(resumed, path, digits_images.train_stream) == 2
        assert resumed.grad_scaler.state_dict() == saved_scaler
        for exp in digits_images.train_stream[2:4]:
            resumed.train(exp)
    assert 0 < whole.grad_scaler.get_scale() < float("inf")
    assert resumed.grad_scaler.state_dict() == whole.grad_scaler.state_dict()
    assert identical(whole.model.state_dict(), resumed.model.state_dict())
    assert identical(whole.snapshots.state_dict(), resumed.snapshots.state_dict())


@pytest.mark.parametrize("written_on, loaded_on", [("cuda", "cpu"), ("cpu", "cuda")])
def test_checkpoint_written_on_one_device_resumes_on_the_other(
    digits_images, conv_net, tmp_path, written_on, loaded_on, identical
):
    path = tmp_path / "run.ckpt"
    writer = _strategy(conv_net, device=written_on)
    for exp in digits_images.train_stream[:2]:
        writer.train(exp)
    save_checkpoint(writer, path)
    reader = _strategy(conv_net, device=loaded_on)
    assert load_checkpoint(reader, path, digits_images.train_stream) == 2
    assert all(t.device.type == loaded_on for t in reader.model.state_dict().values())

    def on_cpu(tree):
        if isinstance(tree, torch.Tensor):
            return tree.cpu()
        if isinstance(tree, dict):
            return {k: on_cpu(v) for k, v in tree.items()}
        if isinstance(tree, (list, tuple)):
            return type(tree)(on_cpu(v) for v in tree)
        return tree

    assert identical(on_cpu(writer.model.state_dict()), on_cpu(reader.model.state_dict()))
    assert identical(on_cpu(writer.snapshots.state_dict()), on_cpu(reader.snapshots.state_dict()))
    assert identical(
        on_cpu(writer.optimizer.state_dict()["state"]),
        on_cpu(reader.optimizer.state_dict()["state"]),
    )
    reader.train(digits_images.train_stream[2])  # and it trains on, on its own device
    assert len(reader.snapshots) == 3
    assert all(t.device.type == loaded_on for t in reader.model.state_dict().values())


class _NoHostSync(SupervisedPlugin):
    """CUDA host synchronisation is an error from ``before_training_iteration`` to
    ``after_training_iteration`` (Avalanche's training step, the mini-batch already on the
    device; the evaluator, after the user plugins, runs outside the window), from the
    second step of each experience on: the first builds per-experience caches (the seen
    classes' logit mask from a Python list, the stacked teachers)."""

    def __init__(self) -> None:
        super().__init__()
        self.checked = 0
        self._on = False

    def before_training_iteration(self, strategy, **kwargs):
        if strategy.clock.train_exp_iterations > 0:
            torch.cuda.set_sync_debug_mode("error")
            self._on = True

    def after_training_iteration(self, strategy, **kwargs):
        if self._on:
            torch.cuda.set_sync_debug_mode("default")
            self._on, self.checked = False, self.checked + 1


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"teacher_batching": "vmap"},
        {"teacher_batching": "streams", "teacher_dtype": torch.bfloat16},
        {"mixed_precision": torch.bfloat16, "teacher_sample": 2},
        {"snapshot_mode": "full", "teachers": "last", "feature_teachers": "all"},
    ],
    ids=["nested", "vmap", "streams-bf16", "bf16-student-sampled", "full-last"],
)
def test_no_host_synchronisation_inside_a_training_step(digits_images, conv_net, options):
    """With ``check_finite=False`` and plain cross-entropy (``logit_adjustment=0``: see the
    next test) a step of the M2KD plugins never waits for the GPU."""
    guard = _NoHostSync()
    strategy = _strategy(
        conv_net, check_finite=False, logit_adjustment=0.0, plugins=[guard], **options
    )
    try:
        for exp in digits_images.train_stream[:4]:
            strategy.train(exp)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert guard.checked > 40


@pytest.mark.xfail(
    strict=True,
    raises=RuntimeError,
    reason="torch.bincount on CUDA reads the labels' min and max back to the host, "
    "so LogitAdjustedCrossEntropy's running prior syncs once per step",
)
def test_logit_adjusted_criterion_does_not_synchronise():
    criterion = LogitAdjustedCrossEntropy()
    logits = torch.randn(32, 10, device=CUDA, requires_grad=True)
    targets = torch.randint(0, 10, (32,), device=CUDA)
    criterion(logits, targets)  # the first call creates the prior
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        criterion(logits, targets).backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_torchrun_with_nccl_on_the_gpus_present(tmp_path):
    """``examples/distributed.py --cuda`` under torchrun: NCCL, one process per GPU (at
    most 2; one process exercises the DDP wrap, the buffer broadcast and NCCL)."""
    import torch.distributed as dist

    if not dist.is_nccl_available():
        pytest.skip("this torch build has no NCCL")
    n = min(2, torch.cuda.device_count())
    # the package, installed or not
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    run = subprocess.run(
        [
            sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
            str(ROOT / "examples" / "distributed.py"), "--cuda", "--epochs", "2", "--out",
            str(tmp_path),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = [
        torch.load(tmp_path / f"rank{r}.pt", map_location="cpu", weights_only=True)
        for r in range(n)
    ]
    assert ranks[0]["world_size"] == n and ranks[0]["device"] == "cuda:0"
    assert len(ranks[0]["store"]["snapshots"]) == 5
    assert ranks[0]["accuracy"] > 0.5  # 2 epochs per experience; chance is 0.1
    for other in ranks[1:]:
        assert torch.equal(other["model"]["0.weight"], ranks[0]["model"]["0.weight"])
        assert other["accuracy"] == ranks[0]["accuracy"]
