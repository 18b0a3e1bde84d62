"""The homework's scorers at the real thresholds (not fast mode's), its registry, and its checks.

Every scorer has a test in which a wrong answer earns less than full credit: a scorer that
returned full credit unconditionally would fail it.
"""

import pytest
import torch
from torch.nn import functional as F

from coursekit import homework as hw
from coursekit import scorers as sc
from coursekit.models import build_model

GOOD_CONFIG = dict(patch_size=7, dim=64, depth=4, heads=4, dim_head=16, mlp_dim=128)


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
    assert sc.score_patchify(cases, right)["credit"] == 1
    swapped = sc.score_patchify(cases, [r.transpose(1, 2) for r in right])  # the transpose loses
    assert swapped["credit"] == 0
    assert "expected shape [3, 16, 49], got [3, 49, 16]" in swapped["feedback"]
    # right shape, pixels inside each patch in column order: half the credit and a precise hint
    columns = [x.reshape(3, 1, 28 // p, p, 28 // p, p).permute(0, 2, 4, 5, 3, 1).reshape(r.shape)
               for (x, p), r in zip(cases, right)]
    result = sc.score_patchify(cases, columns)
    assert result["credit"] == 0.5 and "wrong order" in result["feedback"]
    assert sc.score_patchify(cases, ["NotImplementedError: x"] * 3)["credit"] == 0
    assert "expected 3 outputs, got str" in sc.score_patchify(cases, "oops")["feedback"]  # wrong type


def test_score_config():
    assert sc.score_config(GOOD_CONFIG, 16)["credit"] == 1
    assert sc.score_config(GOOD_CONFIG, 49)["credit"] == 0.5  # wrong count
    assert sc.score_config(GOOD_CONFIG, 16.0)["credit"] == 0.5  # a float is not a count
    assert sc.score_config(dict(GOOD_CONFIG, patch_size=14), 4)["credit"] == 0.5  # 4 patches: too few
    assert "does not divide" in sc.score_config(dict(GOOD_CONFIG, patch_size=5), 16)["feedback"]
    assert sc.score_config(dict(GOOD_CONFIG, patch_size=5), 25)["credit"] == 0
    over = sc.score_config(dict(GOOD_CONFIG, dim=512, mlp_dim=2048), 16)
    assert over["credit"] == 0.5 and "over the budget of 1,199,882" in over["feedback"]
    assert "got str" in sc.score_config("not a dict", 16)["feedback"]
    assert sc.score_config({"patch_size": "7"}, 16)["credit"] == 0


def test_score_data():
    targets = torch.arange(100) % 10
    good = torch.stack([torch.nonzero(targets == c).flatten()[:4] for c in range(10)])
    assert sc.score_data(good, targets, 4)["credit"] == 1
    assert "row 0 should hold only 'T-shirt/top'" in sc.score_data(good.roll(1, 0), targets, 4)["feedback"]
    assert sc.score_data(good[:, :3], targets, 4)["credit"] == 0
    assert sc.score_data(good[:, :1].repeat(1, 4), targets, 4)["credit"] == 0  # repeated images
    assert "expected an integer tensor" in sc.score_data(good.float(), targets, 4)["feedback"]
    assert "got list" in sc.score_data(good.tolist(), targets, 4)["feedback"]


def test_score_training_at_the_real_thresholds():
    targets, floors = hw.THRESHOLDS, hw.FLOORS

    def score(vit, cnn):
        return sc.score_training({"ViT": {"acc": vit}, "CNN": {"acc": cnn}}, [], targets, floors)

    assert score(0.90, 0.91)["credit"] == 1  # at the targets: everything
    assert score(0.95, 0.99)["credit"] == 1
    just_under = score(0.8999, 0.91)
    assert just_under["credit"] < 1 and "0.8999 < 0.90" in just_under["feedback"]
    assert score(0.85, 0.88)["credit"] == 0  # at the floors: nothing
    assert score(0.5, 0.5)["credit"] == 0
    halfway = score(0.875, 0.88)  # ViT halfway between its floor and its target, CNN at its floor
    assert halfway["credit"] == pytest.approx(0.25) and "50% of its share" in halfway["feedback"]
    assert sc.score_training({}, ["vit: NameError"], targets, floors)["credit"] == 0  # no models
    points = hw.TASKS["training"].points
    assert hw.result("training", score(0.875, 0.91))["points"] == pytest.approx(0.75 * points)


def test_fast_mode_lowers_the_training_targets(monkeypatch):
    monkeypatch.setenv("COURSEKIT_FAST", "0")
    assert hw.training_targets() == (hw.THRESHOLDS, hw.FLOORS)
    monkeypatch.setenv("COURSEKIT_FAST", "1")
    assert hw.training_targets() == (hw.FAST_THRESHOLDS, hw.FAST_FLOORS)


def test_score_comparison_checks_against_measurements():
    measured = {"ViT": {"acc": 0.9, "params": 100, "ms": 0.8}, "CNN": {"acc": 0.92, "params": 200, "ms": 0.2}}
    rows = [{"model": "ViT", "test_acc": 0.9, "params": 100, "ms_per_image": 1.5},
            {"model": "CNN", "test_acc": 0.92, "params": 200, "ms_per_image": 0.5}]
    assert sc.score_comparison(rows, measured)["credit"] == 1
    inflated = [dict(rows[0], test_acc=0.99), rows[1]]
    result = sc.score_comparison(inflated, measured)
    assert result["credit"] == 0.5 and "the model scores 0.9000" in result["feedback"]
    copied = [dict(rows[0], params=200), rows[1]]
    assert sc.score_comparison(copied, measured)["credit"] == 0.5
    # any positive time no longer passes: the ViT/CNN ratio must be near the one measured here (4x)
    backwards = [dict(rows[0], ms_per_image=0.1), rows[1]]
    result = sc.score_comparison(backwards, measured)
    assert result["credit"] == 0.5 and "measured here it takes 4.00x" in result["feedback"]
    assert sc.score_comparison([dict(rows[0], ms_per_image=-1), rows[1]], measured)["credit"] == 0.5
    assert sc.score_comparison(rows[:1], measured)["credit"] == 0
    assert "got str" in sc.score_comparison("a table", measured)["feedback"]


def test_score_cost_at_its_tolerances():
    full, half = sc.COST_TOLERANCES
    assert sc.score_cost(4.0, 4.0)["credit"] == 1
    assert sc.score_cost(4.0 * full, 4.0)["credit"] == 1 and sc.score_cost(4.0 / full, 4.0)["credit"] == 1
    high = sc.score_cost(4.0 * full * 1.01, 4.0)  # just outside the first factor: half
    assert high["credit"] == 0.5 and "too high" in high["feedback"] and "4.00" not in high["feedback"]
    assert sc.score_cost(4.0 / half, 4.0)["credit"] == 0.5
    low = sc.score_cost(1.0, 4.0)  # "49 patches cost the same as 16": nothing
    assert low["credit"] == 0 and "too low" in low["feedback"]
    for wrong in (0, -3.0, float("nan"), float("inf"), "4", True, None, [4.0]):
        result = sc.score_cost(wrong, 4.0)
        assert result["credit"] == 0 and "positive number" in result["feedback"], wrong


def test_confusion_matrix_counts_by_hand():
    labels = torch.tensor([0, 0, 1, 2, 2, 2])
    predicted = torch.tensor([0, 1, 1, 2, 0, 0])
    want = torch.zeros(3, 3, dtype=torch.long)
    for t, p in zip(labels.tolist(), predicted.tolist()):
        want[t, p] += 1  # row: true class, column: prediction
    assert torch.equal(sc.confusion_matrix(predicted, labels, 3), want)
    assert want[2, 0] == 2 and want[2].sum() == 3


def test_score_confusion_needs_the_matrix_and_the_most_frequent_mistake():
    labels = torch.arange(10).repeat_interleave(20)
    predicted = labels.clone()
    predicted[:3] = 6  # three T-shirts taken for shirts: the most frequent mistake
    predicted[20:22] = 3  # two trousers taken for dresses
    want = sc.confusion_matrix(predicted, labels)
    shirt = ("T-shirt/top", "Shirt")
    assert sc.score_confusion(want, shirt, want)["credit"] == 1
    assert sc.score_confusion(want.clone(), (0, 6), want)["credit"] == 1  # indices work too
    second = sc.score_confusion(want, ("Trouser", "Dress"), want)  # a real mistake, not the most frequent
    assert second["credit"] == 0.5 and "another mistake is more frequent" in second["feedback"]
    diagonal = sc.score_confusion(want, ("Shirt", "Shirt"), want)
    assert diagonal["credit"] == 0.5 and "correct prediction" in diagonal["feedback"]
    swapped = sc.score_confusion(want.T, shirt, want)
    assert swapped["credit"] == 0.5 and "swapped" in swapped["feedback"]
    fewer = sc.score_confusion(want // 2, shirt, want)
    assert fewer["credit"] == 0.5 and "counts 99 predictions; the test set has 200" in fewer["feedback"]
    moved = want.clone()
    moved[0, 0] -= 1
    moved[0, 1] += 1
    assert "2 cells differ" in sc.score_confusion(moved, shirt, want)["feedback"]
    assert "got list" in sc.score_confusion(want.tolist(), shirt, want)["feedback"]
    assert sc.score_confusion(want, "Shirt", want)["credit"] == 0.5
    assert sc.score_confusion("NameError: confusion", ("Coat", "Bag"), want)["credit"] == 0


def test_cost_ratio_measures_more_tokens_as_slower_and_keeps_the_random_state():
    torch.manual_seed(3)
    before = torch.get_rng_state()
    ratio = hw.cost_ratio(dict(GOOD_CONFIG, depth=1, dim=32, mlp_dim=64), batch_size=32, rounds=1)
    assert torch.equal(torch.get_rng_state(), before)
    assert ratio > 1.2  # 50 tokens against 17: a step cannot be as cheap


@pytest.fixture(scope="module")
def tiny_vit_and_images():
    torch.manual_seed(0)
    vit = build_model("vit", "fashion_mnist", **GOOD_CONFIG).eval()
    images = torch.randn(40, 1, 28, 28)
    with torch.no_grad():
        predicted = vit(images).argmax(1)
    return vit, images, predicted


def test_score_attention_needs_a_misclassified_image_and_its_maps(tiny_vit_and_images):
    from coursekit.viz import attention_maps

    vit, images, predicted = tiny_vit_and_images
    labels = predicted.clone()
    labels[3] = (predicted[3] + 1) % 10  # image 3 is the only one the ViT gets wrong
    test_set = list(zip(images, labels.tolist()))
    right = sc.score_attention(3, attention_maps(vit, images[3:4]), vit, test_set)
    assert right["credit"] == 1, right["feedback"]
    correct = sc.score_attention(5, attention_maps(vit, images[5:6]), vit, test_set)
    assert correct["credit"] == 0.5 and "classified correctly" in correct["feedback"]
    other = sc.score_attention(3, attention_maps(vit, images[5:6]), vit, test_set)  # another image's maps
    assert other["credit"] == 0.5 and "does not belong" in other["feedback"]
    assert "got str" in sc.score_attention(3, "NameError: x", vit, test_set)["feedback"]
    assert sc.score_attention("3", None, vit, test_set)["credit"] == 0
    assert sc.score_attention(99, None, vit, test_set)["credit"] == 0
    assert sc.score_attention(3, None, None, test_set)["credit"] == 0


def test_registry_is_complete_and_points_are_stated_in_the_notebook():
    import nbformat

    from coursekit.release import SOLUTIONS
    for name, task in hw.TASKS.items():
        assert task.title and task.points > 0
        assert task.manual or (task.collect and callable(task.score)), name
    nb = nbformat.read(SOLUTIONS / "04_fashion_mnist_homework.ipynb", as_version=4)
    table = nb.cells[2].source
    for number, task in enumerate(hw.TASKS.values(), 1):
        assert f"| {number}. " in table and f"| {task.points:g} |" in table


def test_check_functions_print_feedback_and_never_raise(capsys):
    def broken(images, patch_size):
        raise NotImplementedError("write patchify")

    hw.check_patchify(broken)
    assert "[patchify] 0/2 points" in capsys.readouterr().out
    hw.check_patchify(hw.reference_patchify)
    assert "[patchify] 2/2 points" in capsys.readouterr().out
    assert hw.RESULTS["patchify"]["points"] == 2
