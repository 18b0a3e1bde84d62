"""The Fashion-MNIST homework (notebook 04): its fixed data, its tasks, and the checks that score them.

Every task has a *scorer* (``score_*``) that works on plain answers: tensors, numbers, dicts and
weights. The notebook calls the ``check_*`` functions after each task: they run the learner's
answer, score it with the same scorer and print feedback ("expected shape [3, 16, 49], got
[3, 49, 16]") without showing the solution. Those in-notebook points are only a guide: the grader
(:mod:`coursekit.grade`) collects the raw answers from the submission's kernel and scores them
again in its own process, so nothing the submission redefines can change its score.
"""

from __future__ import annotations

import secrets

import torch
from einops import rearrange

from .bench import count_parameters
from .config import fast_or, is_fast
from .data import dataset_info, get_dataset, get_loaders
from .models import build_model
from .train import evaluate

DATASET = "fashion_mnist"
CLASSES = dataset_info(DATASET).classes
# task id -> (title, points, graded by hand)
TASKS = {
    "data": ("Examples of each class", 1, False),
    "patchify": ("patchify: image -> sequence of patches", 2, False),
    "config": ("A valid ViT configuration", 2, False),
    "training": ("Train the ViT and the CNN", 2, False),
    "comparison": ("Comparison table", 2, False),
    "attention": ("Attention of a misclassified image", 2, False),
    "reflection": ("Written reflection", 3, True),
}
PARAM_BUDGET = 1_199_882  # the ViT may have at most as many parameters as the course's CNN
MIN_PATCHES = 16
THRESHOLDS = {"ViT": 0.90, "CNN": 0.91}  # test accuracy needed outside fast mode
FAST_THRESHOLD = 0.15  # fast mode trains for a few steps: only "better than chance" is asked
FAST_SUBSET = 2000  # images used in fast mode (CI), see coursekit.data.get_loaders(subset=...)
ACC_TOLERANCE = 0.005  # a reported accuracy may differ this much from the grader's measurement
ANSWER_PLACEHOLDER = "_Your answer here._"  # what the student version shows in a written answer
RESULTS: dict = {}  # in-notebook points of the check cells: a guide for the learner, not a grade


def loaders(batch_size: int = 128, augment: bool = False):
    """The homework's ``(train, val, test)`` loaders: all of Fashion-MNIST, or 2,000 images in fast mode.

    ``augment=True`` adds random crops and flips to the training images only; the split is the same.
    """
    return get_loaders(DATASET, batch_size=batch_size, subset=fast_or(None, FAST_SUBSET), augment=augment)


def test_targets() -> torch.Tensor:
    """Labels [10000] of the full Fashion-MNIST test set."""
    return torch.as_tensor(get_dataset(DATASET, train=False).targets)


def _shape(x) -> str:
    return str(list(x.shape)) if isinstance(x, torch.Tensor) else type(x).__name__


def _result(task: str, points: float, feedback: list[str]) -> dict:
    return {"task": task, "points": points, "max": TASKS[task][1], "feedback": "; ".join(feedback)}


# --- scorers: plain answers in, {"task", "points", "max", "feedback"} out ---------------------------

def score_data(indices, targets, k: int) -> dict:
    """indices: [10, k] dataset indices, row c holding images of class c; targets: [N] labels."""
    if not isinstance(indices, torch.Tensor) or indices.dim() != 2 or indices.dtype.is_floating_point:
        return _result("data", 0, [f"expected an integer tensor of shape [10, {k}], got {_shape(indices)}"])
    if tuple(indices.shape) != (10, k):
        return _result("data", 0, [f"expected shape [10, {k}] (classes x examples), got {_shape(indices)}"])
    if indices.min() < 0 or indices.max() >= len(targets):
        return _result("data", 0, [f"indices must lie in [0, {len(targets) - 1}]"])
    labels = torch.as_tensor(targets)[indices]
    for c in range(10):
        wrong = labels[c][labels[c] != c]
        if len(wrong):
            got = int(wrong[0])
            return _result("data", 0, [f"row {c} should hold only '{CLASSES[c]}' ({c}) but holds "
                                       f"'{CLASSES[got]}' ({got}): select by dataset.targets == c"])
    if any(len(set(row.tolist())) < k for row in indices):
        return _result("data", 0, ["a row repeats an image: pick k different images per class"])
    return _result("data", 1, ["all 10 rows hold images of their class"])


def patchify_cases(seed: int) -> list:
    """Random test inputs ``[(images [B, 1, 28, 28], patch_size), ...]`` with non-trivial values."""
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(3, 1, 28, 28, generator=g), p) for p in (7, 4, 14)]


def reference_patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """The answer patchify must give: [B, C, H, W] -> [B, N, p*p*C], patches row by row (as vit-pytorch)."""
    return rearrange(images, "b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=patch_size, p2=patch_size)


def score_patchify(cases, outputs) -> dict:
    """outputs[i]: what patchify returned for cases[i] (or an error message string)."""
    shapes_ok = values_ok = True
    feedback = []
    for (images, p), out in zip(cases, outputs):
        want = reference_patchify(images, p)
        if isinstance(out, str):
            return _result("patchify", 0, [f"patchify(images {_shape(images)}, {p}) raised {out}"])
        if not isinstance(out, torch.Tensor) or out.shape != want.shape:
            shapes_ok = values_ok = False
            hint = ""
            if isinstance(out, torch.Tensor) and out.shape == want.transpose(1, 2).shape:
                hint = " (axes swapped? the patches come second, their pixels last)"
            feedback.append(f"patch_size={p}: expected shape {list(want.shape)}, got {_shape(out)}{hint}")
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
        feedback.insert(0, "shapes right (1 point)")
    return _result("patchify", int(shapes_ok) + int(values_ok), feedback)


def score_config(config, n_patches) -> dict:
    """config: keyword overrides for build_model("vit", "fashion_mnist"); n_patches: the learner's count."""
    if not isinstance(config, dict) or "patch_size" not in config:
        return _result("config", 0, ["vit_config must be a dict of settings with at least 'patch_size'"])
    try:
        params = count_parameters(build_model("vit", DATASET, **config))
    except Exception as error:  # the learner's settings: any failure is feedback, not a crash
        return _result("config", 0, [f"build_model('vit', 'fashion_mnist', **vit_config) failed: "
                                     f"{type(error).__name__}: {error}"])
    patches = (28 // config["patch_size"]) ** 2
    points, feedback = 0, []
    if patches < MIN_PATCHES:
        feedback.append(f"{patches} patches is fewer than {MIN_PATCHES}: choose a smaller patch_size")
    elif params > PARAM_BUDGET:
        feedback.append(f"{params:,} parameters is over the budget of {PARAM_BUDGET:,}")
    else:
        points += 1
        feedback.append(f"valid: {patches} patches, {params:,} parameters")
    if isinstance(n_patches, int) and not isinstance(n_patches, bool) and n_patches == patches:
        points += 1
    else:
        feedback.append(f"n_patches={n_patches!r} is not the number of patches of your configuration")
    return _result("config", points, feedback)


def load_models(config, vit_state, cnn_state):
    """Rebuild the learner's trained models from their weights: ``({"ViT": model, "CNN": model}, errors)``."""
    models, errors = {}, []
    for name, kind, state, settings in (("ViT", "vit", vit_state, config), ("CNN", "cnn", cnn_state, {})):
        try:
            model = build_model(kind, DATASET, **(settings or {}))
            model.load_state_dict(state)
            models[name] = model.eval()
        except Exception as error:
            errors.append(f"could not rebuild your {name} from its weights: {type(error).__name__}: "
                          f"{str(error)[:200]}")
    return models, errors


def measure(models: dict, test_loader) -> dict:
    """``{name: {"acc": test accuracy, "params": parameter count}}`` measured here, not reported."""
    return {name: {"acc": evaluate(m, test_loader, next(m.parameters()).device)["acc"],
                   "params": count_parameters(m)} for name, m in models.items()}


def score_training(measured: dict, errors: list[str]) -> dict:
    """measured: from :func:`measure`. One point per model that reaches its threshold."""
    points, feedback = 0, list(errors)
    for name, target in THRESHOLDS.items():
        if name not in measured:
            continue
        target = FAST_THRESHOLD if is_fast() else target
        acc = measured[name]["acc"]
        ok = acc >= target
        points += ok
        feedback.append(f"{name} test accuracy {acc:.4f} {'>=' if ok else '<'} {target:.2f}")
    return _result("training", points, feedback)


def score_comparison(rows, measured: dict) -> dict:
    """rows: [{"model", "test_acc", "params", "ms_per_image"}, ...] as reported by the learner."""
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        return _result("comparison", 0, ["results must be a list of dicts, one per model"])
    by_model = {r.get("model"): r for r in rows}
    if set(by_model) != {"ViT", "CNN"}:
        return _result("comparison", 0, [f"expected rows for models 'ViT' and 'CNN', got {sorted(map(str, by_model))}"])
    params_ok = acc_ok = True
    feedback = []
    for name, row in by_model.items():
        ms = row.get("ms_per_image")
        if not isinstance(ms, (int, float)) or not 0 < ms < 10_000 or isinstance(ms, bool):
            acc_ok = False
            feedback.append(f"{name}: ms_per_image={ms!r} should be a positive time in milliseconds")
        if name not in measured:
            params_ok = acc_ok = False
            feedback.append(f"{name}: no trained model to compare with")
            continue
        real = measured[name]
        if row.get("params") != real["params"]:
            params_ok = False
            feedback.append(f"{name}: params={row.get('params')!r}, but the model has {real['params']:,}")
        acc = row.get("test_acc")
        if not isinstance(acc, (int, float)) or not 0 <= acc <= 1:
            acc_ok = False
            feedback.append(f"{name}: test_acc={acc!r} should be a fraction in [0, 1]")
        elif abs(acc - real["acc"]) > ACC_TOLERANCE:
            acc_ok = False
            feedback.append(f"{name}: test_acc={acc:.4f}, but the model scores {real['acc']:.4f} on the test set")
    if params_ok and acc_ok:
        feedback.append("parameters, accuracies and times are consistent with the models")
    return _result("comparison", int(params_ok) + int(acc_ok), feedback)


def score_attention(index, attention, vit, test_set) -> dict:
    """index: a test-set index the ViT gets wrong; attention: [1, layers, heads, N+1, N+1] for that image."""
    from .viz import attention_maps

    if vit is None:
        return _result("attention", 0, ["no trained ViT to check against"])
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(test_set):
        return _result("attention", 0, [f"miss_index={index!r} must be an int index into the test set"])
    image, label = test_set[index]
    want = attention_maps(vit, image.unsqueeze(0))
    points, feedback = 0, []
    with torch.no_grad():
        predicted = int(vit(image.unsqueeze(0)).argmax(1))
    if predicted != label:
        points += 1
    else:
        feedback.append(f"test image {index} is classified correctly ({CLASSES[label]}): pick a misclassified one")
    if not isinstance(attention, torch.Tensor) or attention.shape != want.shape:
        feedback.append(f"expected attention of shape {list(want.shape)} "
                        f"[batch, layers, heads, tokens, tokens], got {_shape(attention)}")
    elif not torch.allclose(attention.float(), want, atol=1e-4):
        feedback.append("the attention does not belong to this image and model: use attention_maps(vit, image)")
    else:
        points += 1
    if points == 2:
        feedback.append(f"image {index}: a {CLASSES[label]} taken for a {CLASSES[predicted]}")
    return _result("attention", points, feedback)


# --- checks the notebook calls: run the answer, score it, print feedback ----------------------------

def _report(result: dict) -> None:
    RESULTS[result["task"]] = result
    print(f"[{result['task']}] {result['points']}/{result['max']} points: {result['feedback']}")


def _error(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def check_data(fn, dataset, k: int = 4) -> None:
    """Call ``fn(dataset, k)`` (one row of k indices per class) and print feedback."""
    try:
        indices = fn(dataset, k)
    except Exception as error:
        return _report(_result("data", 0, [f"your function raised {_error(error)}"]))
    return _report(score_data(indices, dataset.targets, k))


def check_patchify(fn) -> None:
    """Call ``fn(images, patch_size)`` on random images and print feedback."""
    cases, outputs = patchify_cases(seed=secrets.randbelow(1 << 30)), []  # keeps torch's RNG as it was
    for images, p in cases:
        try:
            outputs.append(fn(images.clone(), p))
        except Exception as error:
            outputs.append(_error(error))
    return _report(score_patchify(cases, outputs))


def check_config(config, n_patches) -> None:
    return _report(score_config(config, n_patches))


def check_training(vit, cnn, test_loader) -> None:
    measured = measure({"ViT": vit, "CNN": cnn}, test_loader)
    return _report(score_training(measured, []))


def check_comparison(rows, vit, cnn, test_loader) -> None:
    return _report(score_comparison(rows, measure({"ViT": vit, "CNN": cnn}, test_loader)))


def check_attention(index, attention, vit, test_set) -> None:
    return _report(score_attention(index, attention, vit, test_set))


def summary() -> str:
    """The in-notebook points so far (a guide; the grader scores again on its own)."""
    auto = {t: v for t, v in TASKS.items() if not v[2]}
    got = sum(RESULTS[t]["points"] for t in auto if t in RESULTS)
    manual = sum(v[1] for v in TASKS.values() if v[2])
    return (f"{got}/{sum(v[1] for v in auto.values())} automatic points "
            f"(+ {manual} points for the reflection, graded by hand)")
