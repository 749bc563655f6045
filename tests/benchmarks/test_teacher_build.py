"""The teacher-build benchmark: the old private-write build it re-implements gives the same
teachers as today's, its check would see a difference, and its record is the docs' (tiny)."""

from __future__ import annotations

import pytest
import torch

from benchmarks import teacher_build


@pytest.fixture(scope="module", params=["loop", "vmap"])
def state(request):
    return request.param, teacher_build.make_state("cnn", 2, batch=4, batching=request.param,
                                                   steps=3)


def test_both_builds_give_bit_exact_teachers_and_stacks(state):
    batching, s = state
    check = teacher_build.check_bit_exact(s, batching)
    assert check["bit_exact"]
    # per teacher: its state_dict, then logits + 4 features under two BatchNorm modes
    per_teacher = len(s.model.state_dict()) + 2 * 5
    stacked = 2 * 2 * 5 if batching == "vmap" else 0
    assert check["tensors_compared"] == 2 * per_teacher + stacked


def test_both_builds_drop_the_students_hooks_and_replace_tensors_of_other_shapes(state):
    batching, s = state
    zeroing = s.model.feature_extractor.stage3.register_forward_hook(lambda m, i, o: o * 0)
    try:
        built = {v: teacher_build.build_teachers(s, v)[0] for v in ("new", "old")}
    finally:
        zeroing.remove()
    x = s.inputs[0]
    for teacher in built.values():
        logits, features = teacher.run(x)
        assert features["classifier:input"].abs().sum() > 0  # the zeroing hook did not fire
        assert torch.equal(logits, built["new"].run(x)[0])
        assert not any(p.requires_grad for p in teacher.parameters())
        head = teacher.module.get_parameter("classifier.classifier.weight")
        student = s.model.get_parameter("classifier.classifier.weight")
        # snapshot 0 of a growing head has 2 units, the student 6; of a final head, both 6
        assert head.shape[0] == (2 if batching == "loop" else 6) and student.shape[0] == 6


def test_the_check_sees_a_teacher_that_differs(state, monkeypatch):
    batching, s = state
    rebuild = teacher_build.old_rebuild

    def off_by_one_ulp(model, tensors, specs=()):
        bias = "feature_extractor.stage3.1.bias"
        changed = {**tensors, bias: torch.nextafter(tensors[bias], torch.tensor(1.0))}
        return rebuild(model, changed, specs)

    monkeypatch.setitem(teacher_build.REBUILDS, "old", off_by_one_ulp)
    assert not teacher_build.check_bit_exact(s, batching)["bit_exact"]


def test_steps_of_both_variants_train_identical_students():
    states = {v: teacher_build.make_state("cnn", 2, batch=4, batching="loop", steps=4)
              for v in ("new", "old")}
    result = teacher_build.time_steps(states, "loop", rounds=2)
    assert result["students_equal"] and result["rounds"] == 2
    assert result["new_s"] > 0 and result["ratio_min"] <= result["ratio_median"]


def test_out_writes_the_record_the_docs_render(tmp_path, capsys, rendered):
    teacher_build.main(["--backbones", "cnn", "--teachers", "2", "--batch", "2",
                        "--repeats", "2", "--note", "tiny", "--out", str(tmp_path)])
    record, table = rendered(tmp_path)
    assert (record["teachers"], record["rounds"], record["commit"]) == (2, 2, "3baabd6")
    assert [(r["backbone"], r["batching"], r["head"]) for r in record["rows"]] == [
        ("cnn", "loop", "grows"), ("cnn", "vmap", "final size")]
    for row in record["rows"]:
        assert row["bit_exact"] and row["step"]["students_equal"]
        for timed in ("build", "step"):
            t = row[timed]
            assert t["rounds"] == 2 and t["new_s"] > 0 and t["old_s"] > 0
            assert 0 < t["ratio_min"] <= t["ratio_median"] <= t["ratio_max"]
            assert t["ratio_mean"] > 0 and t["ratio_half_width"] is not None
    assert table.splitlines()[-1] == "tiny"
    printed = capsys.readouterr().out
    assert all(line in printed for line in table.splitlines())
