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


def lines(result):
    """A scorer's feedback, one line per message (the scorers join them with '; ')."""
    return result["feedback"].split("; ")


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


def test_score_patchify_feedback_names_each_patch_size_and_what_went_wrong():
    cases = hw.patchify_cases(0)
    right = [patchify(x, p) for x, p in cases]
    assert lines(sc.score_patchify(cases, right)) == ["shapes and values right for patch sizes [7, 4, 14]"]
    swapped = sc.score_patchify(cases, [r.transpose(1, 2) for r in right])  # every size is reported, with a hint
    hint = " (axes swapped? the patches come second, their pixels last)"
    assert lines(swapped) == ["patch_size=7: expected shape [3, 16, 49], got [3, 49, 16]" + hint,
                              "patch_size=4: expected shape [3, 49, 16], got [3, 16, 49]" + hint,
                              "patch_size=14: expected shape [3, 4, 196], got [3, 196, 4]" + hint]
    cut = sc.score_patchify(cases, [right[0][..., :-1], right[1].tolist(), right[2]])  # no hint for other shapes
    assert cut["credit"] == 0
    assert lines(cut) == ["patch_size=7: expected shape [3, 16, 49], got [3, 16, 48]",
                          "patch_size=4: expected shape [3, 49, 16], got list"]
    raised = sc.score_patchify(cases, [right[0], "NotImplementedError: x", right[2]])
    assert raised["credit"] == 0
    assert lines(raised) == ["patchify(images [3, 1, 28, 28], 4) raised 'NotImplementedError: x'"]
    for shifted in ([r + 1 for r in right], [r - 1 for r in right]):  # one past the last pixel value, one below 0
        result = sc.score_patchify(cases, shifted)
        assert result["credit"] == 0.5
        assert lines(result) == ["shapes right (half the points)"] + [
            f"patch_size={p}: shape right, values wrong: values changed: patchify only moves pixels, "
            "it must not compute new values" for p in (7, 4, 14)]
    reordered = sc.score_patchify(cases, [right[0].flip(1)] + right[1:])
    assert reordered["credit"] == 0.5 and lines(reordered) == [
        "shapes right (half the points)", "patch_size=7: shape right, values wrong: patches are in the wrong "
        "order or mix pixels of different patches (go row by row)"]
    columns = [x.reshape(3, 1, 28 // p, p, 28 // p, p).permute(0, 2, 4, 5, 3, 1).reshape(r.shape)
               for (x, p), r in zip(cases, right)]
    assert lines(sc.score_patchify(cases, columns[:1] + right[1:]))[1] == (
        "patch_size=7: shape right, values wrong: each patch has the right pixels in the wrong order "
        "(flatten each patch row by row)")


def test_score_patchify_wants_one_output_per_case_in_a_list():
    cases = hw.patchify_cases(0)
    right = [patchify(x, p) for x, p in cases]
    for wrong, got in ((right[:2], "list"), (tuple(right), "tuple"), ("oops", "str")):
        result = sc.score_patchify(cases, wrong)
        assert result == {"credit": 0, "feedback": f"expected 3 outputs, got {got}"}


def test_patchify_cases_depend_on_the_seed_only_and_number_every_pixel():
    torch.manual_seed(1)
    first = hw.patchify_cases(5)
    torch.manual_seed(2)
    state = torch.get_rng_state()
    again = hw.patchify_cases(5)
    assert torch.equal(torch.get_rng_state(), state)  # the learner's random state is left alone
    assert [p for _, p in first] == [p for _, p in again] == [7, 4, 14]
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(first, again))
    assert not torch.equal(first[0][0], hw.patchify_cases(6)[0][0])
    for images, _ in first:
        assert images.shape == (3, 1, 28, 28)
        assert torch.equal(images.flatten().sort().values, torch.arange(3 * 28 * 28).float())


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


def test_score_data_gives_nothing_for_a_wrong_answer_and_says_what_is_wrong():
    targets = torch.arange(100) % 10  # image i is of class i % 10
    good = torch.stack([torch.nonzero(targets == c).flatten()[:4] for c in range(10)])
    assert lines(sc.score_data(good, targets, 4)) == ["all 10 rows hold images of their class"]
    mixed = good.clone()
    mixed[0, 1], mixed[0, 2] = 3, 5  # a Dress, then a Sandal, among the T-shirts: the first is named
    assert sc.score_data(mixed, targets, 4) == {"credit": 0, "feedback": (
        "row 0 should hold only 'T-shirt/top' (0) but holds 'Dress' (3): select by dataset.targets == c")}
    one = good.clone()
    one[2, 3] = 17  # a single Sneaker among the pullovers
    assert sc.score_data(one, targets, 4)["feedback"].startswith(
        "row 2 should hold only 'Pullover' (2) but holds 'Sneaker' (7)")
    assert sc.score_data(good.tolist(), targets, 4) == {
        "credit": 0, "feedback": "expected an integer tensor of shape [10, 4], got list"}
    assert sc.score_data(good[:, :3], targets, 4)["feedback"] == \
        "expected shape [10, 4] (classes x examples), got [10, 3]"
    assert sc.score_data(good - 100, targets, 4)["credit"] == 0
    assert sc.score_data(good[:, :1].repeat(1, 4), targets, 4)["feedback"] == \
        "a row repeats an image: pick k different images per class"


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


def test_score_training_shares_and_lines_per_model():
    targets, floors = hw.THRESHOLDS, hw.FLOORS  # ViT 0.85 -> 0.90, CNN 0.88 -> 0.91
    above = sc.score_training({"ViT": {"acc": 0.95}, "CNN": {"acc": 0.88}}, [], targets, floors)
    assert above["credit"] == 0.5  # beyond its target a model earns its own share, not the other's
    at = sc.score_training({"ViT": {"acc": 0.90}, "CNN": {"acc": 0.91}}, [], targets, floors)
    assert lines(at) == ["ViT test accuracy 0.9000 >= 0.90", "CNN test accuracy 0.9100 >= 0.91"]
    only_cnn = sc.score_training({"CNN": {"acc": 0.91}}, ["vit: NameError"], targets, floors)
    assert only_cnn["credit"] == 0.5  # a missing ViT does not stop the CNN from being scored
    assert lines(only_cnn) == ["vit: NameError", "CNN test accuracy 0.9100 >= 0.91"]
    # the grader's measurements: an honest model (lower on the test images) gets no warning
    honest = {"ViT": {"acc": 0.9093, "n": 6000, "test_acc": 0.9051, "test_n": 10_000}}
    assert lines(sc.score_training(honest, [], {"ViT": 0.90}, {"ViT": 0.85})) == ["ViT test accuracy 0.9051 >= 0.90"]
    attack = {"ViT": {"acc": 0.8627, "n": 6000, "test_acc": 0.9008, "test_n": 10_000}}
    warned = sc.score_training(attack, [], {"ViT": 0.90}, {"ViT": 0.85})["feedback"]
    # 0.8627 + 2 * sqrt(p (1 - p) (1/10000 + 1/6000)), p = (0.9008 + 0.8627) / 2: 0.87325
    assert warned.startswith("ViT scores 0.9008 on the test images but 0.8627 on held-out training images like them: "
                             "counted as 0.8732 (at most 2 standard errors above; was it trained on the test images?); "
                             "ViT test accuracy 0.8732 < 0.90: 46% of its share")


def test_credited_accuracy_in_closed_form():
    # p = 0.9, margin = 2 * sqrt(0.9 * 0.1 * (1/100 + 1/100)) = 0.0848528...
    assert sc.credited_accuracy(0.95, 100, 0.85, 100) == pytest.approx(0.9348528137423857, abs=1e-12)
    assert sc.credited_accuracy(0.85, 100, 0.95, 100) == 0.85  # below the held-out accuracy: as it is
    # p = 0.5, margin = 2 * sqrt(0.25 * (1/4 + 1/4)) = 0.7071...
    assert sc.credited_accuracy(1.0, 4, 0.0, 4) == pytest.approx(0.7071067811865476, abs=1e-12)
    # with one image on either side the margin is 2 * sqrt(0.25 * (1 + 1/4)) = 1.118: nothing is capped
    assert sc.credited_accuracy(1.0, 1, 0.0, 4) == 1.0 and sc.credited_accuracy(1.0, 4, 0.0, 1) == 1.0


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


def test_score_comparison_edges_and_what_its_feedback_shows():
    assert lines(sc.score_comparison(ROWS, MEASURED)) == [
        "parameters, accuracies and costs are consistent with the models"]
    assert sc.score_comparison([1, 2], MEASURED) == {
        "credit": 0, "feedback": "results must be a list of dicts, one per model, got list"}
    assert sc.score_comparison("a table", MEASURED)["credit"] == 0
    wrong_models = sc.score_comparison([ROWS[0], dict(ROWS[1], model="RNN")], MEASURED)
    assert lines(wrong_models) == ["expected rows for models 'ViT' and 'CNN', got 'RNN, ViT'"]
    assert lines(sc.score_comparison([], MEASURED)) == ["expected rows for models 'ViT' and 'CNN', got 'none'"]
    inflated = sc.score_comparison([dict(ROWS[0], test_acc=0.99), ROWS[1]], MEASURED)
    assert lines(inflated) == ["ViT: test_acc=0.9900, but the model scores 0.9000 on the test set"]  # no "consistent"
    copied = sc.score_comparison([dict(ROWS[0], params=200), ROWS[1]], MEASURED)
    assert lines(copied) == ["ViT: params=200, but the model has 100"]
    for ms in (10_000, -1):  # ten seconds an image is no measurement of these models either
        slow = sc.score_comparison([dict(ROWS[0], ms_per_image=ms), ROWS[1]], MEASURED)
        assert slow["credit"] == 0.5
        assert lines(slow) == [f"ViT: ms_per_image={ms} should be a positive time in milliseconds"]
    assert sc.score_comparison([dict(ROWS[0], ms_per_image=9_999.0), ROWS[1]], MEASURED)["credit"] == 1
    for acc in (1.5, "0.9", None):
        result = sc.score_comparison([dict(ROWS[0], test_acc=acc), ROWS[1]], MEASURED)
        assert result["credit"] == 0.5
        assert lines(result) == [f"ViT: test_acc={feedback.show(acc)} should be a fraction in [0, 1]"]
    for edge in (0.0, 1):  # both ends of [0, 1] are accuracies
        measured = dict(MEASURED, ViT=dict(MEASURED["ViT"], acc=float(edge)))
        assert sc.score_comparison([dict(ROWS[0], test_acc=edge), ROWS[1]], measured)["credit"] == 1
    # exactly ACC_TOLERANCE (0.005) off is accepted, a little more is not
    measured = dict(MEASURED, ViT=dict(MEASURED["ViT"], acc=0.01))
    assert sc.score_comparison([dict(ROWS[0], test_acc=0.005), ROWS[1]], measured)["credit"] == 1
    assert sc.score_comparison([dict(ROWS[0], test_acc=0.0049), ROWS[1]], measured)["credit"] == 0.5
    # the operation count may be 1% off either way (100 M counted), not more
    measured = dict(MEASURED, ViT=dict(MEASURED["ViT"], mflops=100.0))
    for mflops in (101.0, 99.0):
        assert sc.score_comparison([dict(ROWS[0], mflops_per_image=mflops), ROWS[1]], measured)["credit"] == 1
    off = sc.score_comparison([dict(ROWS[0], mflops_per_image=101.5), ROWS[1]], measured)
    assert off["credit"] == 0.5 and lines(off) == ["ViT: mflops_per_image=101.5 is not the operation count of one "
                                                   "image's forward pass (FlopCounterMode, batch 1, in millions)"]
    no_vit = sc.score_comparison([ROWS[0], dict(ROWS[1], params=7)], {"CNN": MEASURED["CNN"]})
    assert lines(no_vit) == ["ViT: no trained model to compare with", "CNN: params=7, but the model has 200"]


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


def test_score_cost_feedback_says_which_way_without_the_count():
    assert lines(sc.score_cost(4.0, 4.0)) == ["cost_ratio=4.00 is within a factor 1.05 of the grader's count"]
    assert sc.score_cost(4.4, 4.0)["feedback"] == (
        "cost_ratio=4.40 is too high: more than a factor 1.05 off the grader's count, within 1.25 (half the points); "
        "count with FlopCounterMode")  # one line with a '; ' inside
    assert lines(sc.score_cost(3.6, 4.0))[0].startswith("cost_ratio=3.60 is too low: more than a factor 1.05 off")
    assert lines(sc.score_cost(1.0, 4.0)) == ["cost_ratio=1.00 is too low by more than a factor 1.25: count the "
                                              "operations of each configuration with FlopCounterMode"]
    assert lines(sc.score_cost(10.0, 4.0))[0].startswith("cost_ratio=10.00 is too high by more than a factor 1.25")
    assert lines(sc.score_cost("4", 4.0)) == ["cost_ratio must be a positive number (a ratio of two counts), got '4'"]


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


def three_shirts_two_dresses() -> torch.Tensor:
    """The confusion matrix of 20 test images per class: three T-shirts taken for shirts (the most
    frequent mistake) and two trousers taken for dresses."""
    labels = torch.arange(10).repeat_interleave(20)
    predicted = labels.clone()
    predicted[:3] = 6
    predicted[20:22] = 3
    return by_hand_confusion(predicted, labels)


def test_score_confusion_needs_the_matrix_and_the_most_frequent_mistake():
    want, shirt = three_shirts_two_dresses(), ("T-shirt/top", "Shirt")
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


def test_score_confusion_feedback_and_what_counts_as_a_pair():
    want, shirt = three_shirts_two_dresses(), ("T-shirt/top", "Shirt")
    assert lines(sc.score_confusion(want, shirt, want)) == ["the matrix and the most frequent mistake are right"]
    assert lines(sc.score_confusion(want.T, shirt, want)) == [
        "rows and columns are swapped: a row is the true class, a column the prediction"]
    assert lines(sc.score_confusion(want, ("Trouser", "Dress"), want)) == [
        "your ViT takes a Trouser for a Dress 2 times: another mistake is more frequent"]
    assert lines(sc.score_confusion(want[:, :9], shirt, want)) == ["expected a [10, 10] tensor of counts, got [10, 9]"]
    assert sc.score_confusion(want.to(torch.complex64), shirt, want)["credit"] == 0.5  # not counts
    not_a_pair = "most_confused must be a pair (true class, predicted class) of names from CLASSES or indices 0-9, got "
    assert lines(sc.score_confusion(want, "Shirt", want)) == [not_a_pair + "'Shirt'"]
    for pair in (None, 6, {"T-shirt/top": 0, "Shirt": 6}, (10, 0), (0, -1)):  # 10 and -1 are no class indices
        result = sc.score_confusion(want, pair, want)
        assert result["credit"] == 0.5 and lines(result)[0].startswith(not_a_pair), pair
    assert lines(sc.score_confusion(want, ("Coat", "Bag", "Shirt"), want)) == [not_a_pair + "'Coat, Bag, Shirt'"]
    assert lines(sc.score_confusion(want, (10, 0), want)) == [not_a_pair + "'10, 0'"]


def test_a_vit_without_mistakes_earns_the_pair_with_any_mistake():
    labels = torch.arange(10).repeat_interleave(20)
    perfect = by_hand_confusion(labels, labels)  # every mistake is tied at 0 times
    assert sc.score_confusion(perfect, ("Bag", "Coat"), perfect)["credit"] == 1
    per_class = torch.full((10,), 20)
    assert sc.score_confusion_totals(perfect, ("Bag", "Coat"), per_class, 200)["credit"] == 1


def test_score_confusion_totals_feedback():
    labels = torch.arange(10).repeat_interleave(20)
    predicted = labels.clone()
    predicted[:3] = 6
    matrix = by_hand_confusion(predicted, labels)
    per_class, correct = torch.full((10,), 20), 197
    right = sc.score_confusion_totals(matrix, (0, 6), per_class, correct)
    assert lines(right) == ["the matrix's totals and its largest mistake agree"]
    wrong_pair = sc.score_confusion_totals(matrix, ("Trouser", "Dress"), per_class, correct)
    assert wrong_pair["credit"] == 0.5
    assert lines(wrong_pair) == ["your ViT takes a Trouser for a Dress 0 times: another mistake is more frequent"]
    assert sc.score_confusion_totals(matrix.tolist(), (0, 6), per_class, correct) == {
        "credit": 0, "feedback": "expected a [10, 10] tensor of counts, got list"}


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


def test_score_attention_feedback_and_its_edges(tiny_vit_and_images):
    from coursekit.maps import attention_maps

    vit, images, predicted = tiny_vit_and_images
    labels = predicted.clone()
    labels[0] = (predicted[0] + 1) % 10  # image 0, the first index, is the only one the ViT gets wrong
    test_set = list(zip(images, labels.tolist()))
    maps = attention_maps(vit, images[:1])
    right = sc.score_attention(0, maps, vit, test_set)
    assert right["credit"] == 1
    assert lines(right) == [f"image 0: a {sc.CLASSES[int(labels[0])]} taken for a {sc.CLASSES[int(predicted[0])]}"]
    assert sc.score_attention(0, maps.double() + 5e-5, vit, test_set)["credit"] == 1  # float64, rounding: fine
    other = sc.score_attention(0, maps + 1e-3, vit, test_set)
    assert lines(other) == ["the attention does not belong to this image and model: use attention_maps(vit, image)"]
    correct = sc.score_attention(5, attention_maps(vit, images[5:6]), vit, test_set)
    assert lines(correct) == [f"test image 5 is classified correctly ({sc.CLASSES[int(labels[5])]}): "
                              "pick a misclassified one"]
    for index in (40, -1, "3"):  # one past the last image, before the first, not an int
        result = sc.score_attention(index, maps, vit, test_set)
        assert result == {"credit": 0, "feedback": f"miss_index={feedback.show(index)} must be an int index "
                                                   "into the test set (0 to 39)"}
    assert sc.score_attention(0, maps, None, test_set) == {"credit": 0, "feedback": "no trained ViT to check against"}


def test_score_attention_runs_the_vit_on_its_own_device(monkeypatch):
    class ElsewhereModel(nn.Module):
        """Weights on another device (meta stands in for a GPU); it notes where its input lives."""

        def __init__(self):
            super().__init__()
            self.weight, self.devices = nn.Parameter(torch.zeros(1, device="meta")), []

        def forward(self, images):
            self.devices.append(images.device.type)
            return F.one_hot(torch.tensor([2]), 10).float()  # predicts class 2

    maps = torch.rand(1, 1, 1, 2, 2)
    monkeypatch.setattr(sc, "attention_maps", lambda model, images: maps)
    model = ElsewhereModel()
    assert sc.score_attention(0, maps, model, [(torch.zeros(1, 28, 28), 3)])["credit"] == 1
    assert model.devices == ["meta"]


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
