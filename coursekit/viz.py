"""Pictures of attention: maps over images on one colour scale, layer x head grids, rollout,
relevance, position embeddings, the ViT paper's figure 7 (patch-embedding filters, attention
distance) and deletion curves (the interactive explorer is :mod:`coursekit.explorer`).

The numbers they draw come from :mod:`coursekit.maps` (attention maps, rollout, gradient rollout)
and :mod:`coursekit.faithfulness` (deletion and insertion curves), which a notebook imports itself.
"""

from __future__ import annotations

import io
import math
import textwrap

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import nn
from torch.nn import functional as F

from .maps import cls_map, mean_attention_distance, position_similarity, self_share, token_map
from .train import eval_mode


def upsample(grid: torch.Tensor, size: int, smooth: bool = False) -> torch.Tensor:
    """A patch grid [g, g] scaled up to [size, size] (each patch a flat square: a pixel takes the patch
    its centre lies in, as :func:`patch_square` outlines it), or smoothly (bilinear) with ``smooth``."""
    mode = dict(mode="bilinear", align_corners=False) if smooth else dict(mode="nearest-exact")
    return F.interpolate(grid[None, None].float(), size=(size, size), **mode)[0, 0]


def patch_square(token: int, g: int, size: int) -> tuple[float, float, float]:
    """``(x, y, side)``: the square of patch token ``token`` (1..g*g, row by row; 0 is CLS) in a
    [size, size] picture, in imshow's coordinates (pixel centres at whole numbers)."""
    if not 1 <= token <= g * g:
        raise ValueError(f"token {token} is not a patch of a {g}x{g} grid: patches are 1..{g * g} (0 is CLS)")
    row, col = divmod(token - 1, g)
    side = size / g
    return col * side - 0.5, row * side - 0.5, side


def patch_tokens(g: int, size: int) -> torch.Tensor:
    """[size, size]: the patch token (1..g*g) under each pixel, as :func:`upsample` draws the grid."""
    return upsample(torch.arange(1, g * g + 1).reshape(g, g), size).round().long()


def display_image(image: torch.Tensor):
    """image: [C, H, W], any scale -> an array matplotlib shows, scaled to [0, 1]."""
    image = image.detach().float().cpu()
    image = (image - image.min()) / (image.max() - image.min()).clamp_min(1e-8)
    return image[0].numpy() if image.shape[0] == 1 else image.permute(1, 2, 0).numpy()


def overlay(ax, image: torch.Tensor, grid: torch.Tensor, vmax: float, smooth: bool = False,
            alpha: float = 0.6, query: int = 0):
    """Draw image [C, H, W] in gray and the patch grid [g, g] over it on the scale [0, vmax];
    a patch query (1..g*g) is outlined in cyan. Returns the overlay (for a colourbar)."""
    from matplotlib.patches import Rectangle

    ax.imshow(display_image(image), cmap="gray")
    im = ax.imshow(upsample(grid, image.shape[-1], smooth).numpy(), cmap="inferno", alpha=alpha,
                   vmin=0.0, vmax=vmax)
    if query:
        x, y, side = patch_square(query, grid.shape[-1], image.shape[-1])
        ax.add_patch(Rectangle((x, y), side, side, fill=False, color="cyan", lw=1.5))
    ax.set_xticks([])
    ax.set_yticks([])
    return im


def query_name(query: int) -> str:
    """How pictures name token ``query``: "CLS" for 0, else "patch 7"."""
    return "CLS" if query == 0 else f"patch {query}"


def plot_attention_grid(maps: torch.Tensor, image: torch.Tensor, title: str = "", query: int = 0,
                        layers=None, smooth: bool = False) -> Figure:
    """Token ``query``'s attention (0 = CLS) of every layer (rows) and head (columns) over the image,
    all panels on one colour scale with one colourbar; each panel notes the token's self-share.

    maps: [layers, heads, tokens, tokens] for one image; image: [C, H, W]; title: e.g. the image,
    its label, the prediction and its confidence; layers: indices of the rows to show (default all;
    ``[l]`` puts all heads of layer l side by side).
    """
    if maps.dim() != 4:
        raise ValueError(f"maps must be [layers, heads, tokens, tokens] for one image, got "
                         f"{tuple(maps.shape)}; pass attention_maps(model, images)[i]")
    rows = list(range(maps.shape[0])) if layers is None else list(layers)
    heads = maps.shape[1]
    grids, own = token_map(maps[rows], query), self_share(maps[rows], query)
    vmax = float(grids.max())
    fig = Figure(figsize=(1.7 * heads + 1.0, 1.75 * len(rows) + 0.5), layout="constrained")
    axes = fig.subplots(len(rows), heads, squeeze=False)
    for r, layer in enumerate(rows):
        for h in range(heads):
            im = overlay(axes[r, h], image, grids[r, h], vmax, smooth, query=query)
            axes[r, h].set_title(f"Layer {layer + 1}, Head {h + 1}", fontsize=8)
            axes[r, h].set_xlabel(f"to itself {float(own[r, h]):.2f}", fontsize=7)
    fig.colorbar(im, ax=axes, shrink=0.8, label=f"attention of {query_name(query)} (one scale)")
    fig.suptitle(f"{title}{': ' if title else ''}{query_name(query)} -> patches", fontsize=9)
    return fig


def plot_cls_attention(attention: torch.Tensor, images: torch.Tensor, titles=None,
                       smooth: bool = False, label: str = "CLS attention") -> Figure:
    """For each image, the CLS token's row over the patches drawn as blocks on the patch grid, all on
    one colour scale from 0 with a colourbar whose line marks uniform attention (1 / tokens); under
    each map: its range against uniform, and the CLS token's share for itself (not a patch, so not in
    the map). A map close to uniform looks flat here instead of inventing detail.

    attention: [B, tokens, tokens], e.g. attention_rollout(maps) or maps[:, layer].mean(1);
    images: [B, C, H, W]; titles: one string per image (see :func:`prediction_titles`);
    smooth: bilinear instead of blocks (it suggests detail finer than a patch).
    """
    n = len(images)
    fig = Figure(figsize=(2.0 * n + 1.0, 4.6), layout="constrained")
    axes = fig.subplots(2, n, squeeze=False)
    grids, own = cls_map(attention), self_share(attention)
    vmax, uniform = float(grids.max()), 1.0 / attention.shape[-1]
    for i in range(n):
        axes[0, i].imshow(display_image(images[i]), cmap="gray")
        axes[0, i].set_axis_off()
        if titles is not None:  # wrapped to the panel's width
            axes[0, i].set_title(textwrap.fill(titles[i], 26), fontsize=8)
        im = overlay(axes[1, i], images[i], grids[i], vmax, smooth, alpha=0.65)
        axes[1, i].set_xlabel(f"{float(grids[i].min()):.3f} to {float(grids[i].max()):.3f} "
                              f"(uniform {uniform:.3f})\nCLS to itself {float(own[i]):.2f}", fontsize=7)
    bar = fig.colorbar(im, ax=axes[1], shrink=0.9, label=f"{label}\n(line: uniform, 1/{attention.shape[-1]})")
    bar.ax.axhline(uniform, color="cyan", lw=1.5)
    return fig


def plot_relevance(relevance: torch.Tensor, images: torch.Tensor, titles, smooth: bool = False) -> Figure:
    """Maps [B, g, g] (e.g. gradient_rollout for several targets) over images [B, C, H, W] on one
    colour scale with a colourbar; titles: one string per panel."""
    n = len(images)
    fig = Figure(figsize=(2.2 * n + 1.0, 2.6), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    vmax = max(float(relevance.max()), 1e-8)
    for ax, image, grid, title in zip(axes, images, relevance, titles):
        im = overlay(ax, image, grid, vmax, smooth, alpha=0.65)
        ax.set_title(title, fontsize=8)
    fig.colorbar(im, ax=list(axes), shrink=0.9, label="relevance (one scale)")
    return fig


@torch.no_grad()
def prediction_titles(model: nn.Module, images: torch.Tensor, labels, names=None, classes=None) -> list[str]:
    """One title per image: ``"#i: label 7, predicted 7 (99.1%)"`` (names: image names, default #i;
    classes: class names in label order, e.g. ``"#0: label cat, predicted dog (61.0%)"``)."""
    device = next(model.parameters()).device
    with eval_mode(model):
        probs = torch.softmax(model(images.to(device)).float().cpu(), dim=-1)
    conf, pred = probs.max(dim=-1)
    names = names or [f"#{i}" for i in range(len(images))]
    say = (lambda k: classes[int(k)]) if classes is not None else int  # noqa: E731
    return [f"{n}: label {say(y)}, predicted {say(p)} ({100 * float(c):.1f}%)"
            for n, y, p, c in zip(names, labels, pred, conf)]


def plot_position_similarity(model: nn.Module) -> Figure:
    """One small heatmap per patch: its position embedding's cosine similarity to every patch's
    (a diverging scale, -1 blue, 0 white, 1 red)."""
    sim = position_similarity(model)
    g = math.isqrt(len(sim))
    fig = Figure(figsize=(min(1.0 * g, 8) + 0.8, min(1.0 * g, 8)), layout="constrained")
    axes = fig.subplots(g, g, squeeze=False)
    for i, ax in enumerate(axes.flat):
        im = ax.imshow(sim[i].reshape(g, g).numpy(), cmap="RdBu_r", vmin=-1, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
    for r in range(g):
        axes[r, 0].set_ylabel(str(r + 1), fontsize=8)
        axes[-1, r].set_xlabel(str(r + 1), fontsize=8)
    fig.colorbar(im, ax=axes, shrink=0.8, label="cosine similarity")
    fig.suptitle("position embedding similarity (patch row, column)")
    return fig


def plot_filter_components(components: torch.Tensor, explained: torch.Tensor) -> Figure:
    """Principal components of the patch-embedding filters as small pictures, on one diverging scale.

    components: [k, C, p, p] (unit vectors; see ``maps.patch_embedding_components``), explained: [k]
    shares of variance. One channel: blue negative, red positive; three channels: each component
    scaled to [0, 1] as RGB. Titles give each component's share of the filters' variance.
    """
    k, channels = components.shape[:2]
    cols = min(k, 8)
    fig = Figure(figsize=(1.15 * cols + (1.0 if channels == 1 else 0.2), 1.3 * math.ceil(k / cols) + 0.5),
                 layout="constrained")
    axes = fig.subplots(math.ceil(k / cols), cols, squeeze=False)
    vmax = float(components.abs().max())
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= k:
            ax.set_axis_off()
            continue
        if channels == 1:
            im = ax.imshow(components[i, 0].numpy(), cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        else:
            ax.imshow(display_image(components[i]))
        ax.set_title(f"PC {i + 1}: {100 * float(explained[i]):.1f}%", fontsize=7)
    if channels == 1:
        fig.colorbar(im, ax=axes, shrink=0.8, label="weight (unit vectors, sign arbitrary)")
    fig.suptitle(f"patch-embedding filters: first {k} principal components (share of variance)", fontsize=9)
    return fig


def plot_attention_distance(distance: torch.Tensor, patch_size: float, grid: int, title: str = "") -> Figure:
    """The ViT paper's figure 7 (right): each head's mean attention distance against depth, one dot a head.

    distance: [layers, heads] in pixels, from ``maps.mean_attention_distance(maps, patch_size)``;
    grid: the patch grid's side g. Dotted lines for scale: attending only to one's own patch (0 pixels)
    and attending uniformly over the g x g patches (their mean pairwise distance).
    """
    layers, heads = distance.shape
    tokens = grid * grid + 1
    uniform = float(mean_attention_distance(torch.full((1, 1, 1, tokens, tokens), 1.0 / tokens), patch_size))
    fig = Figure(figsize=(4.8, 3.4), layout="constrained")
    ax = fig.subplots()
    for h in range(heads):
        ax.scatter(torch.arange(1, layers + 1).numpy(), distance[:, h].numpy(), s=22, label=f"head {h + 1}")
    ax.axhline(0.0, color="gray", ls=":", lw=1)
    ax.axhline(uniform, color="gray", ls=":", lw=1)
    ax.text(layers + 0.4, uniform, f"uniform\n{uniform:.1f}", fontsize=7, va="center")
    ax.text(layers + 0.4, 0.0, "own patch", fontsize=7, va="center")
    ax.set(xlabel="layer (network depth)", ylabel="mean attention distance (pixels)",
           title=title or "how far each head looks", xticks=range(1, layers + 1), xlim=(0.5, layers + 1.5),
           ylim=(-0.05 * uniform, 1.1 * max(uniform, float(distance.max()))))
    ax.legend(fontsize=7, loc="center right")
    ax.grid(alpha=0.3)
    return fig


def plot_deletion_curves(deletion: dict, insertion: dict | None = None, baseline: str = "") -> Figure:
    """Deletion (and insertion) curves side by side: ``{name: Curve}`` from ``coursekit.faithfulness``.

    x: the share of patches removed (inserted), y: the mean probability of the original prediction
    (0 to 1); the legend gives each curve's area under it. baseline: what a removed patch became,
    for the title.
    """
    panels = [("deletion", "removed", deletion)] + ([("insertion", "inserted", insertion)] if insertion else [])
    fig = Figure(figsize=(4.6 * len(panels), 3.4), layout="constrained")
    for ax, (kind, verb, curves) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels):
        for name, curve in curves.items():
            ax.plot(curve.share.numpy(), curve.prob.numpy(), "o-", ms=3, label=f"{name} (AUC {curve.auc:.3f})")
        better = "lower" if kind == "deletion" else "higher"
        ax.set(xlabel=f"share of patches {verb}", ylabel="probability of the original prediction",
               ylim=(0, 1.02), xlim=(0, 1), title=f"{kind}: {better} AUC is better")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    if baseline:
        fig.suptitle(f"a removed patch becomes {baseline}", fontsize=9)
    return fig


def plot_layer_similarity(similarity: dict) -> Figure:
    """How alike each pair of blocks attends: ``{name: [layers, layers]}`` from
    ``maps.layer_similarity``, one panel per model, all on one diverging scale from -1 to 1."""
    fig = Figure(figsize=(3.2 * len(similarity) + 0.8, 3.2), layout="constrained")
    axes = fig.subplots(1, len(similarity), squeeze=False)[0]
    for ax, (name, sim) in zip(axes, similarity.items()):
        n = sim.shape[0]
        im = ax.imshow(sim.numpy(), cmap="RdBu_r", vmin=-1, vmax=1)
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{float(sim[i, j]):.2f}", ha="center", va="center", fontsize=6)
        ticks = range(n)
        ax.set(xticks=ticks, yticks=ticks, xticklabels=[t + 1 for t in ticks], yticklabels=[t + 1 for t in ticks],
               xlabel="block", ylabel="block", title=name)
        ax.title.set_fontsize(9)
    fig.colorbar(im, ax=list(axes), shrink=0.85, label="mean cosine of attention columns (one scale)")
    return fig


def plot_randomization(similarity: dict, stages: list) -> Figure:
    """The randomization check, cascading from the output (Adebayo et al., 2018): each map's mean
    Spearman correlation with the trained model's map against how many stages are re-initialized.

    similarity: {map name: [len(stages) + 1] correlations, the first for nothing re-initialized};
    stages: the stage names from the output down (``faithfulness.randomization_stages``).
    """
    fig = Figure(figsize=(6.4, 3.4), layout="constrained")
    ax = fig.subplots()
    x = list(range(len(stages) + 1))
    for name, values in similarity.items():
        ax.plot(x, [float(v) for v in values], "o-", ms=4, label=name)
    ax.axhline(0.0, color="gray", ls=":", lw=1)
    ax.set_xticks(x, ["none"] + [f"+ {s}" if i else s for i, s in enumerate(stages)], rotation=35,
                  ha="right", fontsize=8)
    ax.set(xlabel="re-initialized, from the output down", ylim=(-1.05, 1.05),
           ylabel="Spearman correlation with\nthe trained model's map (mean)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return fig


def plot_data_size(points: list[dict]) -> Figure:
    """Test accuracy against training images, one line per model: the data-size lesson.

    points: dicts with ``model``, ``train_images``, ``test_acc`` (%), and ``data``, ``epochs``,
    ``test_images`` for the title (``benchmarks/data_size.py`` writes them; ``fast``: fast mode).
    """
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.subplots()
    for model in dict.fromkeys(p["model"] for p in points):
        mine = sorted((p for p in points if p["model"] == model), key=lambda p: p["train_images"])
        epochs = "/".join(str(e) for e in dict.fromkeys(p["epochs"] for p in mine))
        ax.plot([p["train_images"] for p in mine], [p["test_acc"] for p in mine], "o-",
                label=f"{model} ({epochs} epochs)")
    sizes = sorted({p["train_images"] for p in points})
    ax.set_xscale("log")
    ax.set_xticks(sizes, [f"{n:,}" for n in sizes])
    ax.minorticks_off()
    tested = "/".join(f"{n:,}" for n in sorted({p["test_images"] for p in points}))
    ax.set(xlabel="training images (log scale)", ylabel=f"test accuracy (%) on {tested} test images")
    fast = "FAST MODE: numbers that teach nothing\n" if any(p.get("fast") for p in points) else ""
    ax.set_title(f"{fast}{points[0]['data']}: 1 run per point, each model's recipe at every size\n"
                 "(its epochs fixed, so fewer steps on less data)", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def figure_png(fig: Figure, dpi: int = 80) -> bytes:
    """Render a matplotlib figure to PNG bytes with the Agg backend (no display needed)."""
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()
