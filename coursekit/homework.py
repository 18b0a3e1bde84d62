"""The Fashion-MNIST homework (notebook 04): its fixed data, its points, and the in-notebook checks.

The notebook makes one :class:`Checks` and calls one of its methods after each task: each scores the learner's
answer with :mod:`coursekit.scorers` (the config task with :mod:`coursekit.vitconfig`) and prints feedback
("expected shape [3, 16, 49], got [3, 49, 16]") without showing the solution. Nothing here computes
an answer: where a check would need one (the cost task's operation count, every cell of the
confusion matrix, the comparison's operation counts) it checks what the learner can compute too (a
plausible range, the matrix's totals) and says that the grader checks the rest. Those points are
only a guide: the instructor's grader (:mod:`coursekit.grading.grade`, with the task registry
:mod:`coursekit.grading.tasks`; neither is in the student edition) runs the notebook again and scores every
raw answer in its own process.
"""

from __future__ import annotations

import secrets

import torch

from .config import fast_or
from .bench import count_parameters
from .data import get_loaders
from .feedback import credit, show
from .scorers import (CLASSES, patchify_cases, score_attention, score_comparison,  # noqa: F401 (homework.CLASSES)
                      score_confusion_totals, score_data, score_patchify, score_training)
from .train import evaluate
from .vitconfig import DATASET, OPS_FACTOR, SIDE, patches, score_config  # noqa: F401 (homework.SIDE)

POINTS = {"data": 1, "patchify": 2, "config": 1, "cost": 2, "training": 3, "comparison": 1,
          "confusion": 2, "attention": 2, "reflection": 3}  # per task, in notebook order
MANUAL = ("reflection",)  # tasks graded by hand
THRESHOLDS = {"ViT": 0.90, "CNN": 0.91}  # test accuracy for all of a model's training points
FLOORS = {"ViT": 0.85, "CNN": 0.88}  # at or below: none of them; in between: a straight line
FAST_THRESHOLDS = {"ViT": 0.15, "CNN": 0.15}  # fast mode trains a few steps: "better than chance"
FAST_FLOORS = {"ViT": 0.10, "CNN": 0.10}
FAST_SUBSET = 2000  # images used in fast mode (CI), see coursekit.data.get_loaders(subset=...)
DATA_K = 4  # images per class the grader asks examples_per_class for
COST_PATCH_SIZES = (7, 4)  # the cost task: the operations with 49 patches against those with 16
FALLBACK_CONFIG = dict(patch_size=7, dim=64, depth=4, heads=4, dim_head=16, mlp_dim=128)
ANSWER_PLACEHOLDER = "_Your answer here._"  # what the student version shows in a written answer


def tidy(points: float) -> float | int:
    """Points rounded to 2 decimals, as an int when whole (1.0 -> 1): what reports and the CSV show."""
    points = round(points, 2)
    return int(points) if points == int(points) else points


def result(task: str, credit_: dict, points: float | None = None) -> dict:
    """``{"task", "points", "max", "feedback"}``: a scorer's credit turned into the task's points
    (``points``: the task's maximum, default :data:`POINTS`)."""
    points = POINTS[task] if points is None else points
    return {"task": task, "points": tidy(credit_["credit"] * points), "max": points,
            "feedback": credit_["feedback"]}


def loaders(batch_size: int = 128, augment: bool = False):
    """The homework's ``(train, val, test)`` loaders: all of Fashion-MNIST, or 2,000 images in fast mode.

    ``augment=True`` adds random crops and flips to the training images only; the split is the same.
    """
    return get_loaders(DATASET, batch_size=batch_size, subset=fast_or(None, FAST_SUBSET), augment=augment)


def training_targets() -> tuple[dict, dict]:
    """``(targets, floors)`` of the training task: the real ones, or fast mode's."""
    return fast_or(THRESHOLDS, FAST_THRESHOLDS), fast_or(FLOORS, FAST_FLOORS)


def tokens(patch_size: int) -> int:
    """Tokens a homework ViT reads with ``patch_size``: its patches and CLS."""
    return patches(patch_size) + 1


# --- the checks the notebook calls: run the answer, score it, print feedback -----------------------

def _error(error: BaseException) -> str:
    return f"{type(error).__name__}: {show(str(error), 200)}"


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _measured(vit, cnn, test_loader) -> dict:
    return {name: {"acc": evaluate(m, test_loader, _device(m))["acc"], "params": count_parameters(m)}
            for name, m in (("ViT", vit), ("CNN", cnn))}


class Checks:
    """One learner's check cells: ``checks = homework.Checks()``, then ``checks.data(...)`` after task 1,
    ``checks.patchify(...)`` after task 2, and so on; ``checks.summary()`` adds up the points.

    Each check prints its feedback and keeps its result in ``self.results`` (task -> result dict);
    it returns nothing, so a check cell shows only the printed line. The points are a guide for the
    learner: the grader ignores them and scores again on its own. Where a check cannot test all the
    grader tests (``grader_checks`` names the rest), the points it shows are "up to".
    """

    def __init__(self):
        self.results: dict[str, dict] = {}
        self.partial: set[str] = set()  # tasks whose points the grader may lower

    def _report(self, task: str, credit_: dict, grader_checks: str = "") -> None:
        r = self.results[task] = result(task, credit_)
        partial = grader_checks and r["points"] > 0
        self.partial.discard(task)
        if partial:
            self.partial.add(task)
        print(f"[{task}] {'up to ' if partial else ''}{r['points']:g}/{r['max']:g} points: {r['feedback']}"
              + (f" (the grader also checks {grader_checks})" if partial else ""))

    def data(self, fn, dataset, k: int = DATA_K) -> None:
        """Call ``fn(dataset, k)`` (one row of k indices per class) and check it."""
        try:
            indices = fn(dataset, k)
        except Exception as error:
            return self._report("data", credit(0, [f"your function raised {_error(error)}"]))
        return self._report("data", score_data(indices, dataset.targets, k))

    def patchify(self, fn) -> None:
        """Call ``fn(images, patch_size)`` on random images and check what it returns."""
        cases, outputs = patchify_cases(seed=secrets.randbelow(1 << 30)), []  # keeps torch's RNG as it was
        for images, p in cases:
            try:
                outputs.append(fn(images.clone(), p))
            except Exception as error:
                outputs.append(_error(error))
        return self._report("patchify", score_patchify(cases, outputs))

    def config(self, config, n_patches) -> None:
        return self._report("config", score_config(config, n_patches),
                            f"the operations rule: at most {OPS_FACTOR:g} times the CNN's per image")

    def cost(self, ratio) -> None:
        """Is ``ratio`` plausible? Between 2 and the squared token ratio: the grader counts it exactly."""
        few, many = (tokens(p) for p in COST_PATCH_SIZES)
        top = (many / few) ** 2
        if not isinstance(ratio, (int, float)) or isinstance(ratio, bool) or not 2 <= ratio <= top:
            return self._report("cost", credit(0, [
                f"cost_ratio={show(ratio)} is not plausible: linear layers grow with the tokens "
                f"({many}/{few} = {many / few:.2f}x), attention with their square ({top:.2f}x)"]))
        return self._report("cost", credit(1, [f"cost_ratio={ratio:.2f} is plausible"]),
                            "the ratio against its own count of your configuration's operations")

    def training(self, vit, cnn, test_loader) -> None:
        return self._report("training", score_training(_measured(vit, cnn, test_loader), [],
                                                          *training_targets()))

    def comparison(self, rows, vit, cnn, test_loader) -> None:
        return self._report("comparison", score_comparison(rows, _measured(vit, cnn, test_loader)),
                            "mflops_per_image against its own count")

    def confusion(self, matrix, pair, vit, test_loader) -> None:
        labels = torch.cat([y for _, y in test_loader])
        correct = round(evaluate(vit, test_loader, _device(vit))["acc"] * len(labels))
        per_class = torch.bincount(labels, minlength=len(CLASSES))
        return self._report("confusion", score_confusion_totals(matrix, pair, per_class, correct),
                            "every cell of the matrix")

    def attention(self, index, attention, vit, test_set) -> None:
        return self._report("attention", score_attention(index, attention, vit, test_set))

    def summary(self) -> str:
        """The points so far out of the automatic ones, and the reflection's, graded by hand."""
        auto = [t for t in POINTS if t not in MANUAL]
        got = sum(self.results[t]["points"] for t in auto if t in self.results)
        return (f"{'up to ' if self.partial else ''}{got:g}/{sum(POINTS[t] for t in auto):g} automatic points "
                f"(+ {sum(POINTS[t] for t in MANUAL):g} points for the reflection, graded by hand)")
