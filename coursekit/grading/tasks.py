"""The grader's task registry: how each homework task's answer is collected and scored.

Instructor only: this module is left out of the student edition, because the grader computes here
what the answers are checked against (operation counts, the confusion matrix of the learner's ViT,
accuracies on the test set read from the raw files).

Each task is one entry of :data:`TASKS`: its title, whether it is graded by hand, the snippet the
grader runs in the submission's kernel to collect the raw answer (see :mod:`coursekit.grading.collect`),
and the function that scores that answer with :mod:`coursekit.scorers` (the config task with
:mod:`coursekit.vitconfig`); its points live in :data:`coursekit.homework.POINTS`. The grader
(:mod:`coursekit.grading.grade`) knows no task by name: adding a task is one entry here and one in
``POINTS``, plus its cells in the notebook.
"""

from __future__ import annotations

import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from .. import homework as hw
from ..bench import count_parameters
from ..config import data_root, fast_or
from ..data import get_dataset, split_indices
from ..feedback import credit
from ..models import build_model
from ..scorers import (patchify_cases, score_attention, score_comparison, score_confusion, score_cost, score_data,
                      score_patchify, score_training)
from ..tensordata import TensorLoader, load_split
from ..train import evaluate
from ..vitconfig import DATASET, SIDE, score_config, vit_problem


@dataclass(frozen=True)
class Task:
    """One homework task, everything the grader needs about it in one place.

    collect: Python run in the submission's kernel (see :mod:`coursekit.grading.collect`): it sets ``_out``
        to a dict of plain data, with ``_answer(name, call=None)`` to read a learner's variable and
        ``_inputs`` holding what ``inputs()`` returned.
    score: ``(answer, inputs, context: Context) -> {"credit", "feedback"}`` in the grader's process.
    inputs: ``() -> dict`` of fresh inputs for the kernel (tensors, numbers), or None.
    fallback: code run in the kernel when the answer cannot serve later tasks (the score says so with
        ``"unusable": True``; by default, when it earns nothing), so that later tasks can still run.
    """

    title: str
    points: float
    collect: str = ""
    score: Callable | None = None
    inputs: Callable | None = None
    manual: bool = False
    fallback: str = ""


@dataclass
class Context:
    """What the tasks of one submission share, filled in notebook order by the tasks named.

    kernel_data: the data folder the kernel sees (:func:`make_kernel_data`), whose test split is the
    homework's held-out training images; the real test images are read only here, for the
    training task's accuracy.
    """

    kernel_data: Path | None = None
    config: dict | None = None  # "config": the learner's ViT settings, if valid
    models: dict = field(default_factory=dict)  # "training": {"ViT": model, "CNN": model} rebuilt here
    measured: dict = field(default_factory=dict)  # "training": {name: {"acc", "params", "mflops", ...}}
    test: TensorLoader | None = None  # the kernel's test split (held-out images), decoded here


# --- what answers are checked against, computed here --------------------------------------------------

def test_loader(root=None) -> TensorLoader:
    """The homework's test split (:func:`coursekit.homework.loaders`: all of it, or fast mode's subset)
    in the data folder ``root`` (default: the real one), decoded from the raw files: never from a
    cache a kernel could have written."""
    test = load_split(DATASET, train=False, root=root, cache=False)
    subset = fast_or(None, hw.FAST_SUBSET)
    indices = None
    if subset is not None:
        _, _, indices = split_indices(get_dataset(DATASET, train=True).targets, test.targets, subset=subset)
    return TensorLoader(test, indices, batch_size=128)  # as the notebook's loader: the same sums


def make_kernel_data(folder) -> Path:
    """Make the data folder a submission's kernel sees, in ``folder``: Fashion-MNIST's training files
    as they are, and in place of its test files the training images that the homework's loaders hold
    out for validation. No kernel can read a test image, so none can train on one; the accuracy
    points are measured on the real test images, here (:func:`coursekit.scorers.credited_accuracy`)."""
    raw = Path(folder) / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    source = data_root() / "FashionMNIST" / "raw"
    if not (source / "train-labels-idx1-ubyte").exists():  # check_data names what is missing
        return Path(folder)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        shutil.copyfile(source / name, raw / name)
    train = load_split(DATASET, train=True, cache=False)
    _, held_out, _ = split_indices(train.targets, train.targets[:0])  # homework.loaders' validation images
    _write_idx(raw / "t10k-images-idx3-ubyte", train.images[held_out, 0])
    _write_idx(raw / "t10k-labels-idx1-ubyte", train.targets[held_out])
    for path in (Path(folder), *Path(folder).rglob("*")):  # readable by the kernel's own user
        path.chmod(0o755 if path.is_dir() else 0o644)
    return Path(folder)


def _write_idx(path: Path, array: torch.Tensor) -> None:
    """uint8 ``array`` in the IDX format torchvision reads (magic 0x08, then its dimensions)."""
    header = bytes([0, 0, 0x08, array.dim()]) + b"".join(n.to_bytes(4, "big") for n in array.shape)
    path.write_bytes(header + array.to(torch.uint8).contiguous().numpy().tobytes())


def flops(model, images: torch.Tensor) -> int:
    """Floating-point operations of one forward pass of ``model`` on ``images``, as torch counts them."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.eval()(images)
    return counter.get_total_flops()


def count_ops(model) -> int:
    """Operations of one homework image's forward pass through ``model`` (on its device, meta too)."""
    device = next(model.parameters()).device
    return flops(model, torch.zeros(1, 1, SIDE, SIDE, device=device))


def flop_ratio(config: dict) -> float:
    """How many times the operations of the ViT ``config`` with 49 patches outnumber those with 16
    (one forward pass; a training step gives the same ratio). Torch's random state is kept."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        few, many = (count_ops(build_model("vit", DATASET, **dict(config, patch_size=p)))
                     for p in hw.COST_PATCH_SIZES)
    return many / few


def measure(models: dict, loader, test=None) -> dict:
    """``{name: {"acc", "n", "params", "mflops"}}`` of each model on ``loader`` (mflops: one image's
    forward pass), and with a ``test`` loader ``"test_acc"`` and ``"test_n"`` on it too."""
    out = {}
    for name, m in models.items():
        out[name] = {"acc": evaluate(m, loader, "cpu")["acc"], "n": len(loader.dataset),
                     "params": count_parameters(m), "mflops": count_ops(m) / 1e6}
        if test is not None:
            out[name].update(test_acc=evaluate(m, test, "cpu")["acc"], test_n=len(test.dataset))
    return out


def confusion_of(model, loader) -> torch.Tensor:
    """Counts [10, 10] of ``model`` on ``loader``: row = true class, column = prediction."""
    model.eval()
    with torch.no_grad():
        pairs = torch.cat([labels * 10 + model(images).argmax(1) for images, labels in loader])
    return torch.bincount(pairs, minlength=100).reshape(10, 10)


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


def check_data() -> None:
    """``FileNotFoundError`` naming the folder and the fix unless the data the grader scores against is here."""
    get_dataset(DATASET, train=False, download=False)
    get_dataset(DATASET, train=True, download=False)


# --- how each collected answer is scored ---------------------------------------------------------------

def _failed(value) -> str | None:
    return value if isinstance(value, str) else None  # the collector hands an error over as a string


def _grade_data(answer, inputs, context: Context):
    if _failed(answer["indices"]):
        return credit(0, [f"examples_per_class: {answer['indices'][:200]}"])
    targets = load_split(DATASET, train=False, root=context.kernel_data, cache=False).targets
    return score_data(answer["indices"], targets, inputs["k"])


def _grade_config(answer, inputs, context: Context):
    context.config = None if vit_problem(answer["config"], count_ops) else answer["config"]
    # an invalid configuration may still earn its patch count's half; later tasks use the fallback
    return dict(score_config(answer["config"], answer["n_patches"], count_ops), unusable=context.config is None)


def _grade_cost(answer, inputs, context: Context):
    return score_cost(answer["ratio"], flop_ratio(context.config or hw.FALLBACK_CONFIG))


def _grade_training(answer, inputs, context: Context):
    states = [answer[k] for k in ("vit", "cnn")]
    models, errors = load_models(context.config or hw.FALLBACK_CONFIG,
                                 *[s if isinstance(s, dict) else None for s in states])
    errors = [f"{n}: {s[:200]}" for n, s in zip(("vit", "cnn"), states) if _failed(s)] or errors
    context.models, context.test = models, test_loader(context.kernel_data)
    context.measured = measure(models, context.test, test_loader())  # accuracy points: the real test set
    return score_training(context.measured, errors, *hw.training_targets())


def _grade_confusion(answer, inputs, context: Context):
    vit = context.models.get("ViT")
    if vit is None:
        return credit(0, ["no trained ViT to check against"])
    return score_confusion(answer["matrix"], answer["pair"], confusion_of(vit, context.test))


def _grade_attention(answer, inputs, context: Context):
    test = context.test or test_loader(context.kernel_data)
    return score_attention(answer["index"], answer["attention"], context.models.get("ViT"), test.dataset)


TASKS: dict[str, Task] = {
    "data": Task(
        "Examples of each class", hw.POINTS["data"], inputs=lambda: {"k": hw.DATA_K}, score=_grade_data,
        collect='from coursekit.data import get_dataset\n'
                '_out = {"indices": _answer("examples_per_class", '
                f'lambda f: f(get_dataset("{DATASET}", train=False), _inputs["k"]))}}'),
    "patchify": Task(
        "patchify: image -> sequence of patches", hw.POINTS["patchify"],
        inputs=lambda: {"cases": patchify_cases(secrets.randbelow(1 << 30))},
        score=lambda answer, inputs, context: score_patchify(inputs["cases"], answer["outputs"]),
        collect='_out = {"outputs": [_answer("patchify", lambda f: f(x.clone(), p)) for x, p in _inputs["cases"]]}'),
    "config": Task(
        "A valid ViT configuration", hw.POINTS["config"], score=_grade_config,
        collect='_out = {"config": _answer("vit_config"), "n_patches": _answer("n_patches")}',
        fallback=f"vit_config = {hw.FALLBACK_CONFIG!r}"),
    "cost": Task(
        "What 49 patches would cost", hw.POINTS["cost"], score=_grade_cost,
        collect='_out = {"ratio": _answer("cost_ratio")}'),
    "training": Task(
        "Train the ViT and the CNN", hw.POINTS["training"], score=_grade_training,
        collect='_out = {"vit": _answer("vit", lambda m: m.state_dict()), '
                '"cnn": _answer("cnn", lambda m: m.state_dict())}'),
    "comparison": Task(
        "Comparison table", hw.POINTS["comparison"], collect='_out = {"rows": _answer("results")}',
        score=lambda answer, inputs, context: score_comparison(answer["rows"], context.measured)),
    "confusion": Task(
        "Which classes the ViT confuses", hw.POINTS["confusion"], score=_grade_confusion,
        collect='_out = {"matrix": _answer("confusion"), "pair": _answer("most_confused")}'),
    "attention": Task(
        "Attention of a misclassified image", hw.POINTS["attention"], score=_grade_attention,
        collect='_out = {"index": _answer("miss_index"), "attention": _answer("miss_attention")}'),
    "reflection": Task("Written reflection", hw.POINTS["reflection"], manual=True),
}
