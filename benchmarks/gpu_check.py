"""Everything this project wants measured or checked on a GPU, in one command.

    python -m benchmarks.gpu_check --out DIR                   # on a machine with CUDA
    python -m benchmarks.gpu_check --out DIR --bundle .gpu     # there, from a carried bundle
    python -m benchmarks.gpu_check --make-bundle .gpu          # here: make that bundle

Three parts, each with its own time limit, about 8 minutes in all on one GPU, no
network:

1. ``pytest -m cuda tests/test_cuda.py`` (a subprocess): exact and batched teachers,
   fp16 / bf16 teachers and student, checkpoints across devices, no host sync in a
   step, torchrun with NCCL. Counts and failures go to the JSON; the log to
   ``DIR/cuda_tests.log``.
2. :mod:`benchmarks.step_cost` on CUDA, in this process, for T = 1, 3, 9 teachers: the
   ResNet-32 M2KD step of each setting (teachers in a loop, ``vmap``, on streams;
   float32, bf16 and fp16 teachers; bf16 and fp16 student) as a ratio to the default
   (float32 loop), every setting timed in turn.
3. A short Split Fashion-MNIST ResNet-32 run of M2KD and LwF-LA through
   ``python -m benchmarks.compare run`` (stream 5x2, 200 exemplars, seed 0, a few
   hundred images per class, 3 epochs): final and average incremental accuracy, time.

It writes ``DIR/gpu_check.json`` and prints one summary line. Exit status: 0 when
every part ran and no test failed, 1 otherwise, 2 (and nothing written) on a machine
where ``torch.cuda.is_available()`` is false.

The GPU machine this project may be lent has PyTorch but not Avalanche 0.6.0 and a
few of its pure-Python dependencies, and no Fashion-MNIST. ``--make-bundle DIR``
copies those packages from this environment into ``DIR/site`` (a stand-in ``wandb``
module instead of wandb itself, which is 62 MB with its binary and never used here:
Avalanche only imports it), and Fashion-MNIST's four files gzipped into
``DIR/fashion-mnist`` (about 38 MiB in all); ``--bundle DIR`` puts ``DIR/site`` first on
the import path (this process and its subprocesses) and unpacks the data under
``DIR``. Name ``DIR`` in the device tool's ``carry`` (after ignoring it in
``.git/info/exclude``).
"""

from __future__ import annotations

import argparse
import gzip
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]

#: The step-cost settings, as :func:`benchmarks.step_cost.make_steps` options (dtype
#: names); every one is compared with the float32 loop of teachers and student.
STEP_SETTINGS: dict[str, dict[str, Any]] = {
    "vmap": dict(teacher_batching="vmap"),
    "streams": dict(teacher_batching="streams"),
    "bf16 teachers": dict(teacher_dtype="bfloat16"),
    "fp16 teachers": dict(teacher_dtype="float16"),
    "bf16 teachers, vmap": dict(teacher_dtype="bfloat16", teacher_batching="vmap"),
    "fp16 teachers, streams": dict(teacher_dtype="float16", teacher_batching="streams"),
    "bf16 student": dict(student_dtype="bfloat16"),
    "bf16 student + teachers": dict(student_dtype="bfloat16", teacher_dtype="bfloat16"),
    "fp16 student + teachers": dict(student_dtype="float16", teacher_dtype="float16"),
    "bf16 student + teachers, vmap": dict(student_dtype="bfloat16", teacher_dtype="bfloat16",
                                          teacher_batching="vmap"),
}

#: The Split Fashion-MNIST run (``python -m benchmarks.compare run`` options).
COMPARE_ARGS = ["--preset", "gpu", "--backbone", "resnet32", "--methods", "m2kd", "lwf-la",
                "--streams", "5x2", "--budgets", "200", "--seeds", "0", "--epochs", "3",
                "--train-per-class", "500", "--test-per-class", "200"]

#: Packages the device image lacks (beside Avalanche itself), copied by --make-bundle.
BUNDLE_PACKAGES = (
    "avalanche", "dill", "GPUtil", "pytorchcv", "qpsolvers", "gdown", "bs4", "soupsieve",
)
_WANDB_STUB = '''"""Stand-in for wandb, written by benchmarks/gpu_check.py --make-bundle.

Avalanche 0.6.0 imports wandb when it is imported; the GPU check never logs to
Weights & Biases, so this empty module is all it needs there.
"""
'''


# --------------------------------------------------------------------------- bundle
def make_bundle(target: Path, data_root: Path) -> dict[str, int]:
    """Copy :data:`BUNDLE_PACKAGES` (with their ``dist-info``) and gzipped Fashion-MNIST
    into ``target``; return the bytes written per part.

    Raises:
        FileNotFoundError: a package is not installed here, or the Fashion-MNIST files
            are not under ``data_root/FashionMNIST/raw``.
    """
    from avalanche_m2kd.data.fmnist import FMNIST_FILES  # noqa: PLC0415 - imports Avalanche

    site, data = target / "site", target / "fashion-mnist"
    shutil.rmtree(target, ignore_errors=True)
    site.mkdir(parents=True)
    data.mkdir()
    sizes: dict[str, int] = {}
    owners = importlib.metadata.packages_distributions()
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in BUNDLE_PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise FileNotFoundError(f"package {name!r} is not installed in {sys.prefix}")
        package = Path(spec.origin).parent
        shutil.copytree(package, site / name, ignore=skip)
        for dist in owners.get(name, []):  # importlib.metadata.version() must find them there too
            record = importlib.metadata.distribution(dist)
            metadata = next(f for f in record.files or [] if f.name == "METADATA")
            info = Path(str(record.locate_file(metadata))).parent
            shutil.copytree(info, site / info.name, ignore=skip, dirs_exist_ok=True)
        sizes[name] = _bytes(site / name)
    (site / "wandb").mkdir()
    (site / "wandb" / "__init__.py").write_text(_WANDB_STUB)
    raw = data_root / "FashionMNIST" / "raw"
    for name in FMNIST_FILES:
        if not (raw / name).exists():
            raise FileNotFoundError(
                f"{raw / name} is missing: run python -m benchmarks.compare prepare first"
            )
        with (
            open(raw / name, "rb") as src,
            gzip.open(data / f"{name}.gz", "wb", compresslevel=6) as dst,
        ):
            shutil.copyfileobj(src, dst)
    sizes["fashion-mnist"] = _bytes(data)
    return sizes


def _bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def use_bundle(bundle: Path) -> tuple[dict[str, str], Path]:
    """Put ``bundle/site`` first on the import path; unpack its Fashion-MNIST into a
    temporary folder (not into the bundle, which may travel again).

    Returns:
        The environment for subprocesses, and the dataset root to pass as ``--root``.
    """
    site = str((bundle / "site").resolve())
    sys.path.insert(0, site)
    from avalanche_m2kd.data.fmnist import prepare_fashion_mnist  # noqa: PLC0415 - needs the path

    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([site, str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    root = Path(tempfile.gettempdir()) / "gpu_check_data"
    prepare_fashion_mnist(root, bundle / "fashion-mnist")
    return env, root


# --------------------------------------------------------------------------- parts
def run_cuda_tests(out: Path, env: dict[str, str], timeout: float) -> dict[str, Any]:
    """``pytest -m cuda tests/test_cuda.py``: counts, failures, seconds."""
    junit, log = out / "cuda_tests.xml", out / "cuda_tests.log"
    cmd = [
        sys.executable, "-m", "pytest", "-m", "cuda", "tests/test_cuda.py", "-p",
        "no:cacheprovider", "-rfEsx", f"--junitxml={junit}",
    ]
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
        )
        log.write_text(proc.stdout + proc.stderr)
        status = "ok" if proc.returncode == 0 else f"pytest exit {proc.returncode}"
    except subprocess.TimeoutExpired as err:
        # what the child wrote before the timeout: bytes on POSIX even with text=True
        partial = "".join(
            part.decode(errors="replace") if isinstance(part, bytes) else part
            for part in (err.stdout or "", err.stderr or "")
        )
        log.write_text(f"{partial}\n[timed out after {timeout:.0f} s]")
        status = f"timed out after {timeout:.0f} s"
    result: dict[str, Any] = dict(status=status, seconds=round(time.perf_counter() - start, 1))
    result.update(junit_counts(junit) if junit.exists() else {})
    return result


def junit_counts(path: Path) -> dict[str, Any]:
    """Passed / failed / skipped / xfailed counts and failure messages of a JUnit XML."""
    counts = dict(passed=0, failed=0, errors=0, skipped=0, xfailed=0)
    failures = []
    for case in ElementTree.parse(path).getroot().iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        failed, error, skipped = (case.find(t) for t in ("failure", "error", "skipped"))
        if failed is not None or error is not None:
            counts["failed" if failed is not None else "errors"] += 1
            node = failed if failed is not None else error
            assert node is not None
            failures.append(dict(test=name, message=(node.get("message") or "")[:500]))
        elif skipped is not None:
            counts["xfailed" if skipped.get("type") == "pytest.xfail" else "skipped"] += 1
        else:
            counts["passed"] += 1
    return dict(counts, failures=failures)


def run_step_cost(teachers: list[int], batch: int, reps: int, settings: dict[str, dict[str, Any]],
                  device: str = "cuda") -> dict[str, Any]:
    """:func:`benchmarks.step_cost.compare` for each ``T``: seconds and ratios to the default."""
    from benchmarks import step_cost  # noqa: PLC0415 - imports Avalanche

    variants = {name: {k: getattr(torch, v) if k.endswith("dtype") else v for k, v in kw.items()}
                for name, kw in settings.items()}
    start, rows = time.perf_counter(), []
    for n in teachers:
        for name, r in step_cost.compare(n, batch, reps, variants, device=device).items():
            rows.append(dict(teachers=n, setting=name, **{k: round(v, 6) for k, v in r.items()}))
            print(
                f"  step_cost T={n} {name}: {r['m2kd'] * 1e3:.2f} ms, x{r['m2kd_ratio']:.2f}",
                flush=True,
            )
    return dict(
        status="ok",
        seconds=round(time.perf_counter() - start, 1),
        batch=batch,
        reps=reps,
        rows=rows,
    )


def run_compare(
    out: Path,
    data_root: Path,
    env: dict[str, str],
    timeout: float,
    device: str = "cuda",
    overrides: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The Split Fashion-MNIST ResNet-32 run of M2KD and LwF-LA: each record's figures.

    ``overrides``: ``compare run`` options given after :data:`COMPARE_ARGS` (they win).
    """
    records = out / "compare"
    cmd = [
        sys.executable, "-m", "benchmarks.compare", "run", "--root", str(data_root), "--out",
        str(records), "--device", device, *COMPARE_ARGS, *overrides,
    ]
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
        )
        (out / "compare.log").write_text(proc.stdout + proc.stderr)
        status = (
            "ok"
            if proc.returncode == 0
            else f"exit {proc.returncode}: {proc.stderr.strip()[-300:]}"
        )
    except subprocess.TimeoutExpired:
        status = f"timed out after {timeout:.0f} s"
    runs = {}
    for path in sorted(records.glob("runs/headline/*.json")):
        r = json.loads(path.read_text())
        runs[r["method"]] = {
            k: r.get(k)
            for k in (
                "final_accuracy", "average_incremental_accuracy", "accuracy", "wall_time_s",
                "train_time_s", "stored_total",
            )
        }
    return dict(
        status=status,
        seconds=round(time.perf_counter() - start, 1),
        args=[*COMPARE_ARGS, *overrides],
        runs=runs,
    )


# --------------------------------------------------------------------------- report
def summary_line(report: dict[str, Any]) -> str:
    """The one-line summary printed at the end."""
    parts = [f"gpu_check on {report['device']}"]
    tests = report.get("cuda_tests", {})
    if "passed" in tests:
        parts.append(
            f"cuda tests {tests['passed']} passed, {tests['failed'] + tests['errors']} failed, "
            f"{tests['xfailed']} xfailed, {tests['skipped']} skipped"
        )
    elif tests:
        parts.append(f"cuda tests: {tests['status']}")
    rows = report.get("step_cost", {}).get("rows", [])
    if rows:
        t = max(r["teachers"] for r in rows)
        at = {r["setting"]: r for r in rows if r["teachers"] == t}
        shown = ", ".join(
            f"{name} x{at[name]['m2kd_ratio']:.2f}"
            for name in ("vmap", "streams", "bf16 teachers", "bf16 student + teachers")
            if name in at
        )
        parts.append(f"T={t} M2KD step {at['default']['m2kd'] * 1e3:.1f} ms: {shown}")
    runs = report.get("compare", {}).get("runs", {})
    if runs:
        parts.append(
            "Split FMNIST ResNet-32 final "
            + ", ".join(
                f"{m} {r['final_accuracy']:.3f}"
                for m, r in runs.items()
                if r.get("final_accuracy") is not None
            )
        )
    elif report.get("compare"):
        parts.append(f"compare: {report['compare']['status']}")
    parts.append(f"{report['seconds']:.0f} s")
    return " | ".join(parts)


def failed(report: dict[str, Any]) -> bool:
    """Whether a part did not run through or a CUDA test failed."""
    parts = [report[k] for k in ("cuda_tests", "step_cost", "compare") if k in report]
    return any(p.get("status") != "ok" for p in parts)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu_check", description=__doc__.splitlines()[0]
    )
    p.add_argument("--out", type=Path, help="folder for gpu_check.json and the logs")
    p.add_argument(
        "--root", type=Path, default=ROOT / "data", help="dataset root holding FashionMNIST/raw/"
    )
    p.add_argument("--bundle", type=Path, help="a folder made by --make-bundle (packages and data)")
    p.add_argument(
        "--make-bundle", type=Path, metavar="DIR", help="write the bundle to DIR and exit"
    )
    p.add_argument("--teachers", type=int, nargs="+", default=[1, 3, 9])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--skip", nargs="+", choices=["tests", "step_cost", "compare"], default=[])
    p.add_argument("--tests-timeout", type=float, default=270)
    p.add_argument("--compare-timeout", type=float, default=150)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (see the module docstring)."""
    args = build_parser().parse_args(argv)
    if args.make_bundle is not None:
        sizes = make_bundle(args.make_bundle, args.root)
        print(f"bundle {args.make_bundle}: {sum(sizes.values()) / 2**20:.1f} MiB "
              f"({', '.join(f'{k} {v / 2**20:.1f}' for k, v in sizes.items())})")
        return 0
    if args.out is None:
        build_parser().error("--out is required (or --make-bundle DIR)")
    if not torch.cuda.is_available():
        print(
            f"gpu_check: no CUDA device here (torch {torch.__version__}, "
            f"CUDA build {torch.version.cuda}, torch.cuda.is_available() is false): "
            "nothing was checked or written. Run it on a machine with a GPU.",
            file=sys.stderr,
        )
        return 2
    start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    env, data_root = (
        {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        },
        args.root,
    )
    if args.bundle is not None:
        env, data_root = use_bundle(args.bundle)
    env["PYTHONUNBUFFERED"] = "1"
    report: dict[str, Any] = dict(
        device=torch.cuda.get_device_name(0),
        gpus=torch.cuda.device_count(),
        torch=torch.__version__,
        cuda=torch.version.cuda,
        cudnn=torch.backends.cudnn.version(),
        python=platform.python_version(),
        started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    path = args.out / "gpu_check.json"

    def save() -> None:
        report["seconds"] = round(time.perf_counter() - start, 1)
        path.write_text(json.dumps(report, indent=1))

    if "tests" not in args.skip:
        print("gpu_check: pytest -m cuda tests/test_cuda.py", flush=True)
        report["cuda_tests"] = run_cuda_tests(args.out, env, args.tests_timeout)
        save()
    if "step_cost" not in args.skip:
        print(f"gpu_check: step_cost on CUDA, T = {args.teachers}", flush=True)
        try:
            report["step_cost"] = run_step_cost(args.teachers, args.batch, args.reps, STEP_SETTINGS)
        except Exception as err:  # noqa: BLE001 - recorded, and the next part still runs
            report["step_cost"] = dict(status=f"{type(err).__name__}: {err}"[:500])
        save()
    if "compare" not in args.skip:
        print("gpu_check: Split Fashion-MNIST ResNet-32, M2KD and LwF-LA", flush=True)
        report["compare"] = run_compare(args.out, data_root, env, args.compare_timeout)
        save()
    save()
    print(summary_line(report) + f" -> {path}")
    return 1 if failed(report) else 0


if __name__ == "__main__":
    sys.exit(main())
