"""Is a homework ViT configuration allowed? Its rules, why a configuration breaks them, and the config task's score.

A homework ViT is ``build_model("vit", DATASET, **vit_config)``: at least :data:`MIN_PATCHES`
patches, at most :data:`MAX_DEPTH` layers, at most the CNN's parameters (:data:`PARAM_BUDGET`)
and, where the grader can count them, at most :data:`OPS_FACTOR` times the CNN's operations. Every
check builds its model on the meta device (shapes only, no memory for weights), so no setting a
learner tries can cost memory. The operation count is an argument: the grader's own
(:func:`coursekit.grading.tasks.count_ops`), which the student edition does not have.
"""

from __future__ import annotations

import torch
from torch import nn

from .bench import count_parameters
from .data import dataset_info
from .feedback import credit, shape_of, show
from .models import build_model

DATASET = "fashion_mnist"
SIDE = dataset_info(DATASET).image_size
MIN_PATCHES = 16
MAX_DEPTH = 64  # layers a homework ViT may have (more only slows the checks down)
OPS_FACTOR = 4  # a homework ViT may do at most this many times the CNN's operations per image


def patches(patch_size: int) -> int:
    """Patches of a homework image (SIDE x SIDE pixels) cut with ``patch_size``."""
    return (SIDE // patch_size) ** 2


def _on_meta(kind: str, **settings) -> nn.Module:
    """A homework model built on the meta device: shapes only, no memory for its weights, so any
    settings are safe to try."""
    with torch.device("meta"):
        return build_model(kind, DATASET, **settings).eval()


PARAM_BUDGET = count_parameters(_on_meta("cnn"))  # the ViT may have at most the CNN's parameters


def vit_problem(config, count_ops=None) -> str | None:
    """Why ``config`` is not a valid homework ViT (None when it is).

    count_ops: ``model -> operations of one image's forward pass`` (the grader's count, which the
    student edition does not have): with it, the operation rule (at most :data:`OPS_FACTOR` times
    the CNN's) is checked too; every check runs on meta-device models, so no setting can cost memory.
    """
    return _vit_params_and_problem(config, count_ops)[1]


def _vit_params_and_problem(config, count_ops=None) -> tuple[int | None, str | None]:
    """``(parameters or None if it does not build, why it is invalid or None)``: see :func:`vit_problem`."""
    if not isinstance(config, dict) or not isinstance(config.get("patch_size"), int):
        return None, f"vit_config must be a dict of settings with an int 'patch_size', got {shape_of(config)}"
    depth = config.get("depth", 1)
    if not isinstance(depth, int) or not 0 < depth <= MAX_DEPTH:
        return None, f"depth={show(depth)} must be a whole number from 1 to {MAX_DEPTH}"
    try:
        vit = _on_meta("vit", **config)
    except Exception as error:  # the learner's settings: any failure is feedback, not a crash
        return None, (f"build_model('vit', 'fashion_mnist', **vit_config) failed: "
                      f"{type(error).__name__}: {show(str(error), 200)}")
    n, params = patches(config["patch_size"]), count_parameters(vit)
    if n < MIN_PATCHES:
        return params, f"{n} patches is fewer than {MIN_PATCHES}: choose a smaller patch_size"
    if params > PARAM_BUDGET:
        return params, f"{params:,} parameters is over the budget of {PARAM_BUDGET:,}"
    if count_ops is not None:
        ops, budget = count_ops(vit), OPS_FACTOR * count_ops(_on_meta("cnn"))
        if ops > budget:
            return params, (f"{ops / 1e6:,.1f} M operations per image is over the budget of {budget / 1e6:.1f} M "
                            f"({OPS_FACTOR} times the CNN's): use fewer patches, a narrower or a shallower model")
    return params, None


def score_config(config, n_patches, count_ops=None) -> dict:
    """config: keyword overrides for build_model("vit", "fashion_mnist"); n_patches: the learner's count;
    count_ops: see :func:`vit_problem`.

    Half for a valid configuration (builds, >= 16 patches, within the parameter budget), half for
    its patch count.
    """
    params, problem = _vit_params_and_problem(config, count_ops)
    if params is None:  # it does not build: nothing to count patches of
        return credit(0, [problem])
    n = patches(config["patch_size"])
    earned, feedback = 0, [problem] if problem else []
    if not problem:
        earned += 1
        feedback.append(f"valid: {n} patches, {params:,} parameters")
    if isinstance(n_patches, int) and not isinstance(n_patches, bool) and n_patches == n:
        earned += 1
    else:
        feedback.append(f"n_patches={show(n_patches)} is not the number of patches of your configuration")
    return credit(earned / 2, feedback)
