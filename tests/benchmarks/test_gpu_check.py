"""benchmarks/gpu_check.py on a machine without CUDA: it says so and exits with status 2;
its parts (bundle, JUnit counts, the Fashion-MNIST run, the summary) work on the CPU."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

from benchmarks import gpu_check

ROOT = Path(__file__).resolve().parents[2]


def test_without_cuda_it_exits_with_status_2_and_writes_nothing(tmp_path):
    # no GPU, even on a GPU machine
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONWARNINGS": "ignore"}
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_check", "--out", str(tmp_path / "out")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 2, run.stderr[-2000:]
    assert "no CUDA device here" in run.stderr and "nothing was checked or written" in run.stderr
    assert not (tmp_path / "out").exists()


def test_bundle_holds_the_packages_a_stand_in_wandb_and_gzipped_fashion_mnist(
    tmp_path, fmnist_root
):
    sizes = gpu_check.make_bundle(tmp_path / "bundle", fmnist_root)
    site = tmp_path / "bundle" / "site"
    assert set(gpu_check.BUNDLE_PACKAGES) <= {p.name for p in site.iterdir()}
    assert (
        site / "avalanche_lib-0.6.0.dist-info" / "METADATA"
    ).is_file()  # importlib.metadata finds it
    assert "Stand-in" in (site / "wandb" / "__init__.py").read_text()
    assert not list(site.rglob("__pycache__"))
    raw = fmnist_root / "FashionMNIST" / "raw"
    for name in ("train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        packed = tmp_path / "bundle" / "fashion-mnist" / f"{name}.gz"
        assert gzip.decompress(packed.read_bytes()) == (raw / name).read_bytes()
    assert sizes["avalanche"] > 1_000_000 and sizes["fashion-mnist"] > 0


_JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">
<testcase classname="tests.test_cuda" name="test_a"/>
<testcase classname="tests.test_cuda" name="test_b"><failure message="assert 1 == 2">...</failure></testcase>
<testcase classname="tests.test_cuda" name="test_c"><skipped type="pytest.skip" message="no GPU"/></testcase>
<testcase classname="tests.test_cuda" name="test_d"><skipped type="pytest.xfail" message="bincount"/></testcase>
<testcase classname="tests.test_cuda" name="test_e"><error message="fixture broke"/></testcase>
</testsuite></testsuites>"""  # noqa: E501 (one JUnit element a line, as pytest writes them)


def test_junit_counts_and_the_summary_line(tmp_path):
    (tmp_path / "j.xml").write_text(_JUNIT)
    counts = gpu_check.junit_counts(tmp_path / "j.xml")
    assert {k: counts[k] for k in ("passed", "failed", "errors", "skipped", "xfailed")} == dict(
        passed=1, failed=1, errors=1, skipped=1, xfailed=1)
    assert [f["test"] for f in counts["failures"]] == [
        "tests.test_cuda::test_b",
        "tests.test_cuda::test_e",
    ]
    rows = [dict(teachers=9, setting=s, m2kd=m, m2kd_ratio=r) for s, m, r in
            (("default", 0.02, 1.0), ("vmap", 0.01, 0.5), ("streams", 0.018, 0.9))]
    report = dict(
        device="GPU X",
        seconds=300.0,
        cuda_tests=dict(status="pytest exit 1", **counts),
        step_cost=dict(status="ok", rows=rows),
        compare=dict(
            status="ok",
            runs={"m2kd": dict(final_accuracy=0.71), "lwf-la": dict(final_accuracy=0.65)},
        ),
    )
    line = gpu_check.summary_line(report)
    assert line == (
        "gpu_check on GPU X | cuda tests 1 passed, 2 failed, 1 xfailed, 1 skipped | T=9 M2KD step "
        "20.0 ms: vmap x0.50, streams x0.90 | Split FMNIST ResNet-32 final m2kd 0.710, "
        "lwf-la 0.650 | 300 s"
    )
    assert gpu_check.failed(report)
    report["cuda_tests"]["status"] = "ok"
    assert not gpu_check.failed(report)


def test_the_fashion_mnist_run_records_m2kd_and_lwf_la(tmp_path, fmnist_root):
    """The compare options gpu_check passes are valid: a tiny CPU run of both methods."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    result = gpu_check.run_compare(
        tmp_path,
        fmnist_root,
        env,
        timeout=600,
        device="cpu",
        overrides=(
            "--backbone", "cnn", "--epochs", "1", "--train-per-class", "6", "--test-per-class", "4",
        ),
    )
    assert result["status"] == "ok", (tmp_path / "compare.log").read_text()[-2000:]
    assert set(result["runs"]) == {"m2kd", "lwf-la"}
    assert all(
        0 <= r["final_accuracy"] <= 1 and len(r["accuracy"]) == 5 for r in result["runs"].values()
    )
    json.dumps(result)  # goes into gpu_check.json as is


def test_step_cost_part_reports_every_setting_against_the_default():
    settings = {k: gpu_check.STEP_SETTINGS[k] for k in ("vmap", "streams", "bf16 teachers, vmap")}
    result = gpu_check.run_step_cost([2], batch=2, reps=1, settings=settings, device="cpu")
    assert [r["setting"] for r in result["rows"]] == ["default", *settings]
    assert result["rows"][0]["m2kd_ratio"] == 1.0 and all(r["m2kd"] > 0 for r in result["rows"])
