"""The homework's scorers (coursekit.homework) and the student-version generator, without a kernel."""

import importlib.util
from pathlib import Path

import nbformat
import pytest
import torch
from torch.nn import functional as F

from coursekit import homework as hw

ROOT = Path(__file__).resolve().parent.parent
SOLUTION = ROOT / "notebooks" / "solutions" / "04_fashion_mnist_homework.ipynb"
STUDENT = ROOT / "notebooks" / "04_fashion_mnist_homework.ipynb"


def load_make_student():
    spec = importlib.util.spec_from_file_location("make_student", ROOT / "scripts" / "make_student.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reference_patchify_matches_unfold():
    images = torch.randn(2, 1, 28, 28)
    for p in (4, 7, 14):
        unfolded = F.unfold(images, kernel_size=p, stride=p).transpose(1, 2)  # [B, N, C*p*p]
        assert torch.equal(hw.reference_patchify(images, p), unfolded)
    # by hand: patch 1 (top row, second from the left) of a 7x7 grid
    assert torch.equal(hw.reference_patchify(images, 7)[:, 1], images[:, 0, :7, 7:14].reshape(2, 49))


def test_score_patchify_points_and_feedback():
    cases = hw.patchify_cases(0)
    right = [hw.reference_patchify(x, p) for x, p in cases]
    assert hw.score_patchify(cases, right)["points"] == 2
    swapped = hw.score_patchify(cases, [r.transpose(1, 2) for r in right])
    assert swapped["points"] == 0
    assert "expected shape [3, 16, 49], got [3, 49, 16]" in swapped["feedback"]
    # right shape, pixels inside each patch in column order: one point and a precise hint
    columns = [x.reshape(3, 1, 28 // p, p, 28 // p, p).permute(0, 2, 4, 5, 3, 1).reshape(r.shape)
               for (x, p), r in zip(cases, right)]
    result = hw.score_patchify(cases, columns)
    assert result["points"] == 1 and "wrong order" in result["feedback"]
    assert hw.score_patchify(cases, ["NotImplementedError: x"] * 3)["points"] == 0


def test_score_config():
    good = dict(patch_size=7, dim=64, depth=4, heads=4, dim_head=16, mlp_dim=128)
    assert hw.score_config(good, 16)["points"] == 2
    assert hw.score_config(good, 49)["points"] == 1
    assert hw.score_config(dict(good, patch_size=14), 4)["points"] == 1  # 4 patches: too few
    assert "does not divide" in hw.score_config(dict(good, patch_size=5), 16)["feedback"]
    assert "over the budget" in hw.score_config(dict(good, dim=512, mlp_dim=2048), 16)["feedback"]
    assert hw.score_config("not a dict", 16)["points"] == 0


def test_score_data():
    targets = torch.arange(100) % 10
    good = torch.stack([torch.nonzero(targets == c).flatten()[:4] for c in range(10)])
    assert hw.score_data(good, targets, 4)["points"] == 1
    assert "row 0 should hold only 'T-shirt/top'" in hw.score_data(good.roll(1, 0), targets, 4)["feedback"]
    assert hw.score_data(good[:, :3], targets, 4)["points"] == 0
    assert hw.score_data(good[:, :1].repeat(1, 4), targets, 4)["points"] == 0  # repeated images


def test_score_comparison_checks_against_measurements():
    measured = {"ViT": {"acc": 0.9, "params": 100}, "CNN": {"acc": 0.92, "params": 200}}
    rows = [{"model": "ViT", "test_acc": 0.9, "params": 100, "ms_per_image": 1.5},
            {"model": "CNN", "test_acc": 0.92, "params": 200, "ms_per_image": 0.5}]
    assert hw.score_comparison(rows, measured)["points"] == 2
    inflated = [dict(rows[0], test_acc=0.99), rows[1]]
    result = hw.score_comparison(inflated, measured)
    assert result["points"] == 1 and "the model scores 0.9000" in result["feedback"]
    assert hw.score_comparison(rows[:1], measured)["points"] == 0


def test_check_functions_print_feedback_and_never_raise(capsys):
    def broken(images, patch_size):
        raise NotImplementedError("write patchify")

    hw.check_patchify(broken)
    assert "[patchify] 0/2 points" in capsys.readouterr().out
    hw.check_patchify(hw.reference_patchify)
    assert "[patchify] 2/2 points" in capsys.readouterr().out
    assert hw.RESULTS["patchify"]["points"] == 2


def test_strip_code_regions():
    make = load_make_student()
    source = "def f(x):\n    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION\nprint(1)"
    assert make.strip_code(source, "hint") == (
        "def f(x):\n    raise NotImplementedError('hint')  # replace this line with your answer\nprint(1)")
    with pytest.raises(ValueError, match="never closed"):
        make.strip_code("### BEGIN SOLUTION\nx = 1", "hint")
    with pytest.raises(ValueError, match="without a BEGIN"):
        make.strip_code("x = 1\n### END SOLUTION", "hint")


def test_student_version_is_up_to_date_and_has_no_answers():
    make = load_make_student()
    assert STUDENT.read_text() == make.render(SOLUTION), \
        "the student notebook is out of date: run python scripts/make_student.py"
    student = nbformat.read(STUDENT, as_version=4)
    text = "\n".join(c.source for c in student.cells)
    assert "BEGIN SOLUTION" not in text and "END SOLUTION" not in text
    assert all(not c.get("outputs") for c in student.cells if c.cell_type == "code")
    tasks = {c.metadata.get("coursekit", {}).get("task") for c in student.cells}
    assert set(hw.TASKS) <= tasks, "every task keeps its metadata for the grader"
