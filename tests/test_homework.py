"""The homework's scorers at the real thresholds (not fast mode's), the grader's registry, and the checks.

Every scorer has a test in which a wrong answer earns less than full credit: a scorer that
returned full credit unconditionally would fail it. The "mutant" tests each catch one plausible
bug in a scorer (a bound made inclusive, a tolerance loosened, a check that stops early).
"""

import pytest
import torch
from einops import rearrange
from torch import nn
from torch.nn import functional as F

from coursekit import feedback
from coursekit import homework as hw
from coursekit import scorers as sc
from coursekit import vitconfig as vc
from coursekit.grading import tasks
from coursekit.models import build_model

GOOD_CONFIG = dict(patch_size=7, dim=64, depth=4, heads=4, dim_head=16, mlp_dim=128)


def patchify(images, p):
    """A right answer, written here as a learner would (no scorer computes one)."""
    return rearrange(images, "b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=p, p2=p)


def by_hand_confusion(predicted, labels, n=10):
    want = torch.zeros(n, n, dtype=torch.long)
    for t, q in zip(labels.tolist(), predicted.tolist()):
        want[t, q] += 1  # row: true class, column: prediction
    return want


def test_score_patchify_accepts_independent_right_answers():
    cases = hw.patchify_cases(0)
    unfolded = [F.unfold(x, kernel_size=p, stride=p).transpose(1, 2) for x, p in cases]  # [B, N, C*p*p]
    assert sc.score_patchify(cases, unfolded)["credit"] == 1
    by_loops = []
    for x, p in cases:  # patch by patch, row by row
        B, C, H, W = x.shape
        by_loops.append(torch.stack([x[:, :, i:i + p, j:j + p].permute(0, 2, 3, 1).reshape(B, -1)
                                     for i in range(0, H, p) for j in range(0, W, p)], 1))
    assert sc.score_patchify(cases, by_loops)["credit"] == 1
    three = [(torch.randperm(2 * 3 * 8 * 8).float().reshape(2, 3, 8, 8), 4)]  # channels last in a patch
    assert sc.score_patchify(three, [patchify(*three[0])])["credit"] == 1
    channels_first = three[0][0].reshape(2, 3, 2, 4, 2, 4).permute(0, 2, 4, 1, 3, 5).reshape(2, 4, 48)
    assert sc.score_patchify(three, [channels_first])["credit"] == 0.5


def test_score_patchify_checks_every_patch_size_and_exact_values():
    cases = hw.patchify_cases(1)
    right = [patchify(x, p) for x, p in cases]
    only_first = right[:1] + [r.flip(1) for r in right[1:]]  # right for patch size 7 only
    result = sc.score_patchify(cases, only_first)
    assert result["credit"] == 0.5 and "patch_size=4" in result["feedback"]
    nudged = [r + 1e-3 for r in right]  # patchify moves pixels; it never changes them
    result = sc.score_patchify(cases, nudged)
    assert result["credit"] == 0.5 and "values changed" in result["feedback"]
    assert sc.score_patchify(cases, [r.double() for r in right])["credit"] == 1  # any dtype


def test_score_patchify_points_and_feedback():
    cases = hw.patchify_cases(0)
    right = [patchify(x, p) for x, p in cases]
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
    assert vc.score_config(GOOD_CONFIG, 16)["credit"] == 1
    assert vc.score_config(GOOD_CONFIG, 49)["credit"] == 0.5  # wrong count
    assert vc.score_config(GOOD_CONFIG, 16.0)["credit"] == 0.5  # a float is not a count
    assert vc.score_config(dict(GOOD_CONFIG, patch_size=14), 4)["credit"] == 0.5  # 4 patches: too few
    assert "does not divide" in vc.score_config(dict(GOOD_CONFIG, patch_size=5), 16)["feedback"]
    assert vc.score_config(dict(GOOD_CONFIG, patch_size=5), 25)["credit"] == 0
    over = vc.score_config(dict(GOOD_CONFIG, dim=512, mlp_dim=2048), 16)
    assert over["credit"] == 0.5 and "over the budget of 1,199,882" in over["feedback"]
    assert "got str" in vc.score_config("not a dict", 16)["feedback"]
    assert vc.score_config({"patch_size": "7"}, 16)["credit"] == 0
    # a configuration that does not build earns nothing, whatever its wrong value says
    for depth in ("x", "failed", 0):
        assert vc.score_config(dict(GOOD_CONFIG, depth=depth), 16)["credit"] == 0


def test_config_rules_at_their_edges_and_what_their_feedback_shows(monkeypatch):
    without_depth = {k: v for k, v in GOOD_CONFIG.items() if k != "depth"}
    assert vc.vit_problem(without_depth) is None  # build_model's own depth applies
    assert "whole number" not in (vc.vit_problem(dict(GOOD_CONFIG, depth=vc.MAX_DEPTH)) or "")  # the limit is allowed
    assert "depth='deep' must be a whole number" in vc.vit_problem(dict(GOOD_CONFIG, depth="deep"))
    failed = vc.vit_problem(dict(GOOD_CONFIG, colour=True))
    assert "failed: TypeError: " in failed and "unexpected keyword argument 'colour'" in failed  # type and message
    assert vc.patches(4) == 49 and type(vc.patches(4)) is int
    assert "n_patches=49 is not the number of patches" in vc.score_config(GOOD_CONFIG, 49)["feedback"]
    params = vc.score_config(GOOD_CONFIG, 16)["feedback"].split(", ")[1].split()[0]  # "valid: 16 patches, N parameters"
    monkeypatch.setattr(vc, "PARAM_BUDGET", int(params.replace(",", "")))
    assert vc.vit_problem(GOOD_CONFIG) is None  # exactly at the budget: allowed
    monkeypatch.setattr(vc, "OPS_FACTOR", 1)
    assert vc.vit_problem(GOOD_CONFIG, lambda model: 5e6) is None  # as many operations as the CNN: allowed
    over = vc.vit_problem(GOOD_CONFIG, lambda model: 6e6 if model.__class__.__name__ == "ViT" else 5e6)
    assert over.startswith("6.0 M operations per image is over the budget of 5.0 M (1 times the CNN's)")


def test_a_config_too_costly_to_run_is_refused_without_building_it():
    # 1.2M parameters but 785 tokens of 299,000-wide heads: about 739 G operations per image. Built
    # for real and run on 10,000 test images it would stall the grader; on the meta device it costs nothing.
    import resource
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    costly = dict(patch_size=1, dim=1, heads=1, dim_head=299_000, depth=1, mlp_dim=1)
    outcome = vc.score_config(costly, 784, tasks.count_ops)  # as the grader scores it
    assert outcome["credit"] == 0.5 and "over the budget of 95.9 M" in outcome["feedback"]  # the count is right
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KB: no real weights
    assert vc.score_config(costly, 784)["credit"] == 1  # the notebook's check cannot count operations
    assert "from 1 to 64" in vc.vit_problem(dict(GOOD_CONFIG, depth=10**9))
    assert vc.vit_problem(dict(GOOD_CONFIG, patch_size=4), tasks.count_ops) is None  # 49 patches fit
    cnn = build_model("cnn", vc.DATASET)
    assert tasks.count_ops(cnn) == tasks.flops(cnn, torch.zeros(1, 1, 28, 28)) == 23_984_896  # meta = real


def test_feedback_echoes_at_most_a_short_escaped_form_of_a_value():
    assert feedback.show("a" * 100) == "'" + "a" * 36 + "..."  # 40 characters, written out
    assert len(feedback.show("b" * 10**6, limit=12)) == 12
    assert feedback.show("c" * 38) == "'" + "c" * 38 + "'"  # exactly 40 characters: shown whole
    assert feedback.show("short") == "'short'" and feedback.show(3) == "3" and feedback.show(None) == "None"
    assert feedback.show("\x1b[2J") == "'\\x1b[2J'"  # repr: an escape sequence stays text
    assert feedback.show(torch.zeros(3, 4)) == "<[3, 4]>" and feedback.show([1, 2]) == "<list>"
    assert feedback.credit(1.5, ["a", "b"]) == {"credit": 1.0, "feedback": "a; b"}
    assert feedback.credit(-2, []) == {"credit": 0.0, "feedback": ""}


def test_score_data():
    targets = torch.arange(100) % 10
    good = torch.stack([torch.nonzero(targets == c).flatten()[:4] for c in range(10)])
    assert sc.score_data(good, targets, 4)["credit"] == 1
    assert "row 0 should hold only 'T-shirt/top'" in sc.score_data(good.roll(1, 0), targets, 4)["feedback"]
    assert sc.score_data(good[:, :3], targets, 4)["credit"] == 0
    assert sc.score_data(good[:, :1].repeat(1, 4), targets, 4)["credit"] == 0  # repeated images
    assert "expected an integer tensor" in sc.score_data(good.float(), targets, 4)["feedback"]
    assert "got list" in sc.score_data(good.tolist(), targets, 4)["feedback"]
    past_the_end = good.clone()
    past_the_end[0, 0] = len(targets)  # one index too far: a clear zero, never an IndexError
    assert "indices must lie in [0, 99]" in sc.score_data(past_the_end, targets, 4)["feedback"]
    assert "indices must lie" in sc.score_data(good - 100, targets, 4)["feedback"]


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
    # a model far below its floor earns nothing, and takes nothing from the other's earned share
    assert score(0.10, 0.91)["credit"] == 0.5 and score(0.90, 0.10)["credit"] == 0.5
    points = hw.POINTS["training"]
    assert hw.result("training", score(0.875, 0.91))["points"] == pytest.approx(0.75 * points)


def test_fast_mode_lowers_the_training_targets(monkeypatch):
    monkeypatch.setenv("COURSEKIT_FAST", "0")
    assert hw.training_targets() == (hw.THRESHOLDS, hw.FLOORS)
    monkeypatch.setenv("COURSEKIT_FAST", "1")
    assert hw.training_targets() == (hw.FAST_THRESHOLDS, hw.FAST_FLOORS)


MEASURED = {"ViT": {"acc": 0.9, "params": 100, "mflops": 15.9}, "CNN": {"acc": 0.92, "params": 200, "mflops": 24.0}}
ROWS = [{"model": "ViT", "test_acc": 0.9, "params": 100, "mflops_per_image": 15.9, "ms_per_image": 1.5},
        {"model": "CNN", "test_acc": 0.92, "params": 200, "mflops_per_image": 24.0, "ms_per_image": 0.5}]


def test_score_comparison_checks_against_measurements():
    assert sc.score_comparison(ROWS, MEASURED)["credit"] == 1
    inflated = [dict(ROWS[0], test_acc=0.99), ROWS[1]]
    result = sc.score_comparison(inflated, MEASURED)
    assert result["credit"] == 0.5 and "the model scores 0.9000" in result["feedback"]
    copied = [dict(ROWS[0], params=200), ROWS[1]]
    assert sc.score_comparison(copied, MEASURED)["credit"] == 0.5
    # any time is fine (it depends on the machine), but the operation count must be the model's
    assert sc.score_comparison([dict(ROWS[0], ms_per_image=40.0), ROWS[1]], MEASURED)["credit"] == 1
    swapped = [dict(ROWS[0], mflops_per_image=24.0), dict(ROWS[1], mflops_per_image=15.9)]
    result = sc.score_comparison(swapped, MEASURED)
    assert result["credit"] == 0.5 and "operation count" in result["feedback"]
    assert sc.score_comparison([dict(ROWS[0], ms_per_image=-1), ROWS[1]], MEASURED)["credit"] == 0.5
    assert sc.score_comparison(ROWS[:1], MEASURED)["credit"] == 0
    assert "got str" in sc.score_comparison("a table", MEASURED)["feedback"]
    # the notebook's own check has no counts: it checks the rest
    no_counts = {name: {"acc": m["acc"], "params": m["params"]} for name, m in MEASURED.items()}
    assert sc.score_comparison([dict(ROWS[0], mflops_per_image=1.0), ROWS[1]], no_counts)["credit"] == 1


def test_score_comparison_mutants():
    zero = sc.score_comparison([dict(ROWS[0], ms_per_image=0), ROWS[1]], MEASURED)  # 0 ms is no time
    assert zero["credit"] == 0.5 and "positive time" in zero["feedback"]
    low = sc.score_comparison([dict(ROWS[0], test_acc=0.9 - 2 * sc.ACC_TOLERANCE), ROWS[1]], MEASURED)
    assert low["credit"] == 0.5  # an accuracy too low is as wrong as one too high
    assert sc.score_comparison([dict(ROWS[0], test_acc=0.9 - sc.ACC_TOLERANCE / 2), ROWS[1]], MEASURED)["credit"] == 1
    missing = sc.score_comparison(ROWS, {"ViT": MEASURED["ViT"]})  # no trained CNN: no cost half either
    assert missing["credit"] == 0 and "CNN: no trained model" in missing["feedback"]


def test_score_cost_at_its_tolerances():  # the grader's count: no time, so no load, moves it
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


class FixedPredictions(nn.Module):
    """A 'model' whose predictions are given: logits with a 1 at each image's prediction."""

    def __init__(self, predicted):
        super().__init__()
        self.predicted, self.seen = predicted, 0
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, images):
        out = F.one_hot(self.predicted[self.seen:self.seen + len(images)], 10).float()
        self.seen += len(images)
        return out


def test_the_graders_confusion_matrix_counts_by_hand():
    labels = torch.tensor([0, 0, 1, 2, 2, 2])
    predicted = torch.tensor([0, 1, 1, 2, 0, 0])
    loader = [(torch.zeros(4, 1, 28, 28), labels[:4]), (torch.zeros(2, 1, 28, 28), labels[4:])]
    got = tasks.confusion_of(FixedPredictions(predicted), loader)
    assert torch.equal(got, by_hand_confusion(predicted, labels))
    assert got[2, 0] == 2 and got[2].sum() == 3


def test_score_confusion_mutants():
    labels = torch.arange(10).repeat_interleave(20)
    predicted = labels.clone()
    predicted[:3] = 6  # T-shirt -> shirt three times
    predicted[40:43] = 4  # pullover -> coat three times: tied for the most frequent mistake
    want = by_hand_confusion(predicted, labels)
    assert sc.score_confusion(want, ("T-shirt/top", "Shirt"), want)["credit"] == 1  # the first of the tie
    assert sc.score_confusion(want, ("Pullover", "Coat"), want)["credit"] == 1  # the other one counts too
    unknown = sc.score_confusion(want, ("Jacket", "Coat"), want)  # scored, not raised
    assert unknown["credit"] == 0.5 and "names from CLASSES" in unknown["feedback"]
    assert sc.score_confusion(want, (None, {}), want)["credit"] == 0.5


def test_score_confusion_totals_checks_what_the_notebook_can():
    labels = torch.arange(10).repeat_interleave(20)
    predicted = labels.clone()
    predicted[:3] = 6
    matrix = by_hand_confusion(predicted, labels)
    per_class, correct = torch.bincount(labels, minlength=10), int((predicted == labels).sum())
    assert sc.score_confusion_totals(matrix, ("T-shirt/top", "Shirt"), per_class, correct)["credit"] == 1
    swapped = sc.score_confusion_totals(matrix.T, ("Shirt", "T-shirt/top"), per_class, correct)
    assert swapped["credit"] == 0.5 and "row 0 (T-shirt/top) counts 17 images" in swapped["feedback"]
    moved = matrix.clone()
    moved[1, 1] -= 1
    moved[1, 2] += 1  # rows still right, one right answer fewer
    assert "the diagonal counts 196 right answers; your ViT gets 197" in \
        sc.score_confusion_totals(moved, (0, 6), per_class, correct)["feedback"]
    # counts are counts in any dtype, for the check and the grader alike; fractions are not
    assert sc.score_confusion_totals(matrix.float(), (0, 6), per_class, correct)["credit"] == 1
    assert sc.score_confusion(matrix.float(), (0, 6), matrix)["credit"] == 1
    halves = matrix.float() + 0.5
    assert sc.score_confusion_totals(halves, (0, 6), per_class, correct)["credit"] == 0
    assert sc.score_confusion(halves, (0, 6), matrix)["credit"] == 0.5  # the pair is right


def test_score_confusion_needs_the_matrix_and_the_most_frequent_mistake():
    labels = torch.arange(10).repeat_interleave(20)
    predicted = labels.clone()
    predicted[:3] = 6  # three T-shirts taken for shirts: the most frequent mistake
    predicted[20:22] = 3  # two trousers taken for dresses
    want = by_hand_confusion(predicted, labels)
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


def vit_flops(config, side=28, channels=1, classes=10):
    """Operations of one image's forward pass through vit-pytorch's ViT, in closed form (2 per multiply-add)."""
    p, D, L = config["patch_size"], config["dim"], config["depth"]
    inner, hidden = config["heads"] * config["dim_head"], config["mlp_dim"]
    P = (side // p) ** 2
    T = P + 1  # and CLS
    per_layer = T * D * 3 * inner + 2 * T * T * inner + T * inner * D + 2 * T * D * hidden
    return 2 * (P * p * p * channels * D + L * per_layer + D * classes)


def test_the_graders_operation_counts_match_the_closed_form_and_keep_the_random_state():
    for config in (GOOD_CONFIG, dict(GOOD_CONFIG, patch_size=4), dict(GOOD_CONFIG, dim=96, heads=3, dim_head=32)):
        vit = build_model("vit", "fashion_mnist", **config)
        assert tasks.flops(vit, torch.zeros(1, 1, 28, 28)) == vit_flops(config)
    torch.manual_seed(3)
    before = torch.get_rng_state()
    ratio = tasks.flop_ratio(GOOD_CONFIG)
    assert torch.equal(torch.get_rng_state(), before)
    assert ratio == pytest.approx(vit_flops(dict(GOOD_CONFIG, patch_size=4)) / vit_flops(GOOD_CONFIG))
    assert 50 / 17 * 0.9 < ratio < (50 / 17) ** 2  # near linear in the tokens at this width


def test_check_cost_only_says_whether_a_ratio_is_plausible(capsys):
    checks = hw.Checks()
    checks.cost(3.2)  # plausible, but the grader's count may give it less: "up to"
    assert "[cost] up to 2/2 points: cost_ratio=3.20 is plausible (the grader also checks" in capsys.readouterr().out
    assert checks.summary().startswith("up to 2/")
    for wrong in (1.0, 12.0, "3.2", True, None):
        checks.cost(wrong)
        assert checks.results["cost"]["points"] == 0
        assert "[cost] 0/2 points" in capsys.readouterr().out
    assert checks.summary().startswith("0/")  # nothing the grader could lower


@pytest.fixture(scope="module")
def tiny_vit_and_images():
    torch.manual_seed(0)
    vit = build_model("vit", "fashion_mnist", **GOOD_CONFIG).eval()
    images = torch.randn(40, 1, 28, 28)
    with torch.no_grad():
        predicted = vit(images).argmax(1)
    return vit, images, predicted


def test_score_attention_needs_a_misclassified_image_and_its_maps(tiny_vit_and_images):
    from coursekit.maps import attention_maps

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

    from coursekit.grading.release import SOLUTIONS
    assert list(tasks.TASKS) == list(hw.POINTS)
    for name, task in tasks.TASKS.items():
        assert task.title and task.points == hw.POINTS[name] > 0
        assert task.manual == (name in hw.MANUAL)
        assert task.manual or (task.collect and callable(task.score)), name
    nb = nbformat.read(SOLUTIONS / "04_fashion_mnist_homework.ipynb", as_version=4)
    table = nb.cells[0].source  # the title cell, first
    for number, task in enumerate(tasks.TASKS.values(), 1):
        assert f"| {number}. " in table and f"| {task.points:g} |" in table


def test_check_functions_print_feedback_and_never_raise(capsys):
    def broken(images, patch_size):
        raise NotImplementedError("write patchify")

    checks, other = hw.Checks(), hw.Checks()
    checks.patchify(broken)
    assert "[patchify] 0/2 points" in capsys.readouterr().out
    checks.patchify(patchify)
    assert "[patchify] 2/2 points" in capsys.readouterr().out
    assert checks.results["patchify"]["points"] == 2 and other.results == {}
    auto = sum(p for t, p in hw.POINTS.items() if t not in hw.MANUAL)
    assert checks.summary().startswith(f"2/{auto:g} automatic points") and other.summary().startswith("0/")
