"""avalanche_m2kd.WandBLogger with wandb 0.31, offline: what the run file records.

wandb 0.31 writes no ``wandb-summary.json`` or ``config.yaml`` offline; the run lives
in the ``run-<id>.wandb`` file: LevelDB-log framing (7-byte file header, 32 KiB
blocks, 7-byte record headers) around ``wandb.proto.wandb_internal_pb2.Record``
messages, read here with a few lines. wandb-core writes that file in its service
process, so the reader waits for the run's ``exit`` record.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import pytest
import torch
import wandb
from avalanche.evaluation.metric_results import MetricValue
from avalanche.evaluation.metrics import accuracy_metrics, forgetting_metrics
from avalanche.logging import WandBLogger as AvalancheWandBLogger
from avalanche.training.plugins import EvaluationPlugin
from torch import nn

from avalanche_m2kd import M2KDStrategy, WandBLogger

STREAM_ACC = "Top1_Acc_Stream/eval_phase/test_stream/Task000"
EPOCH_ACC = "Top1_Acc_Epoch/train_phase/train_stream/Task000"
STREAM_FORGETTING = "StreamForgetting/eval_phase/test_stream"
TRAIN_STREAM_ACC = "Top1_Acc_Stream/eval_phase/train_stream/Task000"  # periodic evaluation

_BLOCK = 32768  # LevelDB log block size; the 7-byte ":W&B" file header opens block 0
_HEADER = 7


def _records(path: Path):
    """The ``Record`` protos of a ``.wandb`` file, in order."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    if data[:4] != b":W&B":
        return
    pos, parts = _HEADER, b""
    while pos + _HEADER <= len(data):
        if _BLOCK - pos % _BLOCK < _HEADER:  # block trailer padding
            pos += _BLOCK - pos % _BLOCK
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + _HEADER])
        if kind == 0:
            return
        chunk = data[pos + _HEADER : pos + _HEADER + length]
        pos += _HEADER + length
        parts = chunk if kind in (1, 2) else parts + chunk  # FULL, FIRST | MIDDLE, LAST
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(parts)
            yield record


def _read_run(path: Path, timeout: float = 30.0) -> dict:
    """``{"config", "history", "metrics"}`` of a finished offline run file."""
    from google.protobuf.message import DecodeError

    deadline = time.monotonic() + timeout
    while True:
        try:
            records = list(_records(path))
        except DecodeError:  # wandb's writer is still in the middle of a record
            records = []
        if any(r.HasField("exit") for r in records):
            break
        assert time.monotonic() < deadline, f"{path} has no exit record after {timeout} s"
        time.sleep(0.05)
    config, history, metrics = {}, [], {}
    for r in records:
        if r.HasField("run"):
            config.update({u.key: json.loads(u.value_json) for u in r.run.config.update})
        elif r.HasField("history"):
            history.append(
                {"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in r.history.item}
            )
        elif r.HasField("metric") and r.metric.name:
            metrics[r.metric.name] = r.metric.step_metric
    return {"config": config, "history": history, "metrics": metrics}


def _series(history: list[dict], name: str, x: str = "x_plot") -> list[tuple]:
    return [(row[x], row[name]) for row in history if name in row]


def _one_run_file(root: Path) -> Path:
    files = list(root.rglob("*.wandb"))
    assert len(files) == 1, files
    return files[0]


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """Offline, silent W&B; ``WANDB_DIR`` points away from the ``dir`` the tests pass."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_dir_env"))
    monkeypatch.delenv("WANDB_RUN_ID", raising=False)
    return tmp_path


def test_offline_run_records_every_value_and_the_config(digits, mlp, offline):
    run_dir = offline / "run_dir"
    config = {"mem_size": 20, "lr": 0.05, "method": "m2kd"}
    logger = WandBLogger(project_name="m2kd-tests", run_name="digits", config=config, dir=run_dir)
    evaluator = EvaluationPlugin(
        accuracy_metrics(epoch=True, experience=True, stream=True),
        forgetting_metrics(experience=True, stream=True),
        loggers=[logger],
        collect_all=True,
    )
    model = mlp()
    strategy = M2KDStrategy(
        model, torch.optim.SGD(model.parameters(), lr=0.05), nn.CrossEntropyLoss(),
        train_mb_size=64, train_epochs=1, evaluator=evaluator, mem_size=20,
        eval_every=0,  # periodic evaluation: two values at the same x_plot (see below)
    )
    accs = []
    for exp in digits.train_stream[:2]:
        strategy.train(exp)
        accs.append(strategy.eval(digits.test_stream[: exp.current_experience + 1])[STREAM_ACC])
    logger.close()
    assert logger.run is None
    logger.close()  # idempotent

    run = _read_run(_one_run_file(run_dir))  # under `dir`, not WANDB_DIR
    assert not (offline / "wandb_dir_env").exists()
    assert {k: run["config"][k] for k in config} == config
    history = run["history"]

    # the stream accuracy of both evaluations, at their training iteration
    stream = _series(history, STREAM_ACC)
    assert [v for _, v in stream] == pytest.approx(accs)
    assert stream[0][0] < stream[1][0]
    assert len(_series(history, EPOCH_ACC)) == 2  # one training epoch per experience
    assert len(_series(history, STREAM_FORGETTING)) == 2
    assert [v for _, v in _series(history, "TrainingExperience")] == [0, 1]

    # every value the evaluation plugin emitted is in the run, at its x_plot
    emitted = evaluator.get_all_metrics()
    assert STREAM_ACC in emitted and EPOCH_ACC in emitted
    for name, (xs, values) in emitted.items():
        recorded = _series(history, name)
        assert [x for x, _ in recorded] == xs, name
        assert [v for _, v in recorded] == pytest.approx(values), name
    # with step=x_plot (Avalanche's logger) the end-of-experience periodic evaluation
    # and the one before the next experience share a step: wandb kept only the second
    xs = emitted[TRAIN_STREAM_ACC][0]
    assert len(xs) > len(set(xs))

    # x_plot is the x-axis of every logged metric; wandb's own step always increases
    assert run["metrics"][STREAM_ACC] == run["metrics"][EPOCH_ACC] == "x_plot"
    steps = [row["_step"] for row in history]
    assert steps == sorted(set(steps))


def test_values_at_an_equal_or_lower_x_plot_are_kept(offline):
    logger = WandBLogger(project_name="m2kd-tests", run_name="steps", dir=offline / "run_dir")
    name = "Top1_Acc_Stream/eval_phase/test_stream/Task000"
    # equal x_plot in separate calls, then a lower one (a second strategy's fresh clock)
    for x, acc in [(10, 0.5), (10, 0.25), (3, 0.75)]:
        logger.log_metrics([MetricValue(None, name, acc, x)])
    logger.log_metrics([
        MetricValue(None, "Loss_Stream/eval_phase/test_stream/Task000", 1.5, 3),
        MetricValue(None, "Weights", torch.arange(6.0).reshape(2, 3), 3),  # histogram
        MetricValue(None, "Note", "text", 3),  # unsupported type: skipped, as in Avalanche
    ])
    logger.close()

    history = _read_run(_one_run_file(offline / "run_dir"))["history"]
    assert _series(history, name) == [(10, 0.5), (10, 0.25), (3, 0.75)]
    last = history[-1]  # one callback's values at one x_plot share one row
    assert last["Loss_Stream/eval_phase/test_stream/Task000"] == 1.5
    assert last["Weights/_type"] == "histogram" and last["x_plot"] == 3  # nested keys
    assert not any("Note" in row for row in history)


def test_closed_logger_says_so_and_a_new_logger_starts_a_new_run(offline):
    first = WandBLogger(project_name="m2kd-tests", run_name="first", dir=offline / "a")
    first_id = first.run.id
    first.close()
    with pytest.raises(RuntimeError, match="create a new WandBLogger"):
        first.log_single_metric("Top1_Acc_Stream", 0.5, 1)

    second = WandBLogger(project_name="m2kd-tests", run_name="second", dir=offline / "b")
    assert second.run is not None and second.run.id != first_id
    second.log_single_metric("Top1_Acc_Stream", 0.5, 1)
    second.close()
    assert _series(_read_run(_one_run_file(offline / "b"))["history"], "Top1_Acc_Stream") == [
        (1, 0.5)
    ]
    assert _read_run(_one_run_file(offline / "a"))["history"] == []


def test_leaves_wandb_and_avalanche_unchanged(offline):
    util_names = set(vars(wandb.util))
    had = hasattr(wandb.util, "generate_id"), hasattr(wandb, "viz")
    plot, util = wandb.plot, wandb.util
    avalanche_methods = {k: v for k, v in vars(AvalancheWandBLogger).items() if callable(v)}

    logger = WandBLogger(project_name="m2kd-tests", run_name="globals", dir=offline / "run_dir")
    logger.log_single_metric("Top1_Acc_Stream", 0.5, 1)  # the CustomChart lookup runs here
    logger.close()

    assert (hasattr(wandb.util, "generate_id"), hasattr(wandb, "viz")) == had
    assert set(vars(wandb.util)) == util_names
    assert wandb.plot is plot and wandb.util is util
    assert {k: v for k, v in vars(AvalancheWandBLogger).items() if callable(v)} == avalanche_methods
