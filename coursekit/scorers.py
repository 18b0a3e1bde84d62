"""The homework's scorers: plain answers (tensors, numbers, dicts) in, ``{"credit", "feedback"}`` out.

``credit`` is the fraction of the task's points earned, in [0, 1]; the task's points live in one
place, :data:`coursekit.homework.POINTS`. Feedback says what was expected and what was got, without
giving the answer (:mod:`coursekit.feedback`). Nothing here reads the environment: thresholds are
arguments, so the tests can score at the real ones. The config task's scorer lives with the rules
it checks, in :mod:`coursekit.vitconfig`.

Scorers only check: none of them computes an answer. What an answer is checked against (the
grader's own measurements, its confusion matrix, its operation count) is an argument, computed by
the grader (:mod:`coursekit.grading.tasks`, which is not in the student edition) or, in the notebook's own
checks, from what the learner may compute too.
"""

from __future__ import annotations

import math

import torch

from .data import dataset_info
from .feedback import credit, shape_of, show
from .maps import attention_maps
from .vitconfig import DATASET, SIDE

CLASSES = dataset_info(DATASET).classes
ACC_TOLERANCE = 0.005  # a reported accuracy may differ this much from the grader's measurement
FLOP_TOLERANCE = 0.01  # a reported operation count may differ this much (relative) from the grader's
COST_TOLERANCES = (1.05, 1.25)  # a cost ratio within these factors of the grader's count: all, half
GENERALIZATION_SES = 2  # test accuracy counts up to this many standard errors above the held-out one


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def score_data(indices, targets, k: int) -> dict:
    """indices: [10, k] dataset indices, row c holding images of class c; targets: [N] labels."""
    if not isinstance(indices, torch.Tensor) or indices.dim() != 2 or indices.dtype.is_floating_point:
        return credit(0, [f"expected an integer tensor of shape [10, {k}], got {shape_of(indices)}"])
    if tuple(indices.shape) != (10, k):
        return credit(0, [f"expected shape [10, {k}] (classes x examples), got {shape_of(indices)}"])
    if indices.min() < 0 or indices.max() >= len(targets):
        return credit(0, [f"indices must lie in [0, {len(targets) - 1}]"])
    labels = torch.as_tensor(targets)[indices]
    for c in range(10):
        wrong = labels[c][labels[c] != c]
        if len(wrong):
            got = int(wrong[0])
            return credit(0, [f"row {c} should hold only '{CLASSES[c]}' ({c}) but holds "
                              f"'{CLASSES[got]}' ({got}): select by dataset.targets == c"])
    if any(len(set(row.tolist())) < k for row in indices):
        return credit(0, ["a row repeats an image: pick k different images per class"])
    return credit(1, ["all 10 rows hold images of their class"])


def patchify_cases(seed: int) -> list:
    """Test inputs ``[(images [3, 1, SIDE, SIDE], patch_size), ...]`` for patch sizes 7, 4 and 14.

    Every pixel holds a different whole number (a random permutation of 0..N-1, as floats), so each
    value in a patchify output says exactly which pixel it came from.
    """
    g = torch.Generator().manual_seed(seed)
    shape = (3, 1, SIDE, SIDE)
    return [(torch.randperm(math.prod(shape), generator=g).float().reshape(shape), p) for p in (7, 4, 14)]


def _patch_layout(images: torch.Tensor, p: int, out: torch.Tensor) -> tuple[bool, bool, bool]:
    """Where each value of ``out`` [B, N, p*p*C] came from in ``images`` [B, C, H, W] (distinct values).

    Returns ``(unchanged, same_patches, in_order)``: every value is a pixel of the image, each patch
    of the output holds the pixels of the right patch, and in row-by-row order (channels last).
    """
    B, C, H, W = images.shape
    out = out.detach().double()
    flat = images.flatten().double()
    lookup = torch.full((len(flat),), -1, dtype=torch.long)
    lookup[flat.long()] = torch.arange(len(flat))  # pixel value -> its position in images
    values = out.round().long()
    if not torch.equal(values.double(), out) or values.min() < 0 or values.max() >= len(flat):
        return False, False, False
    where = lookup[values]  # [B, N, p*p*C]: flat position in images
    b, c = where // (C * H * W), (where // (H * W)) % C
    y, x = (where // W) % H, where % W
    batch = torch.arange(B).view(B, 1, 1)
    patch = torch.arange(out.shape[1]).view(1, -1, 1)
    pixel = torch.arange(out.shape[2]).view(1, 1, -1)
    same_patches = bool(((b == batch) & ((y // p) * (W // p) + x // p == patch)).all())
    in_order = same_patches and bool((((y % p) * p + x % p) * C + c == pixel).all())
    return True, same_patches, in_order


def score_patchify(cases, outputs) -> dict:
    """outputs[i]: what patchify returned for cases[i] (or an error message string). Half for shapes.

    The values are checked pixel by pixel (see :func:`patchify_cases`): no reference answer is computed.
    """
    if not isinstance(outputs, list) or len(outputs) != len(cases):
        return credit(0, [f"expected {len(cases)} outputs, got {shape_of(outputs)}"])
    shapes_ok = values_ok = True
    feedback = []
    for (images, p), out in zip(cases, outputs):
        B, C, H, W = images.shape
        want = [B, (H // p) * (W // p), p * p * C]
        if isinstance(out, str):
            return credit(0, [f"patchify(images {shape_of(images)}, {p}) raised {show(out)}"])
        if not isinstance(out, torch.Tensor) or list(out.shape) != want:
            shapes_ok = values_ok = False
            hint = ""
            if isinstance(out, torch.Tensor) and list(out.shape) == [want[0], want[2], want[1]]:
                hint = " (axes swapped? the patches come second, their pixels last)"
            feedback.append(f"patch_size={p}: expected shape {want}, got {shape_of(out)}{hint}")
            continue
        unchanged, same_patches, in_order = _patch_layout(images, p, out)
        if in_order:
            continue
        values_ok = False
        if not unchanged:
            why = "values changed: patchify only moves pixels, it must not compute new values"
        elif same_patches:
            why = "each patch has the right pixels in the wrong order (flatten each patch row by row)"
        else:
            why = "patches are in the wrong order or mix pixels of different patches (go row by row)"
        feedback.append(f"patch_size={p}: shape right, values wrong: {why}")
    if shapes_ok and values_ok:
        feedback.append(f"shapes and values right for patch sizes {[p for _, p in cases]}")
    elif shapes_ok:
        feedback.insert(0, "shapes right (half the points)")
    return credit((shapes_ok + values_ok) / 2, feedback)


def credited_accuracy(test_acc: float, test_n: int, held_acc: float, held_n: int) -> float:
    """The test accuracy that earns points: ``test_acc``, but at most :data:`GENERALIZATION_SES`
    standard errors of the difference above ``held_acc``, the accuracy on ``held_n`` images of the
    same kind that the model was not meant to train on. A model trained on the test images (pasted
    from elsewhere) scores far higher on them than on images it never saw; honest models score
    below their held-out accuracy (benchmarks/results/homework_recipes_h100.jsonl: the best
    validation accuracy stood 0.1 to 2 points above the test accuracy in every run)."""
    p = (test_acc + held_acc) / 2
    margin = GENERALIZATION_SES * math.sqrt(max(p * (1 - p), 1e-4) * (1 / max(test_n, 1) + 1 / max(held_n, 1)))
    return min(test_acc, held_acc + margin)


def score_training(measured: dict, errors: list[str], targets: dict, floors: dict) -> dict:
    """measured: ``{name: {"acc"}}``, or for the grader ``{name: {"acc", "n", "test_acc", "test_n"}}``
    with ``acc`` on ``n`` held-out images and ``test_acc`` on ``test_n`` test images that no kernel
    could read (then :func:`credited_accuracy` is what counts). Each model earns its share on a line
    from ``floors`` (0) to ``targets`` (all)."""
    parts, feedback = [], list(errors)
    for name, target in targets.items():
        if name not in measured:
            parts.append(0.0)
            continue
        m, floor = measured[name], floors[name]
        acc = m.get("test_acc", m["acc"])
        if "test_acc" in m and (capped := credited_accuracy(acc, m["test_n"], m["acc"], m["n"])) < acc:
            feedback.append(f"{name} scores {acc:.4f} on the test images but {m['acc']:.4f} on held-out "
                            f"training images like them: counted as {capped:.4f} (at most "
                            f"{GENERALIZATION_SES:g} standard errors above; was it trained on the test images?)")
            acc = capped
        part = min(1.0, max(0.0, (acc - floor) / (target - floor)))
        parts.append(part)
        if acc >= target:
            feedback.append(f"{name} test accuracy {acc:.4f} >= {target:.2f}")
        else:
            feedback.append(f"{name} test accuracy {acc:.4f} < {target:.2f}: {part:.0%} of its share "
                            f"(0% at {floor:.2f} or below, all of it at {target:.2f})")
    return credit(sum(parts) / len(targets), feedback)


def _close(x, want: float, tolerance: float) -> bool:
    return _is_number(x) and abs(x - want) <= tolerance * abs(want)


def score_comparison(rows, measured: dict) -> dict:
    """rows: [{"model", "test_acc", "params", "mflops_per_image", "ms_per_image"}, ...];
    measured: ``{name: {"acc", "params", "mflops"}}``, measured by the grader ("mflops" may be missing:
    then the counts are not checked).

    Half for parameters and accuracies that match the measurement, half for the cost columns: an
    operation count that matches (within :data:`FLOP_TOLERANCE`) and a positive time. Times depend
    on the machine and its load, so they are shown, never compared.
    """
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        return credit(0, [f"results must be a list of dicts, one per model, got {shape_of(rows)}"])
    by_model = {r.get("model"): r for r in rows}
    if set(by_model) != {"ViT", "CNN"}:
        given = ", ".join(sorted(map(str, by_model))) or "none"
        return credit(0, [f"expected rows for models 'ViT' and 'CNN', got {show(given)}"])
    numbers_ok = cost_ok = True
    feedback = []
    for name, row in by_model.items():
        ms, mflops = row.get("ms_per_image"), row.get("mflops_per_image")
        if not _is_number(ms) or not 0 < ms < 10_000:
            cost_ok = False
            feedback.append(f"{name}: ms_per_image={show(ms)} should be a positive time in milliseconds")
        if name not in measured:
            numbers_ok = cost_ok = False
            feedback.append(f"{name}: no trained model to compare with")
            continue
        real = measured[name]
        if row.get("params") != real["params"]:
            numbers_ok = False
            feedback.append(f"{name}: params={show(row.get('params'))}, but the model has {real['params']:,}")
        acc = row.get("test_acc")
        if not _is_number(acc) or not 0 <= acc <= 1:
            numbers_ok = False
            feedback.append(f"{name}: test_acc={show(acc)} should be a fraction in [0, 1]")
        elif abs(acc - real["acc"]) > ACC_TOLERANCE:
            numbers_ok = False
            feedback.append(f"{name}: test_acc={acc:.4f}, but the model scores {real['acc']:.4f} on the test set")
        if "mflops" in real and not _close(mflops, real["mflops"], FLOP_TOLERANCE):
            cost_ok = False
            feedback.append(f"{name}: mflops_per_image={show(mflops)} is not the operation count of one "
                            "image's forward pass (FlopCounterMode, batch 1, in millions)")
    if numbers_ok and cost_ok:
        feedback.append("parameters, accuracies and costs are consistent with the models")
    return credit((numbers_ok + cost_ok) / 2, feedback)


def score_attention(index, attention, vit, test_set) -> dict:
    """index: a test-set index the ViT gets wrong; attention: [1, layers, heads, N+1, N+1] for that image.

    Half for an image the ViT really misclassifies, half for its attention maps.
    """
    if vit is None:
        return credit(0, ["no trained ViT to check against"])
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(test_set):
        return credit(0, [f"miss_index={show(index)} must be an int index into the test set "
                          f"(0 to {len(test_set) - 1})"])
    image, label = test_set[index]
    want = attention_maps(vit, image.unsqueeze(0))
    earned, feedback = 0, []
    with torch.no_grad():
        predicted = int(vit(image.unsqueeze(0).to(next(vit.parameters()).device)).argmax(1))
    if predicted != label:
        earned += 1
    else:
        feedback.append(f"test image {index} is classified correctly ({CLASSES[label]}): pick a misclassified one")
    if not isinstance(attention, torch.Tensor) or attention.shape != want.shape:
        feedback.append(f"expected attention of shape {list(want.shape)} "
                        f"[batch, layers, heads, tokens, tokens], got {shape_of(attention)}")
    elif not torch.allclose(attention.detach().float().cpu(), want, atol=1e-4):
        feedback.append("the attention does not belong to this image and model: use attention_maps(vit, image)")
    else:
        earned += 1
    if earned == 2:
        feedback.append(f"image {index}: a {CLASSES[label]} taken for a {CLASSES[predicted]}")
    return credit(earned / 2, feedback)


def score_cost(ratio, counted: float) -> dict:
    """ratio: the learner's answer, how many times the operations of a forward pass (or a training
    step) with 49 patches outnumber those with 16 (other settings alike); counted: the grader's count.

    All the points within a factor ``COST_TOLERANCES[0]`` of the count, half within
    ``COST_TOLERANCES[1]``. The feedback says which way the answer is off, not the count.
    """
    if not _is_number(ratio) or not 0 < ratio < float("inf"):
        return credit(0, [f"cost_ratio must be a positive number (a ratio of two counts), got {show(ratio)}"])
    off = max(ratio / counted, counted / ratio)
    full, half = COST_TOLERANCES
    way = "too high" if ratio > counted else "too low"
    if off <= full:
        return credit(1, [f"cost_ratio={ratio:.2f} is within a factor {full:g} of the grader's count"])
    if off <= half:
        return credit(0.5, [f"cost_ratio={ratio:.2f} is {way}: more than a factor {full:g} off the grader's "
                            f"count, within {half:g} (half the points); count with FlopCounterMode"])
    return credit(0, [f"cost_ratio={ratio:.2f} is {way} by more than a factor {half:g}: count the operations "
                      "of each configuration with FlopCounterMode"])


def _class_index(name) -> int | None:
    if isinstance(name, int) and not isinstance(name, bool) and 0 <= name < len(CLASSES):
        return name
    return CLASSES.index(name) if isinstance(name, str) and name in CLASSES else None


def _score_pair(pair, mistakes: torch.Tensor) -> tuple[int, str | None]:
    """(1 or 0, feedback) for ``pair`` against ``mistakes`` [10, 10] (the counts, diagonal zeroed)."""
    ok = isinstance(pair, (list, tuple)) and len(pair) == 2
    t, p = (_class_index(x) for x in pair) if ok else (None, None)
    if t is None or p is None:
        got = show(", ".join(map(str, pair))) if isinstance(pair, (list, tuple)) else show(pair)
        return 0, (f"most_confused must be a pair (true class, predicted class) of names from "
                   f"CLASSES or indices 0-9, got {got}")
    if t == p:
        return 0, f"({CLASSES[t]!r}, {CLASSES[p]!r}) is a correct prediction, not a mistake"
    if mistakes[t, p] == mistakes.max():  # any pair tied for the most frequent mistake
        return 1, None
    return 0, (f"your ViT takes a {CLASSES[t]} for a {CLASSES[p]} {int(mistakes[t, p])} times: "
               "another mistake is more frequent")


def _counts(matrix) -> torch.Tensor | None:
    """``matrix`` as int64 counts if it is a [10, 10] tensor of whole numbers (of any dtype), else None."""
    if not isinstance(matrix, torch.Tensor) or tuple(matrix.shape) != (10, 10) or matrix.is_complex():
        return None
    if matrix.is_floating_point() and not torch.equal(matrix, matrix.round()):
        return None
    return matrix.detach().cpu().long()


def score_confusion(matrix, pair, want: torch.Tensor) -> dict:
    """matrix: the learner's [10, 10] counts (row = true class, column = the ViT's prediction);
    pair: (true class, predicted class) of the ViT's most frequent mistake, as class names or indices;
    want: the grader's confusion matrix of the same ViT on the same test set.

    Half for the matrix, half for the pair (any pair tied for the most frequent mistake earns it).
    """
    earned, feedback, counts = 0, [], _counts(matrix)
    if counts is None:
        feedback.append(f"expected a [10, 10] tensor of counts, got {shape_of(matrix)}")
    elif torch.equal(counts, want):
        earned += 1
    elif torch.equal(counts, want.T):
        feedback.append("rows and columns are swapped: a row is the true class, a column the prediction")
    elif int(counts.sum()) != int(want.sum()):
        feedback.append(f"your matrix counts {int(counts.sum()):,} predictions; the test set has {int(want.sum()):,}")
    else:
        wrong = int((counts != want).sum())
        feedback.append(f"{wrong} cells differ from the counts of your ViT's test predictions")
    got, why = _score_pair(pair, want.clone().fill_diagonal_(0))
    earned += got
    feedback += [why] if why else []
    if earned == 2:
        feedback.append("the matrix and the most frequent mistake are right")
    return credit(earned / 2, feedback)


def score_confusion_totals(matrix, pair, per_class: torch.Tensor, correct: int) -> dict:
    """What the notebook can check without the answer: ``matrix``'s row sums against ``per_class``
    [10] (test images of each class), its diagonal against ``correct`` (the ViT's right answers), and
    ``pair`` against the matrix's own largest mistake. Half for the matrix, half for the pair.
    """
    counts = _counts(matrix)
    if counts is None:
        return credit(0, [f"expected a [10, 10] tensor of counts, got {shape_of(matrix)}"])
    earned, feedback, matrix = 0, [], counts
    rows = matrix.sum(1)
    if not torch.equal(rows, per_class.to(rows.dtype)):
        c = int((rows != per_class).nonzero()[0])
        feedback.append(f"row {c} ({CLASSES[c]}) counts {int(rows[c])} images; the test set has "
                        f"{int(per_class[c])} (a row is the true class)")
    elif int(matrix.trace()) != correct:
        feedback.append(f"the diagonal counts {int(matrix.trace())} right answers; your ViT gets {correct} right")
    else:
        earned += 1
    got, why = _score_pair(pair, matrix.clone().fill_diagonal_(0))
    earned += got
    feedback += [why] if why else ["the matrix's totals and its largest mistake agree"]
    return credit(earned / 2, feedback)
