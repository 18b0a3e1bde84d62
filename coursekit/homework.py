"""The Fashion-MNIST homework (notebook 04): its fixed data, its task registry, and the in-notebook checks.

Each task is one entry of :data:`TASKS`: its title, its points, whether it is graded by hand, the
snippet the grader runs in the submission's kernel to collect the raw answer, and the function that
scores that answer (with :mod:`coursekit.scorers`). The grader (:mod:`coursekit.grade`) knows no
task by name: adding a task is one entry here, plus its cells in the notebook.

The notebook calls the ``check_*`` functions after each task: they score the learner's answer with
the same scorers and print feedback ("expected shape [3, 16, 49], got [3, 49, 16]") without showing
the solution. Those points are only a guide: the grader collects the raw answers and scores them
again in its own process, so nothing the submission redefines can change its score.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Callable

import torch

from .bench import count_parameters, inference_time_ms
from .config import fast_or
from .data import get_dataset, get_loaders
from .models import build_model
from .scorers import (ACC_TOLERANCE, CLASSES, DATASET, MIN_PATCHES, PARAM_BUDGET, confusion_matrix,  # noqa: F401
                      credit, patchify_cases, reference_patchify, score_attention, score_comparison,
                      score_config, score_confusion, score_cost, score_data, score_patchify, score_training,
                      vit_problem)
from .train import evaluate, step_seconds

THRESHOLDS = {"ViT": 0.90, "CNN": 0.91}  # test accuracy for all of a model's training points
FLOORS = {"ViT": 0.85, "CNN": 0.88}  # at or below: none of them; in between: a straight line
FAST_THRESHOLDS = {"ViT": 0.15, "CNN": 0.15}  # fast mode trains a few steps: "better than chance"
FAST_FLOORS = {"ViT": 0.10, "CNN": 0.10}
FAST_SUBSET = 2000  # images used in fast mode (CI), see coursekit.data.get_loaders(subset=...)
DATA_K = 4  # images per class the grader asks examples_per_class for
COST_PATCH_SIZES = (7, 4)  # the cost task: a training step with 49 patches against one with 16
FALLBACK_CONFIG = dict(patch_size=7, dim=64, depth=4, heads=4, dim_head=16, mlp_dim=128)
ANSWER_PLACEHOLDER = "_Your answer here._"  # what the student version shows in a written answer
RESULTS: dict = {}  # in-notebook points of the check cells: a guide for the learner, not a grade


@dataclass(frozen=True)
class Task:
    """One homework task, everything about it in one place.

    collect: Python run in the submission's kernel (see :mod:`coursekit.collect`): it sets ``_out``
        to a dict of plain data, with ``_answer(name, call=None)`` to read a learner's variable and
        ``_inputs`` holding what ``inputs()`` returned.
    score: ``(answer, inputs, context) -> {"credit", "feedback"}`` in the grader's process; ``context``
        is a dict shared by the tasks of one submission, in notebook order.
    inputs: ``() -> dict`` of fresh inputs for the kernel (tensors, numbers), or None.
    fallback: code run in the kernel when the task earns nothing, so that later tasks can still run.
    """

    title: str
    points: float
    collect: str = ""
    score: Callable | None = None
    inputs: Callable | None = None
    manual: bool = False
    fallback: str = ""


def tidy(points: float) -> float | int:
    """Points rounded to 2 decimals, as an int when whole (1.0 -> 1): what reports and the CSV show."""
    points = round(points, 2)
    return int(points) if points == int(points) else points


def result(task: str, credit_: dict, tasks: dict | None = None) -> dict:
    """``{"task", "points", "max", "feedback"}``: a scorer's credit turned into the task's points."""
    points = (tasks or TASKS)[task].points
    return {"task": task, "points": tidy(credit_["credit"] * points), "max": points,
            "feedback": credit_["feedback"]}


def loaders(batch_size: int = 128, augment: bool = False):
    """The homework's ``(train, val, test)`` loaders: all of Fashion-MNIST, or 2,000 images in fast mode.

    ``augment=True`` adds random crops and flips to the training images only; the split is the same.
    """
    return get_loaders(DATASET, batch_size=batch_size, subset=fast_or(None, FAST_SUBSET), augment=augment)


def test_targets() -> torch.Tensor:
    """Labels [10000] of the full Fashion-MNIST test set."""
    return torch.as_tensor(get_dataset(DATASET, train=False).targets)


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


def measure(models: dict, test_loader, times: bool = True) -> dict:
    """``{name: {"acc", "params", "ms"}}`` measured here, not reported (ms: one image, batch 1)."""
    out = {}
    for name, m in models.items():
        device = next(m.parameters()).device
        out[name] = {"acc": evaluate(m, test_loader, device)["acc"], "params": count_parameters(m)}
        if times:
            out[name]["ms"] = inference_time_ms(m, (1, 28, 28), batch_size=1, device=device, min_run_time=0.2)
    return out


def vit_confusion(model, loader) -> torch.Tensor:
    """The confusion matrix [10, 10] of ``model`` on ``loader``: row = true class, column = prediction."""
    device = next(model.parameters()).device
    model.eval()
    predicted, labels = [], []
    with torch.no_grad():  # one pass over the loader: its labels and the model's predictions together
        for images, targets in loader:
            predicted.append(model(images.to(device)).argmax(1).cpu())
            labels.append(targets)
    return confusion_matrix(torch.cat(predicted), torch.cat(labels))


def cost_ratio(config: dict, batch_size: int = 128, rounds: int = 3) -> float:
    """How many times longer a training step (batch ``batch_size``, fp32) of the ViT ``config`` takes
    with patch size 4 (49 patches) than with 7 (16 patches): the median of ``rounds`` ratios, the two
    timed back to back so that a busy machine slows both. Torch's random state is left as it was.
    """
    ratios = []
    with torch.random.fork_rng():
        torch.manual_seed(0)
        images = torch.randn(batch_size, 1, 28, 28)
        models = [build_model("vit", DATASET, **dict(config, patch_size=p)) for p in COST_PATCH_SIZES]
        for _ in range(rounds):
            few, many = (step_seconds(m, images, "fp32", steps=3) for m in models)
            ratios.append(many / few)
    return sorted(ratios)[len(ratios) // 2]


def training_targets() -> tuple[dict, dict]:
    """``(targets, floors)`` of the training task: the real ones, or fast mode's."""
    return fast_or(THRESHOLDS, FAST_THRESHOLDS), fast_or(FLOORS, FAST_FLOORS)


# --- how the grader scores each collected answer -----------------------------------------------------

def _failed(value) -> str | None:
    return value if isinstance(value, str) else None  # the collector hands an error over as a string


def _grade_data(answer, inputs, context):
    if _failed(answer["indices"]):
        return credit(0, [f"examples_per_class: {answer['indices']}"])
    return score_data(answer["indices"], test_targets(), inputs["k"])


def _grade_config(answer, inputs, context):
    context["config"] = answer["config"]
    return score_config(answer["config"], answer["n_patches"])


def _usable_config(context) -> dict:
    config = context.get("config")
    return FALLBACK_CONFIG if vit_problem(config) else config


def _grade_cost(answer, inputs, context):
    return score_cost(answer["ratio"], cost_ratio(_usable_config(context)))


def _grade_training(answer, inputs, context):
    states = [answer[k] for k in ("vit", "cnn")]
    models, errors = load_models(_usable_config(context), *[s if isinstance(s, dict) else None for s in states])
    errors = [f"{n}: {s}" for n, s in zip(("vit", "cnn"), states) if _failed(s)] or errors
    context["models"], context["test"] = models, loaders()[2]
    context["measured"] = measure(models, context["test"]) if models else {}
    return score_training(context["measured"], errors, *training_targets())


def _grade_confusion(answer, inputs, context):
    vit = context.get("models", {}).get("ViT")
    if vit is None:
        return credit(0, ["no trained ViT to check against"])
    return score_confusion(answer["matrix"], answer["pair"], vit_confusion(vit, context["test"]))


def _grade_attention(answer, inputs, context):
    test = context.get("test") or loaders()[2]
    return score_attention(answer["index"], answer["attention"], context.get("models", {}).get("ViT"),
                           test.dataset)


TASKS: dict[str, Task] = {
    "data": Task(
        "Examples of each class", 1, inputs=lambda: {"k": DATA_K}, score=_grade_data,
        collect='from coursekit.data import get_dataset\n'
                '_out = {"indices": _answer("examples_per_class", '
                'lambda f: f(get_dataset("fashion_mnist", train=False), _inputs["k"]))}'),
    "patchify": Task(
        "patchify: image -> sequence of patches", 2,
        inputs=lambda: {"cases": patchify_cases(secrets.randbelow(1 << 30))},
        score=lambda answer, inputs, context: score_patchify(inputs["cases"], answer["outputs"]),
        collect='_out = {"outputs": [_answer("patchify", lambda f: f(x.clone(), p)) for x, p in _inputs["cases"]]}'),
    "config": Task(
        "A valid ViT configuration", 1, score=_grade_config,
        collect='_out = {"config": _answer("vit_config"), "n_patches": _answer("n_patches")}',
        fallback=f"vit_config = {FALLBACK_CONFIG!r}"),
    "cost": Task(
        "What 49 patches would cost", 2, score=_grade_cost, collect='_out = {"ratio": _answer("cost_ratio")}'),
    "training": Task(
        "Train the ViT and the CNN", 3, score=_grade_training,
        collect='_out = {"vit": _answer("vit", lambda m: m.state_dict()), '
                '"cnn": _answer("cnn", lambda m: m.state_dict())}'),
    "comparison": Task(
        "Comparison table", 1, collect='_out = {"rows": _answer("results")}',
        score=lambda answer, inputs, context: score_comparison(answer["rows"], context.get("measured", {}))),
    "confusion": Task(
        "Which classes the ViT confuses", 2, score=_grade_confusion,
        collect='_out = {"matrix": _answer("confusion"), "pair": _answer("most_confused")}'),
    "attention": Task(
        "Attention of a misclassified image", 2, score=_grade_attention,
        collect='_out = {"index": _answer("miss_index"), "attention": _answer("miss_attention")}'),
    "reflection": Task("Written reflection", 3, manual=True),
}


# --- checks the notebook calls: run the answer, score it, print feedback ----------------------------

def _report(task: str, credit_: dict) -> None:
    RESULTS[task] = result(task, credit_)
    r = RESULTS[task]
    print(f"[{task}] {r['points']:g}/{r['max']:g} points: {r['feedback']}")


def _error(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def check_data(fn, dataset, k: int = 4) -> None:
    """Call ``fn(dataset, k)`` (one row of k indices per class) and print feedback."""
    try:
        indices = fn(dataset, k)
    except Exception as error:
        return _report("data", credit(0, [f"your function raised {_error(error)}"]))
    return _report("data", score_data(indices, dataset.targets, k))


def check_patchify(fn) -> None:
    """Call ``fn(images, patch_size)`` on random images and print feedback."""
    cases, outputs = patchify_cases(seed=secrets.randbelow(1 << 30)), []  # keeps torch's RNG as it was
    for images, p in cases:
        try:
            outputs.append(fn(images.clone(), p))
        except Exception as error:
            outputs.append(_error(error))
    return _report("patchify", score_patchify(cases, outputs))


def check_config(config, n_patches) -> None:
    return _report("config", score_config(config, n_patches))


def check_cost(ratio, config) -> None:
    """Measure the cost ratio of ``config`` here (a few seconds) and score ``ratio`` against it."""
    return _report("cost", score_cost(ratio, cost_ratio(config)))


def check_training(vit, cnn, test_loader) -> None:
    measured = measure({"ViT": vit, "CNN": cnn}, test_loader, times=False)
    return _report("training", score_training(measured, [], *training_targets()))


def check_comparison(rows, vit, cnn, test_loader) -> None:
    return _report("comparison", score_comparison(rows, measure({"ViT": vit, "CNN": cnn}, test_loader)))


def check_confusion(matrix, pair, vit, test_loader) -> None:
    return _report("confusion", score_confusion(matrix, pair, vit_confusion(vit, test_loader)))


def check_attention(index, attention, vit, test_set) -> None:
    return _report("attention", score_attention(index, attention, vit, test_set))


def summary() -> str:
    """The in-notebook points so far (a guide; the grader scores again on its own)."""
    auto = {t: task for t, task in TASKS.items() if not task.manual}
    got = sum(RESULTS[t]["points"] for t in auto if t in RESULTS)
    manual = sum(task.points for task in TASKS.values() if task.manual)
    return (f"{got:g}/{sum(task.points for task in auto.values()):g} automatic points "
            f"(+ {manual:g} points for the reflection, graded by hand)")
