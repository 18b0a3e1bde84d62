"""How far to believe a map: deletion and insertion curves, the randomization check, why rollout flattens.

A map (raw attention, rollout, gradient rollout) ranks the patches of an image. Two questions test
that ranking against the model instead of against our eyes:

- **Does the model need what the map points at?** Remove the patches in the map's order and watch
  the probability of the model's answer (:func:`deletion_curve`); or start from nothing and add
  them (:func:`insertion_curve`). A faithful map drops the probability fast when deleting (small
  area under the curve) and raises it fast when inserting (large area). A random order
  (:func:`random_ranking`) is the floor any map must beat.
- **Does the map depend on the model at all?** Re-initialize the model's weights and compare the
  maps before and after (:func:`randomization_check`, Adebayo et al., "Sanity Checks for Saliency
  Maps", NeurIPS 2018). A map that barely changes explains the image, not the model.

Patches are numbered 0..P-1 here (row by row, as ``cls_map`` lays them out); in the token
numbering of :mod:`coursekit.viz` patch ``i`` is token ``i + 1``.
"""

from __future__ import annotations

import copy
import math
from typing import Callable, NamedTuple

import torch
from torch import nn

from .maps import attention_maps, attention_rollout, cls_map, gradient_rollout
from .train import eval_mode
from .viz import patch_tokens


class Curve(NamedTuple):
    """A deletion or insertion curve, averaged over images."""

    share: torch.Tensor  # [steps + 1]: share of the patches removed (deletion) or inserted (insertion), 0..1
    prob: torch.Tensor  # [steps + 1]: mean softmax probability of each image's original prediction
    aucs: torch.Tensor  # [B]: each image's area under its curve (trapezoid rule over share)
    auc: float  # the mean of aucs, which is also the area under the mean curve ``prob``


def patch_ranking(grid: torch.Tensor) -> torch.Tensor:
    """Patches from the highest value of a map to the lowest: ``[B, P]`` patch indices 0..P-1.

    grid: [B, g, g], e.g. ``cls_map(attention_rollout(maps))`` or ``gradient_rollout(...)``.
    Ties keep row-by-row order (a stable sort), so a ranking repeats exactly.
    """
    if grid.dim() != 3 or grid.shape[-1] != grid.shape[-2]:
        raise ValueError(f"grid must be maps over the patch grid [B, g, g], got {tuple(grid.shape)}; "
                         "use cls_map(attention) or gradient_rollout(model, images, target)")
    return grid.flatten(1).argsort(dim=-1, descending=True, stable=True)


def random_ranking(n_images: int, n_patches: int, seed: int = 0) -> torch.Tensor:
    """A random order of the patches for each image: ``[n_images, n_patches]``, repeatable by ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n_images, n_patches, generator=generator).argsort(dim=-1)


def _check_ranking(images: torch.Tensor, ranking: torch.Tensor) -> int:
    """Raise a ValueError with a fix for a bad pair; return the grid side g."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[-1] != images.shape[-2]:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be square images [B, C, H, H], got {shape}; "
                         "for one image use images.unsqueeze(0)")
    if ranking.dim() != 2 or len(ranking) != len(images):
        raise ValueError(f"ranking must be [B, P] with one row per image ({len(images)} images), got "
                         f"{tuple(ranking.shape)}; make it with patch_ranking(grid) or random_ranking(B, P)")
    g = math.isqrt(ranking.shape[1])
    if g * g != ranking.shape[1] or not 1 <= g <= images.shape[-1]:
        raise ValueError(f"{ranking.shape[1]} patches are not a square grid that fits {images.shape[-1]}"
                         f"x{images.shape[-1]} images; rank the g*g patches of cls_map(...) [B, g, g]")
    expected = torch.arange(g * g).expand_as(ranking)
    if not torch.equal(ranking.sort(dim=-1).values.cpu(), expected):
        raise ValueError("every row of ranking must name each patch 0..P-1 exactly once; "
                         "make it with patch_ranking(grid) or random_ranking(B, P)")
    return g


@torch.no_grad()
def _curve(model, images, ranking, steps, baseline, batch_size, insert: bool) -> Curve:
    g = _check_ranking(images, ranking)
    P = g * g
    steps = P if steps is None else steps
    if not 1 <= steps <= P:
        raise ValueError(f"steps={steps} must be between 1 and the number of patches, {P}")
    counts = torch.round(torch.linspace(0, P, steps + 1)).long()  # patches removed (or inserted) so far
    tokens = patch_tokens(g, images.shape[-1]) - 1  # [H, W]: the patch 0..P-1 under each pixel
    device = next(model.parameters()).device
    probs = []
    with eval_mode(model):
        for start in range(0, len(images), batch_size):
            x = images[start:start + batch_size].to(device)
            place = ranking[start:start + batch_size].argsort(dim=-1).to(device)  # [b, P]: each patch's place
            pixel_place = place[:, tokens.to(device)][:, None]  # [b, 1, H, W]: the place of each pixel's patch
            base = torch.as_tensor(baseline, dtype=x.dtype, device=device).expand_as(x)
            predicted = model(x).argmax(dim=-1, keepdim=True)  # [b, 1]: the original prediction
            rows = []
            for n in counts.tolist():
                chosen = pixel_place < n  # pixels of the first n patches in the ranking
                x_n = torch.where(chosen, x, base) if insert else torch.where(chosen, base, x)
                rows.append(model(x_n).float().softmax(-1).gather(1, predicted)[:, 0].cpu())
            probs.append(torch.stack(rows, dim=1))  # [b, steps + 1]
    per_image = torch.cat(probs)
    share = counts.float() / P
    aucs = torch.trapezoid(per_image, share, dim=-1)
    return Curve(share, per_image.mean(0), aucs, float(aucs.mean()))


def deletion_curve(model: nn.Module, images: torch.Tensor, ranking: torch.Tensor, steps: int | None = None,
                   baseline=0.0, batch_size: int = 256) -> Curve:
    """Remove the patches in ranked order and record the probability of the model's original answer.

    images: [B, C, H, H], normalized like the training data; ranking: [B, P] patch indices 0..P-1,
    most important first (:func:`patch_ranking` of a map over the g x g patch grid, P = g*g, or
    :func:`random_ranking`). Each patch is the square of pixels that :func:`coursekit.viz.patch_tokens`
    gives its token: for a ViT exactly its patch, for a hybrid (a stem before the ViT) the image
    square its token's feature-map patch comes from (image side / g pixels).
    steps: how many times to remove patches (default P, one patch a step); step k removes the first
    round(k * P / steps). baseline: what a removed pixel becomes, in normalized units: a number or a
    tensor broadcastable to [C, H, H]. The default 0 is the training set's mean pixel (normalization
    subtracts it), which says nothing about any one image; on MNIST, whose background is black, the
    normalized black pixel (``images.min()``) erases a patch instead of painting it grey. For a
    vit-pytorch ViT every constant baseline gives the same curves: its first LayerNorm standardizes
    each patch, so a constant patch is the same input whatever its value. For a hybrid (its
    convolutions see the pixels) or a baseline that varies within a patch, the curves depend on the
    choice: state it.
    The original prediction is the model's argmax on the whole image; the probability is its
    softmax. Returns a :class:`Curve`: ``share`` [steps + 1] (0..1), ``prob`` [steps + 1] (averaged
    over images), ``aucs`` [B] and their mean ``auc``. Lower deletion AUC: the map found what the
    model needs. Runs in eval mode on the model's device, ``batch_size`` images at a time.
    """
    return _curve(model, images, ranking, steps, baseline, batch_size, insert=False)


def insertion_curve(model: nn.Module, images: torch.Tensor, ranking: torch.Tensor, steps: int | None = None,
                    baseline=0.0, batch_size: int = 256) -> Curve:
    """The mirror of :func:`deletion_curve`: start from the baseline image and put the patches back
    in ranked order. Same arguments and result; here a higher AUC is better (the model recovers its
    answer from the first few patches the map names)."""
    return _curve(model, images, ranking, steps, baseline, batch_size, insert=True)


def explanations(model: nn.Module, images: torch.Tensor, target) -> dict[str, torch.Tensor]:
    """The course's three maps of each image over the patch grid: ``{name: [B, g, g]}``.

    "attention, last layer": the CLS row of the last layer, heads averaged; "rollout":
    ``attention_rollout`` (heads averaged, nothing discarded); "gradient rollout": for class
    ``target`` (an int or [B] class indices, e.g. the model's predictions).
    images: [B, C, H, W], normalized like the training data.
    """
    maps = attention_maps(model, images)
    return {"attention, last layer": cls_map(maps[:, -1].mean(dim=1)),
            "rollout": cls_map(attention_rollout(maps)),
            "gradient rollout": gradient_rollout(model, images, target)}


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of each pair of maps: ``[B]`` in [-1, 1].

    a, b: [B, ...] (e.g. maps [B, g, g]), compared image by image over all their entries. Tied
    values share their mean rank; a map whose entries are all equal has no order, so its
    correlation is NaN (``torch.nanmean`` leaves it out of a mean).
    """
    if a.shape != b.shape or a.dim() < 2:
        raise ValueError(f"a and b must be maps of the same shape [B, ...], got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}; compare the same images' maps")
    ra, rb = (_average_ranks(t.flatten(1).double()) for t in (a, b))
    ra, rb = ra - ra.mean(-1, keepdim=True), rb - rb.mean(-1, keepdim=True)
    return ((ra * rb).sum(-1) / (ra.norm(dim=-1) * rb.norm(dim=-1))).float()


def _average_ranks(x: torch.Tensor) -> torch.Tensor:
    """[B, n] -> [B, n]: each entry's rank 0..n-1 in its row, tied entries sharing their mean rank."""
    values, order = x.sort(dim=-1, stable=True)
    starts = torch.ones_like(values, dtype=torch.bool)
    starts[:, 1:] = values[:, 1:] != values[:, :-1]
    group = starts.cumsum(-1) - 1  # [B, n]: which run of equal values each sorted entry is in
    position = torch.arange(x.shape[1], dtype=x.dtype).expand_as(x)
    total = torch.zeros_like(x).scatter_add_(1, group, position)
    count = torch.zeros_like(x).scatter_add_(1, group, torch.ones_like(x))
    return torch.empty_like(x).scatter_(1, order, (total / count.clamp_min(1)).gather(1, group))


def randomization_stages(model: nn.Module) -> list[tuple[str, list]]:
    """The model's parts from the output down, as Adebayo et al. randomize them one after another:
    ``[(name, [modules or parameters]), ...]``: the head (with the final LayerNorm), each transformer
    block from the last to the first, then the embedding (patch embedding, CLS token, position
    embeddings; a hybrid's convolutional stem too). For vit-pytorch's ViT and DeepViT and the
    course's Hybrid."""
    net = model.vit if hasattr(model, "vit") else model
    if not all(hasattr(net, a) for a in ("transformer", "mlp_head", "to_patch_embedding")):
        raise ValueError(f"{type(model).__name__} is not a vit-pytorch ViT or DeepViT or coursekit's Hybrid: "
                         "randomization_stages needs its transformer, mlp_head and to_patch_embedding")
    head = [net.mlp_head] + ([net.transformer.norm] if hasattr(net.transformer, "norm") else [])
    blocks = [(f"block {i + 1}", [block]) for i, block in reversed(list(enumerate(net.transformer.layers)))]
    embedding = [net.to_patch_embedding, net.cls_token, net.pos_embedding] + ([model.stem] if net is not model else [])
    return [("head", head), *blocks, ("embedding", embedding)]


def randomized_copy(model: nn.Module, top: int | None = None, seed: int = 0) -> nn.Module:
    """A deep copy of ``model`` whose ``top`` stages of :func:`randomization_stages` (from the output
    down; None: all) are re-initialized as a new model's are: each layer's ``reset_parameters`` (PyTorch's
    default initialization, which vit-pytorch keeps), the CLS token and position embeddings drawn from
    a standard normal as vit-pytorch draws them. ``model`` itself is not touched; ``seed`` fixes the
    new weights and leaves torch's random state as it was."""
    stages = randomization_stages(model)
    top = len(stages) if top is None else top
    if not 0 <= top <= len(stages):
        raise ValueError(f"top={top} must be between 0 (nothing re-initialized) and {len(stages)} (all stages)")
    copied = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for _, parts in randomization_stages(copied)[:top]:
            for part in parts:
                if isinstance(part, nn.Parameter):
                    part.normal_()
                    continue
                for module in part.modules():
                    if hasattr(module, "reset_parameters"):
                        module.reset_parameters()
    return copied


def randomization_check(model: nn.Module, images: torch.Tensor,
                        explain: Callable[[nn.Module, torch.Tensor], dict], top: int | None = None,
                        seed: int = 0) -> dict[str, float]:
    """How alike each map stays when the model's weights are re-initialized: ``{name: mean Spearman}``.

    explain(model, images) -> {name: [B, g, g]}, e.g.
    ``lambda m, x: explanations(m, x, target)``, with the same ``target`` for both models so that
    each map answers the same question. The maps of ``model`` and of
    ``randomized_copy(model, top, seed)`` are compared image by image (:func:`spearman`) and averaged.
    How to read it: 1 means the map did not change when the learned weights were thrown away, so it
    shows something about the image (its edges, where the ink is) rather than what this model
    learned; a faithful map of a trained model should fall towards 0 as more stages are randomized
    (``top`` = 1, 2, ...: cascading from the output, as Adebayo et al. do). top=0 changes nothing and
    gives 1 for every map.
    """
    before = explain(model, images)
    after = explain(randomized_copy(model, top, seed), images)
    return {name: float(torch.nanmean(spearman(before[name], after[name]))) for name in before}


def rollout_flattening(maps: torch.Tensor) -> dict[str, torch.Tensor]:
    """Why rollout maps look flat, as numbers per layer: ``{name: [layers]}``, each averaged over images.

    maps: [B, layers, heads, tokens, tokens] (softmax rows). Rollout adds the identity for the residual
    and renormalizes, so each layer keeps at least half of every token on itself:
    "kept on the diagonal" is the mean diagonal of rownorm(mean_heads(A) + I), (A_ii + 1) / 2 >= 0.5.
    Multiplying such near-identity matrices averages the patches into each other layer after layer.
    The other entries are the spread (largest minus smallest weight) of the CLS row over the patches:
    "one head" (the mean over heads of each head's spread in that layer), "heads averaged" (the spread
    of that layer's mean over heads) and "rollout" (the spread of the rollout up to that layer).
    """
    if maps.dim() != 5:
        raise ValueError(f"maps must be [B, layers, heads, tokens, tokens], got {tuple(maps.shape)}; "
                         "pass attention_maps(model, images)")

    def spread(grid):  # [..., g, g] -> [...]: largest minus smallest patch weight
        return grid.flatten(-2).amax(-1) - grid.flatten(-2).amin(-1)

    fused = maps.mean(dim=2)  # [B, L, T, T]
    with_identity = fused + torch.eye(fused.shape[-1])
    diagonal = with_identity.diagonal(dim1=-2, dim2=-1) / with_identity.sum(dim=-1)  # [B, L, T]
    rollouts = torch.stack([attention_rollout(maps[:, :n]) for n in range(1, maps.shape[1] + 1)], dim=1)
    return {"kept on the diagonal": diagonal.mean(dim=(0, 2)),
            "one head": spread(cls_map(maps)).mean(dim=(0, 2)),
            "heads averaged": spread(cls_map(fused)).mean(dim=0),
            "rollout": spread(cls_map(rollouts)).mean(dim=0)}
