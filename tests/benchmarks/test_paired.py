"""``python -m benchmarks.paired``: two record sets, paired by seed."""

from __future__ import annotations

import json

import pytest

from benchmarks import paired


def _write(tmp_path, name, stream, values):
    paths = []
    for seed, (final, avg) in values.items():
        path = tmp_path / f"{name}_s{seed}.json"
        path.write_text(json.dumps(dict(stream=stream, seed=seed, final_accuracy=final,
                                        average_incremental_accuracy=avg)))
        paths.append(str(path))
    return paths


def test_pairs_the_seeds_both_sets_hold(tmp_path, capsys):
    a = _write(tmp_path, "a", "2+1", {0: (0.80, 0.90), 1: (0.82, 0.88), 2: (0.81, 0.86)})
    b = _write(tmp_path, "b", "2+1", {1: (0.80, 0.87), 2: (0.79, 0.85), 3: (0.5, 0.5)})
    out = paired.main(["--a", *a, "--b", *b])
    assert out == {"final_accuracy": "0.020 ± 0.000",
                   "average_incremental_accuracy": "0.010 ± 0.000"}
    assert "final acc. a − b: 0.020 ± 0.000 (2 seeds)" in capsys.readouterr().out


def test_records_of_two_streams_are_refused(tmp_path):
    a = _write(tmp_path, "a", "2+1", {0: (0.8, 0.9)})
    a += _write(tmp_path, "c", "5x2", {1: (0.8, 0.9)})
    b = _write(tmp_path, "b", "2+1", {0: (0.7, 0.8)})
    with pytest.raises(SystemExit, match="one stream"):
        paired.main(["--a", *a, "--b", *b])
