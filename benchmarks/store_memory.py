"""Memory of the ``nested`` snapshot store on ResNet-32, against naive copies and PackNet.

Avalanche's iCaRL ResNet-32 (``make_icarl_net(num_classes=100)``: 470,004
parameters, 461,232 of them prunable conv weights) and a stream of 10 experiences
of 10 classes each, as in the paper's Split CIFAR-100 setting. Nothing is trained:
each experience is simulated by the store's own API — random values for the free
weights and for every non-prunable tensor (biases, BatchNorm parameters and
statistics, the whole head), then ``store.prune(model, t, keep)`` with the
``"fair"`` schedule and ``store.record(model, classes)`` — so the script runs in
seconds on a CPU, and the byte counts are those of a real run (they depend on the
shapes, not on the values).

Every teacher is then checked against the model saved when its snapshot was
recorded: every parameter and buffer equal (head rows of classes the snapshot had
not seen: zero) and the logits of its seen classes on a probe batch equal, before
and after a ``torch.save`` / ``torch.load(weights_only=True)`` round trip into a
fresh store. The script exits with status 1 if any check fails.

    python -m benchmarks.store_memory

``--out DIR`` also writes the record, ``DIR/results.json`` (the byte counts, the
checks, the owners' entropy; everything but the run time, so that the file is the same
on every run of one library version), from which :func:`markdown` prints the same
table; the documentation renders the committed
``benchmarks/results/store-memory/results.json`` with it (the page *Cost: memory and
time*):

    OMP_NUM_THREADS=1 python -m benchmarks.store_memory --out benchmarks/results/store-memory
"""

from __future__ import annotations

import argparse
import io
import sys
import time
import warnings
from typing import Any

warnings.filterwarnings("ignore", message="no QP solver")

import torch  # noqa: E402
from avalanche.models import make_icarl_net  # noqa: E402
from torch import nn  # noqa: E402

from avalanche_m2kd import SnapshotStore  # noqa: E402
from avalanche_m2kd.pruning import keep_fraction  # noqa: E402
from benchmarks import records  # noqa: E402

N_EXPERIENCES = 10
CLASSES_PER_EXPERIENCE = 10
HEAD = "classifier"


@torch.no_grad()
def simulate(
    model: nn.Module, store: SnapshotStore, probe: torch.Tensor, n_experiences: int, per_exp: int
) -> tuple[list[dict[str, torch.Tensor]], list[torch.Tensor]]:
    """Fill ``store`` with ``n_experiences`` snapshots of randomly perturbed weights.

    Returns:
        ``(states, logits)``: the model's ``state_dict`` and its eval-mode logits on
        ``probe`` at each recording.
    """
    store.bind(model)
    states, logits = [], []
    for t in range(n_experiences):
        params = dict(model.named_parameters())
        for name, free in store.free_masks().items():  # "training": only free weights move
            params[name].copy_(
                torch.where(free, 0.05 * torch.randn_like(params[name]), params[name])
            )
        for name, tensor in model.state_dict().items():
            if name in store.prunable:
                continue
            if tensor.is_floating_point():
                noise = (
                    torch.rand_like(tensor) + 0.5
                    if "running_var" in name
                    else torch.randn_like(tensor)
                )
                tensor.copy_(noise)
            else:
                tensor.add_(391)  # num_batches_tracked
        store.prune(model, t, keep_fraction("fair", t, n_experiences))
        store.record(model, classes=range(per_exp * t, per_exp * (t + 1)))
        states.append({n: v.clone() for n, v in model.state_dict().items()})
        logits.append(model.eval()(probe))
    return states, logits


def teachers_exact(
    store: SnapshotStore,
    states: list[dict[str, torch.Tensor]],
    logits: list[torch.Tensor],
    probe: torch.Tensor,
) -> int:
    """How many teachers reproduce their saved model bit for bit (see the module docstring)."""
    exact = 0
    for k, (saved, expected) in enumerate(zip(states, logits, strict=True)):
        teacher = store.teacher(k)
        seen = sorted(c for exp in store.classes[: k + 1] for c in exp)
        unseen = [c for c in range(expected.shape[1]) if c not in seen]
        rebuilt = {n.removeprefix("module."): v for n, v in teacher.state_dict().items()}
        ok = set(rebuilt) == set(saved)
        for name, value in saved.items():
            if name.startswith(HEAD + "."):
                ok &= torch.equal(rebuilt[name][seen], value[seen])
                ok &= not rebuilt[name][unseen].any()
            else:
                ok &= torch.equal(rebuilt[name], value)
        ok &= torch.equal(teacher(probe)[:, seen], expected[:, seen])
        exact += bool(ok)
    return exact


def _radix_bits(base: int) -> float:
    """Bits per digit when packing ``g`` base-``base`` digits into one int64
    (``base**g < 2**63``)."""
    g = 1
    while base ** (g + 1) < 2**63:
        g += 1
    return (base**g - 1).bit_length() / g


def record(n_experiences: int = N_EXPERIENCES, per_exp: int = CLASSES_PER_EXPERIENCE
           ) -> dict[str, Any]:
    """Build the store, count its bytes and check its teachers: the record that
    ``--out`` writes (the run time aside)."""
    torch.manual_seed(0)
    model = make_icarl_net(num_classes=n_experiences * per_exp)
    probe = torch.randn(8, 3, 32, 32)
    store = SnapshotStore("nested", head_name=HEAD)
    states, logits = simulate(model, store, probe, n_experiences, per_exp)

    n_params = sum(p.numel() for p in model.parameters())
    model_bytes = 4 * n_params
    n_prunable = sum(model.get_parameter(n).numel() for n in store.prunable)
    batchnorm = {
        f"{m_name}.{t_name}"
        for m_name, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        for t_name, _ in [*m.named_parameters(recurse=False), *m.named_buffers(recurse=False)]
    }
    parts = {"owners": 0, "bn": 0, "head": 0, "other": 0}
    for name, size in store.nbytes_by_name().items():
        part = (
            "owners" if name in store.prunable else "bn" if name in batchnorm
            else "head" if name.startswith(HEAD + ".") else "other"
        )
        parts[part] += size
    total = store.nbytes()
    buffer = io.BytesIO()
    torch.save(store.state_dict(), buffer)
    saved_bytes = buffer.tell()

    exact = teachers_exact(store, states, logits, probe)
    buffer.seek(0)
    restored = SnapshotStore("nested")
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    restored.bind(model)
    exact_restored = teachers_exact(restored, states, logits, probe)

    small = {n: v for n, v in states[-1].items() if n not in store.prunable}
    old_total = n_prunable + n_experiences * sum(
        v.numel() * v.element_size() for v in small.values()
    )
    packnet = 3 * sum(
        m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))
    )
    bits = store.owner_bits
    counts = sum(torch.bincount(o.flatten().long(), minlength=256) for o in store.owners.values())
    assert isinstance(counts, torch.Tensor)  # 0 (sum's start) only for a store without owners
    p = counts[counts > 0].double() / n_prunable
    entropy = float(-(p * p.log2()).sum())  # bits per weight: the floor of any exact owner code
    rows = [
        (f"nested: owner indices ({bits} bits x {n_prunable:,} weights)", parts["owners"]),
        (f"nested: BatchNorm parameters + statistics (x {n_experiences} snapshots)", parts["bn"]),
        ("nested: head rows of the classes seen up to each snapshot", parts["head"]),
        ("nested: other small state (biases outside BatchNorm and head)", parts["other"]),
        ("**nested total, `store.nbytes()`**", total),
        ("nested, `torch.save(store.state_dict())` file", saved_bytes),
        (
            "nested before issue 4 (uint8 owners, whole small state per snapshot; formula)",
            old_total,
        ),
        (f"naive copies ({n_experiences} x fp32 model)", n_experiences * model_bytes),
        ("Avalanche 0.6.0 PackNet (3 bytes per conv/linear weight; formula)", packnet),
    ]
    return dict(
        benchmark="store_memory",
        torch=torch.__version__.split("+")[0],
        experiences=n_experiences,
        classes_per_experience=per_exp,
        parameters=n_params,
        prunable=n_prunable,
        model_bytes=model_bytes,
        owner_bits=bits,
        rows=[dict(what=label, bytes=size) for label, size in rows],
        nbytes=total,
        saved_bytes=saved_bytes,
        exact=exact,
        exact_restored=exact_restored,
        owner_entropy_bits=round(entropy, 4),
        radix_bits=round(_radix_bits(n_experiences + 1), 4),
    )


def markdown(rec: dict[str, Any]) -> str:
    """The table of a record (what ``--out`` writes), its setting above it and the
    checks and the owners' entropy below it."""
    model_bytes, n = rec["model_bytes"], rec["experiences"]
    entropy, radix = rec["owner_entropy_bits"], rec["radix_bits"]
    lines = [
        f"ResNet-32 (`make_icarl_net(num_classes={n * rec['classes_per_experience']})`): "
        f"{rec['parameters']:,} parameters, one fp32 model = {model_bytes:,} bytes; {n} snapshots "
        f"x {rec['classes_per_experience']} classes.",
        "",
        "| what | bytes | x one fp32 model |",
        "|---|---:|---:|",
        *(f"| {r['what']} | {r['bytes']:,} | {r['bytes'] / model_bytes:.3f} |"
          for r in rec["rows"]),
        "",
        f"serialised / nbytes(): {rec['saved_bytes'] / rec['nbytes']:.3f}; teachers bit-exact vs "
        f"the saved models: {rec['exact']}/{n}, after torch.save/torch.load(weights_only=True) "
        f"into a fresh store: {rec['exact_restored']}/{n}.",
        "",
        f"Owners below the fixed width: their empirical entropy is {entropy:.2f} bits/weight "
        f"({entropy * rec['prunable'] / 8 / model_bytes:.3f} x, an exact entropy coder's floor; "
        f"base-{n + 1} digits in 63-bit words would take {radix:.2f} bits, "
        f"{radix * rec['prunable'] / 8 / model_bytes:.3f} x); "
        "per-layer owner ranges save nothing here, every layer holds all owners.",
    ]
    return "\n".join(lines)


def ok(rec: dict[str, Any]) -> bool:
    """Every teacher bit-exact before and after the round trip, and the file within 10 %
    of ``nbytes()``."""
    n = rec["experiences"]
    return rec["exact"] == rec["exact_restored"] == n and abs(
        rec["saved_bytes"] / rec["nbytes"] - 1) <= 0.10


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m benchmarks.store_memory``: print the table (and write
    the record with ``--out``); exit status 1 if a check fails."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.store_memory",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--experiences", type=int, default=N_EXPERIENCES)
    parser.add_argument("--classes-per-experience", type=int, default=CLASSES_PER_EXPERIENCE)
    parser.add_argument("--out", metavar="DIR", help="also write DIR/results.json")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    rec = record(args.experiences, args.classes_per_experience)
    rec.update(records.header("store_memory", argv))
    print(markdown(rec))
    print(f"\n{time.perf_counter() - start:.1f} s")
    print(
        "\nPackNet: from reading Avalanche 0.6.0's `avalanche/models/packnet.py`, each wrapped "
        "conv/linear layer (the head included) registers three weight-sized buffers — `task_index` "
        "(uint8), `visible_mask` and `unfrozen_mask` (bool) — and its wrapper rejects BatchNorm "
        "layers, so it cannot wrap this ResNet-32 at all; the row is the formula, not a run."
    )
    if args.out is not None:
        records.write(rec, args.out)
    return 0 if ok(rec) else 1

if __name__ == "__main__":
    sys.exit(main())
