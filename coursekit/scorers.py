"""The homework's scorers: plain answers (tensors, numbers, dicts) in, ``{"credit", "feedback"}`` out.

``credit`` is the fraction of the task's points earned, in [0, 1]; the task's points live in one
place, the registry :data:`coursekit.homework.TASKS`. Feedback says what was expected and what was
got, without giving the answer. Nothing here reads the environment: thresholds are arguments, so
the tests can score at the real ones.
"""

from __future__ import annotations

import torch
from einops import rearrange

from .bench import count_parameters
from .data import dataset_info
from .models import build_model

DATASET = "fashion_mnist"
CLASSES = dataset_info(DATASET).classes
PARAM_BUDGET = 1_199_882  # the ViT may have at most as many parameters as the course's CNN
MIN_PATCHES = 16
ACC_TOLERANCE = 0.005  # a reported accuracy may differ this much from the grader's measurement
TIME_RATIO_TOLERANCE = 3.0  # a reported ViT/CNN time ratio may be this many times off the grader's
COST_TOLERANCES = (1.5, 2.5)  # a predicted cost ratio within these factors of the grader's: all, half


def credit(value: float, feedback) -> dict:
    """A scorer's answer: ``value`` in [0, 1] of the task's points, and feedback lines joined by '; '."""
    return {"credit": float(min(1.0, max(0.0, value))), "feedback": "; ".join(feedback)}


def shape_of(x) -> str:
    """``[3, 16, 49]`` for a tensor, else the type's name: what feedback shows of a wrong answer."""
    return str(list(x.shape)) if isinstance(x, torch.Tensor) else type(x).__name__


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
    """Random test inputs ``[(images [B, 1, 28, 28], patch_size), ...]`` with non-trivial values."""
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(3, 1, 28, 28, generator=g), p) for p in (7, 4, 14)]


def reference_patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """The answer patchify must give: [B, C, H, W] -> [B, N, p*p*C], patches row by row (as vit-pytorch)."""
    return rearrange(images, "b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=patch_size, p2=patch_size)


def score_patchify(cases, outputs) -> dict:
    """outputs[i]: what patchify returned for cases[i] (or an error message string). Half for shapes."""
    if not isinstance(outputs, list) or len(outputs) != len(cases):
        return credit(0, [f"expected {len(cases)} outputs, got {shape_of(outputs)}"])
    shapes_ok = values_ok = True
    feedback = []
    for (images, p), out in zip(cases, outputs):
        want = reference_patchify(images, p)
        if isinstance(out, str):
            return credit(0, [f"patchify(images {shape_of(images)}, {p}) raised {out}"])
        if not isinstance(out, torch.Tensor) or out.shape != want.shape:
            shapes_ok = values_ok = False
            hint = ""
            if isinstance(out, torch.Tensor) and out.shape == want.transpose(1, 2).shape:
                hint = " (axes swapped? the patches come second, their pixels last)"
            feedback.append(f"patch_size={p}: expected shape {list(want.shape)}, got {shape_of(out)}{hint}")
        elif not torch.allclose(out.float(), want, atol=1e-5):
            values_ok = False
            if torch.allclose(out.float().sort(-1).values, want.sort(-1).values, atol=1e-5):
                why = "each patch has the right pixels in the wrong order (flatten each patch row by row)"
            else:
                why = "patches are in the wrong order or mix pixels of different patches (go row by row)"
            feedback.append(f"patch_size={p}: shape right, values wrong: {why}")
    if shapes_ok and values_ok:
        feedback.append(f"shapes and values right for patch sizes {[p for _, p in cases]}")
    elif shapes_ok:
        feedback.insert(0, "shapes right (half the points)")
    return credit((shapes_ok + values_ok) / 2, feedback)


def vit_problem(config) -> str | None:
    """Why ``config`` is not a valid homework ViT (None when it is)."""
    if not isinstance(config, dict) or not isinstance(config.get("patch_size"), int):
        return f"vit_config must be a dict of settings with an int 'patch_size', got {shape_of(config)}"
    try:
        params = count_parameters(build_model("vit", DATASET, **config))
    except Exception as error:  # the learner's settings: any failure is feedback, not a crash
        return f"build_model('vit', 'fashion_mnist', **vit_config) failed: {type(error).__name__}: {error}"
    patches = (28 // config["patch_size"]) ** 2
    if patches < MIN_PATCHES:
        return f"{patches} patches is fewer than {MIN_PATCHES}: choose a smaller patch_size"
    if params > PARAM_BUDGET:
        return f"{params:,} parameters is over the budget of {PARAM_BUDGET:,}"
    return None


def score_config(config, n_patches) -> dict:
    """config: keyword overrides for build_model("vit", "fashion_mnist"); n_patches: the learner's count.

    Half for a valid configuration (builds, >= 16 patches, within the parameter budget), half for
    its patch count.
    """
    problem = vit_problem(config)
    if problem and (not isinstance(config, dict) or not isinstance(config.get("patch_size"), int)
                    or "failed" in problem):
        return credit(0, [problem])
    patches = (28 // config["patch_size"]) ** 2
    earned, feedback = 0, [problem] if problem else []
    if not problem:
        earned += 1
        params = count_parameters(build_model("vit", DATASET, **config))
        feedback.append(f"valid: {patches} patches, {params:,} parameters")
    if isinstance(n_patches, int) and not isinstance(n_patches, bool) and n_patches == patches:
        earned += 1
    else:
        feedback.append(f"n_patches={n_patches!r} is not the number of patches of your configuration")
    return credit(earned / 2, feedback)


def score_training(measured: dict, errors: list[str], targets: dict, floors: dict) -> dict:
    """measured: ``{name: {"acc"}}``. Each model earns its share on a line from ``floors`` (0) to ``targets`` (all)."""
    parts, feedback = [], list(errors)
    for name, target in targets.items():
        if name not in measured:
            parts.append(0.0)
            continue
        acc, floor = measured[name]["acc"], floors[name]
        part = min(1.0, max(0.0, (acc - floor) / (target - floor)))
        parts.append(part)
        if acc >= target:
            feedback.append(f"{name} test accuracy {acc:.4f} >= {target:.2f}")
        else:
            feedback.append(f"{name} test accuracy {acc:.4f} < {target:.2f}: {part:.0%} of its share "
                            f"(0% at {floor:.2f} or below, all of it at {target:.2f})")
    return credit(sum(parts) / len(targets), feedback)


def score_comparison(rows, measured: dict) -> dict:
    """rows: [{"model", "test_acc", "params", "ms_per_image"}, ...]; measured: ``{name: {"acc", "params", "ms"}}``.

    Half for parameters and accuracies that match the grader's measurement, half for times whose
    ViT/CNN ratio is within :data:`TIME_RATIO_TOLERANCE` of the ratio the grader measures.
    """
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        return credit(0, [f"results must be a list of dicts, one per model, got {shape_of(rows)}"])
    by_model = {r.get("model"): r for r in rows}
    if set(by_model) != {"ViT", "CNN"}:
        return credit(0, [f"expected rows for models 'ViT' and 'CNN', got {sorted(map(str, by_model))}"])
    numbers_ok = times_ok = True
    feedback = []
    for name, row in by_model.items():
        ms = row.get("ms_per_image")
        if not _is_number(ms) or not 0 < ms < 10_000:
            times_ok = False
            feedback.append(f"{name}: ms_per_image={ms!r} should be a positive time in milliseconds")
        if name not in measured:
            numbers_ok = times_ok = False
            feedback.append(f"{name}: no trained model to compare with")
            continue
        real = measured[name]
        if row.get("params") != real["params"]:
            numbers_ok = False
            feedback.append(f"{name}: params={row.get('params')!r}, but the model has {real['params']:,}")
        acc = row.get("test_acc")
        if not _is_number(acc) or not 0 <= acc <= 1:
            numbers_ok = False
            feedback.append(f"{name}: test_acc={acc!r} should be a fraction in [0, 1]")
        elif abs(acc - real["acc"]) > ACC_TOLERANCE:
            numbers_ok = False
            feedback.append(f"{name}: test_acc={acc:.4f}, but the model scores {real['acc']:.4f} on the test set")
    if times_ok and all("ms" in measured.get(n, {}) for n in ("ViT", "CNN")):
        theirs = by_model["ViT"]["ms_per_image"] / by_model["CNN"]["ms_per_image"]
        ours = measured["ViT"]["ms"] / measured["CNN"]["ms"]
        if not 1 / TIME_RATIO_TOLERANCE <= theirs / ours <= TIME_RATIO_TOLERANCE:
            times_ok = False
            feedback.append(f"your times say the ViT takes {theirs:.2f}x the CNN's time per image; measured here "
                            f"it takes {ours:.2f}x (tolerance: a factor {TIME_RATIO_TOLERANCE:g})")
    if numbers_ok and times_ok:
        feedback.append("parameters, accuracies and times are consistent with the models")
    return credit((numbers_ok + times_ok) / 2, feedback)


def score_attention(index, attention, vit, test_set) -> dict:
    """index: a test-set index the ViT gets wrong; attention: [1, layers, heads, N+1, N+1] for that image.

    Half for an image the ViT really misclassifies, half for its attention maps.
    """
    from .viz import attention_maps

    if vit is None:
        return credit(0, ["no trained ViT to check against"])
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(test_set):
        return credit(0, [f"miss_index={index!r} must be an int index into the test set "
                          f"(0 to {len(test_set) - 1})"])
    image, label = test_set[index]
    want = attention_maps(vit, image.unsqueeze(0))
    earned, feedback = 0, []
    with torch.no_grad():
        predicted = int(vit(image.unsqueeze(0)).argmax(1))
    if predicted != label:
        earned += 1
    else:
        feedback.append(f"test image {index} is classified correctly ({CLASSES[label]}): pick a misclassified one")
    if not isinstance(attention, torch.Tensor) or attention.shape != want.shape:
        feedback.append(f"expected attention of shape {list(want.shape)} "
                        f"[batch, layers, heads, tokens, tokens], got {shape_of(attention)}")
    elif not torch.allclose(attention.float(), want, atol=1e-4):
        feedback.append("the attention does not belong to this image and model: use attention_maps(vit, image)")
    else:
        earned += 1
    if earned == 2:
        feedback.append(f"image {index}: a {CLASSES[label]} taken for a {CLASSES[predicted]}")
    return credit(earned / 2, feedback)


def score_cost(ratio, measured: float) -> dict:
    """ratio: the learner's answer, how many times longer a training step takes with 49 patches than
    with 16 (other settings alike); measured: the grader's own measurement of that ratio.

    All the points within a factor ``COST_TOLERANCES[0]`` of the measurement, half within
    ``COST_TOLERANCES[1]``. The feedback says which way the answer is off, not the measurement.
    """
    if not _is_number(ratio) or not 0 < ratio < float("inf"):
        return credit(0, [f"cost_ratio must be a positive number (a ratio of two times), got {ratio!r}"])
    off = max(ratio / measured, measured / ratio)
    full, half = COST_TOLERANCES
    way = "too high" if ratio > measured else "too low"
    if off <= full:
        return credit(1, [f"cost_ratio={ratio:.2f} is within a factor {full:g} of the grader's measurement"])
    if off <= half:
        return credit(0.5, [f"cost_ratio={ratio:.2f} is {way}: more than a factor {full:g} off the grader's "
                            f"measurement, within {half:g} (half the points)"])
    return credit(0, [f"cost_ratio={ratio:.2f} is {way} by more than a factor {half:g}: time one training "
                      "step of each configuration"])


def confusion_matrix(predicted: torch.Tensor, labels: torch.Tensor, num_classes: int = 10) -> torch.Tensor:
    """Counts [num_classes, num_classes]: row = true class, column = predicted class; predicted, labels: [N]."""
    index = torch.as_tensor(labels).long() * num_classes + torch.as_tensor(predicted).long()
    return torch.bincount(index, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def _class_index(name) -> int | None:
    if isinstance(name, int) and not isinstance(name, bool) and 0 <= name < len(CLASSES):
        return name
    return CLASSES.index(name) if name in CLASSES else None


def score_confusion(matrix, pair, want: torch.Tensor) -> dict:
    """matrix: the learner's [10, 10] counts (row = true class, column = the ViT's prediction);
    pair: (true class, predicted class) of the ViT's most frequent mistake, as class names or indices;
    want: the grader's confusion matrix of the same ViT on the same test set.

    Half for the matrix, half for the pair (any pair tied for the most frequent mistake earns it).
    """
    earned, feedback = 0, []
    if not isinstance(matrix, torch.Tensor) or matrix.shape != want.shape:
        feedback.append(f"expected confusion of shape {list(want.shape)}, got {shape_of(matrix)}")
    elif torch.equal(matrix.long(), want):
        earned += 1
    elif torch.equal(matrix.long(), want.T):
        feedback.append("rows and columns are swapped: a row is the true class, a column the prediction")
    elif int(matrix.sum()) != int(want.sum()):
        feedback.append(f"your matrix counts {int(matrix.sum()):,} predictions; the test set has {int(want.sum()):,}")
    else:
        wrong = int((matrix.long() != want).sum())
        feedback.append(f"{wrong} cells differ from the counts of your ViT's test predictions")
    t, p = (_class_index(x) for x in pair) if isinstance(pair, (list, tuple)) and len(pair) == 2 else (None, None)
    mistakes = want.clone().fill_diagonal_(0)
    if t is None or p is None:
        feedback.append(f"most_confused must be a pair (true class, predicted class) of names from "
                        f"CLASSES or indices 0-9, got {pair!r}")
    elif t == p:
        feedback.append(f"({CLASSES[t]!r}, {CLASSES[p]!r}) is a correct prediction, not a mistake")
    elif mistakes[t, p] == mistakes.max():
        earned += 1
    else:
        feedback.append(f"your ViT takes a {CLASSES[t]} for a {CLASSES[p]} {int(mistakes[t, p])} times: "
                        "another mistake is more frequent")
    if earned == 2:
        feedback.append("the matrix and the most frequent mistake are right")
    return credit(earned / 2, feedback)
