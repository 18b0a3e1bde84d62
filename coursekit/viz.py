"""Looking inside vision transformers: attention maps, rollout, gradient rollout, pictures.

The explorer (``viz.AttentionExplorer``) lives in :mod:`coursekit.explorer`.

Works with vit-pytorch's ``ViT`` and ``DeepViT`` and with :class:`coursekit.models.Hybrid`.
Tokens are ``[CLS, patch 1, ..., patch P]`` with the patches in row-major order.
"""

from __future__ import annotations

import contextlib
import io
import math

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import nn
from torch.nn import functional as F
from vit_pytorch import deepvit, vit


def _attention_layers(model: nn.Module) -> list[nn.Module]:
    """The attention blocks of ``model`` in the order they run."""
    layers = [m for m in model.modules() if isinstance(m, (vit.Attention, deepvit.Attention))]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no vit-pytorch attention layers; attention_maps "
                         "works with vit_pytorch.ViT, vit_pytorch.deepvit.DeepViT and coursekit's Hybrid")
    return layers


def _weights_module(layer: nn.Module) -> nn.Module:
    # ViT: the softmax output multiplies v (dropout is off in eval mode).
    # DeepViT: the softmax weights are mixed across heads and normalized ("re-attention");
    # the output of that norm is what multiplies v, so it is what we record.
    return layer.reattn_norm if isinstance(layer, deepvit.Attention) else layer.attend


@contextlib.contextmanager
def _recorded_attention(model: nn.Module, images: torch.Tensor):
    """Within the block, ``model`` is in eval mode and every attention layer's weights are recorded.

    Yields ``(records, images)``: a list that the forward pass fills with one weights tensor
    [B, heads, T, T] per layer, and the images moved to the model's device. Afterwards the hooks
    are removed and the training flags restored, even when the forward pass fails.
    """
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a tensor [B, C, H, W], got {shape}; "
                         "for one image use images.unsqueeze(0)")
    layers = _attention_layers(model)
    records: list[torch.Tensor | None] = [None] * len(layers)

    def recorder(index):
        def hook(module, inputs, output):
            records[index] = output
        return hook

    flags = {m: m.training for m in model.modules()}
    handles = []
    try:
        handles = [_weights_module(layer).register_forward_hook(recorder(i))
                   for i, layer in enumerate(layers)]
        model.eval()
        yield records, images.to(next(model.parameters()).device)
    finally:
        for handle in handles:
            handle.remove()
        for module, flag in flags.items():
            module.training = flag


@torch.no_grad()
def attention_maps(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Attention weights of every layer and head: ``[B, layers, heads, tokens, tokens]`` on the CPU.

    images: [B, C, H, W], normalized like the training data.
    Entry ``[b, l, h, i, j]`` is how much token ``i`` takes from token ``j`` in head ``h`` of layer
    ``l`` (token 0 is CLS). For ViT and Hybrid each row is a softmax and sums to 1; for DeepViT it
    is the re-attention matrix that multiplies the values (rows need not sum to 1).
    The model runs once in eval mode under temporary forward hooks; its training flags are
    restored and the hooks removed afterwards, even when the forward pass fails.
    """
    with _recorded_attention(model, images) as (records, x):
        model(x)
    return torch.stack([r.float().cpu() for r in records], dim=1)


def _fuse_heads(maps: torch.Tensor, head_fusion: str) -> torch.Tensor:
    """[..., heads, T, T] -> [..., T, T] by the mean, max or min over heads."""
    if head_fusion == "mean":
        return maps.mean(dim=-3)
    if head_fusion in ("max", "min"):
        return getattr(maps, head_fusion)(dim=-3).values
    raise ValueError(f"head_fusion={head_fusion!r}; choose 'mean', 'max' or 'min'")


def attention_rollout(maps: torch.Tensor, head_fusion: str = "mean",
                      discard_ratio: float = 0.0) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema, 2020): ``[B, tokens, tokens]``, rows summing to 1.

    maps: [B, layers, heads, tokens, tokens]. Per layer: fuse the heads (``head_fusion``: "mean",
    "max" or "min"); set the smallest ``discard_ratio`` share of the fused entries to 0, never the
    CLS token's own entry [0, 0] (as jacobgil/vit-explain does); add the identity for the residual
    connection and renormalize the rows. Then multiply the layers, the first on the right:
    ``R = A_L ... A_2 A_1``. ``R[b, 0, 1:]`` says how much each patch reached the CLS token.
    """
    if maps.dim() != 5 or maps.shape[-1] != maps.shape[-2]:
        raise ValueError(f"maps must be [B, layers, heads, tokens, tokens], got {tuple(maps.shape)}; "
                         "pass the output of attention_maps(model, images)")
    if not 0.0 <= discard_ratio < 1.0:
        raise ValueError(f"discard_ratio={discard_ratio} must be in [0, 1)")
    a = _fuse_heads(maps, head_fusion).clone()  # [B, L, T, T]
    T = a.shape[-1]
    n_drop = int(T * T * discard_ratio)
    if n_drop:
        flat = a.flatten(-2)  # a view: [B, L, T*T]
        # the smallest entries, the CLS token's own (flat index 0) kept out of the choice
        keyed = flat.clone()
        keyed[..., 0] = float("inf")
        flat.scatter_(-1, keyed.topk(n_drop, dim=-1, largest=False).indices, 0.0)
    a = a + torch.eye(T, dtype=a.dtype, device=a.device)
    a = a / a.sum(dim=-1, keepdim=True)
    rollout = a[:, 0]
    for layer in range(1, a.shape[1]):
        rollout = a[:, layer] @ rollout
    return rollout


def gradient_rollout(model: nn.Module, images: torch.Tensor, target) -> torch.Tensor:
    """Class-specific relevance of each patch for class ``target``: ``[B, g, g]`` over the patch grid.

    Chefer, Gur & Wolf, "Generic Attention-model Explainability for Interpreting Bi-Modal and
    Encoder-Decoder Transformers" (ICCV 2021), rule for self-attention: start from R = I
    [tokens, tokens]; for every layer, with A its attention weights [heads, T, T] and dA the
    gradient of the target logit with respect to A,
    ``R <- R + mean_heads(clamp(dA * A, min=0)) @ R``; the result is R's CLS row without CLS.
    images: [B, C, H, W] normalized like the training data; target: an int or [B] class indices
    (e.g. the prediction, or the true label to ask "why not this class?").
    The model runs in eval mode; its flags are restored and no gradients are left on its weights.
    """
    with _recorded_attention(model, images) as (records, x), torch.enable_grad():
        logits = model(x)
        target = torch.as_tensor(target, device=x.device).expand(len(images))
        score = logits.gather(1, target[:, None]).sum()
        grads = torch.autograd.grad(score, records)
    T = records[0].shape[-1]
    R = torch.eye(T, device=x.device).expand(len(images), T, T)
    for a, da in zip(records, grads):
        R = R + (da * a).clamp(min=0).mean(dim=1) @ R
    return cls_map(R.detach().float().cpu())


def token_map(attention: torch.Tensor, query: int = 0) -> torch.Tensor:
    """Row ``query`` of the attention (0 = CLS) over the patches, laid out as the patch grid.

    attention: [..., tokens, tokens] with tokens = 1 + g*g -> [..., g, g] (the CLS column left out;
    see :func:`self_share` for what a token keeps for itself).
    """
    patches = attention.shape[-1] - 1
    side = math.isqrt(patches)
    if side * side != patches:
        raise ValueError(f"{attention.shape[-1]} tokens are not 1 CLS token + a square grid of patches; "
                         "build the ViT with pool='cls' and a square image")
    if not 0 <= query <= patches:
        raise ValueError(f"query={query} must be 0 (CLS) or a patch 1..{patches}")
    return attention[..., query, 1:].reshape(*attention.shape[:-2], side, side)


def cls_map(attention: torch.Tensor) -> torch.Tensor:
    """The CLS token's row without CLS itself as the patch grid: ``token_map(attention, 0)``."""
    return token_map(attention, 0)


def self_share(attention: torch.Tensor, query: int = 0) -> torch.Tensor:
    """How much token ``query`` attends to itself: attention[..., query, query] (CLS: query=0)."""
    return attention[..., query, query]


def upsample(grid: torch.Tensor, size: int, smooth: bool = False) -> torch.Tensor:
    """A patch grid [g, g] scaled up to [size, size] (nearest: each patch a flat square)."""
    mode = dict(mode="bilinear", align_corners=False) if smooth else dict(mode="nearest")
    return F.interpolate(grid[None, None].float(), size=(size, size), **mode)[0, 0]


def display_image(image: torch.Tensor):
    """image: [C, H, W], any scale -> an array matplotlib shows, scaled to [0, 1]."""
    image = image.detach().float().cpu()
    image = (image - image.min()) / (image.max() - image.min()).clamp_min(1e-8)
    return image[0].numpy() if image.shape[0] == 1 else image.permute(1, 2, 0).numpy()


def _overlay(ax, image: torch.Tensor, grid: torch.Tensor, vmax: float, smooth: bool = False,
             alpha: float = 0.6, query: int = 0):
    """Draw image [C, H, W] in gray and the patch grid [g, g] over it on the scale [0, vmax];
    a patch query (1..g*g) is outlined in cyan. Returns the overlay (for a colourbar)."""
    from matplotlib.patches import Rectangle

    ax.imshow(display_image(image), cmap="gray")
    im = ax.imshow(upsample(grid, image.shape[-1], smooth).numpy(), cmap="inferno", alpha=alpha,
                   vmin=0.0, vmax=vmax)
    if query:
        g, p = grid.shape[-1], image.shape[-1] / grid.shape[-1]
        r, c = divmod(query - 1, g)
        ax.add_patch(Rectangle((c * p - 0.5, r * p - 0.5), p, p, fill=False, color="cyan", lw=1.5))
    ax.set_xticks([])
    ax.set_yticks([])
    return im


def _who(query: int) -> str:
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
    for r, l in enumerate(rows):
        for h in range(heads):
            im = _overlay(axes[r, h], image, grids[r, h], vmax, smooth, query=query)
            axes[r, h].set_title(f"Layer {l + 1}, Head {h + 1}", fontsize=8)
            axes[r, h].set_xlabel(f"to itself {float(own[r, h]):.2f}", fontsize=7)
    fig.colorbar(im, ax=axes, shrink=0.8, label=f"attention of {_who(query)} (one scale)")
    fig.suptitle(f"{title}{': ' if title else ''}{_who(query)} -> patches", fontsize=9)
    return fig


def plot_cls_attention(attention: torch.Tensor, images: torch.Tensor, titles=None,
                       smooth: bool = True, label: str = "CLS attention") -> Figure:
    """For each image, the CLS token's row over the patches upsampled over the image, all on one
    colour scale with a colourbar; the CLS token's share for itself is written under each map.

    attention: [B, tokens, tokens], e.g. attention_rollout(maps) or maps[:, layer].mean(1);
    images: [B, C, H, W]; titles: one string per image (see :func:`prediction_titles`).
    """
    n = len(images)
    fig = Figure(figsize=(2.0 * n + 1.0, 4.4), layout="constrained")
    axes = fig.subplots(2, n, squeeze=False)
    grids, own = cls_map(attention), self_share(attention)
    vmax = float(grids.max())
    for i in range(n):
        axes[0, i].imshow(display_image(images[i]), cmap="gray")
        axes[0, i].set_axis_off()
        if titles is not None:
            axes[0, i].set_title(titles[i], fontsize=8)
        im = _overlay(axes[1, i], images[i], grids[i], vmax, smooth, alpha=0.65)
        axes[1, i].set_xlabel(f"CLS to itself {float(own[i]):.2f}", fontsize=8)
    fig.colorbar(im, ax=axes[1], shrink=0.9, label=label)
    return fig


def plot_relevance(relevance: torch.Tensor, images: torch.Tensor, titles, smooth: bool = False) -> Figure:
    """Maps [B, g, g] (e.g. gradient_rollout for several targets) over images [B, C, H, W] on one
    colour scale with a colourbar; titles: one string per panel."""
    n = len(images)
    fig = Figure(figsize=(2.2 * n + 1.0, 2.6), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    vmax = max(float(relevance.max()), 1e-8)
    for ax, image, grid, title in zip(axes, images, relevance, titles):
        im = _overlay(ax, image, grid, vmax, smooth, alpha=0.65)
        ax.set_title(title, fontsize=8)
    fig.colorbar(im, ax=list(axes), shrink=0.9, label="relevance (one scale)")
    return fig


@torch.no_grad()
def prediction_titles(model: nn.Module, images: torch.Tensor, labels, names=None, classes=None) -> list[str]:
    """One title per image: ``"#i: label 7, predicted 7 (99.1%)"`` (names: image names, default #i;
    classes: class names in label order, e.g. ``"#0: label cat, predicted dog (61.0%)"``)."""
    model_was_training = model.training
    device = next(model.parameters()).device
    probs = torch.softmax(model.eval()(images.to(device)).float().cpu(), dim=-1)
    model.train(model_was_training)
    conf, pred = probs.max(dim=-1)
    names = names or [f"#{i}" for i in range(len(images))]
    say = (lambda k: classes[int(k)]) if classes is not None else int  # noqa: E731
    return [f"{n}: label {say(y)}, predicted {say(p)} ({100 * float(c):.1f}%)"
            for n, y, p, c in zip(names, labels, pred, conf)]


def _pos_embedding(model: nn.Module) -> torch.Tensor:
    net = model.vit if hasattr(model, "vit") else model
    if not hasattr(net, "pos_embedding"):
        raise ValueError(f"{type(model).__name__} has no learned position embedding (pos_embedding)")
    return net.pos_embedding.detach().float().cpu().reshape(-1, net.pos_embedding.shape[-1])


def position_similarity(model: nn.Module) -> torch.Tensor:
    """Cosine similarity of the learned patch position embeddings: [patches, patches] (CLS left out)."""
    pos = F.normalize(_pos_embedding(model)[1:], dim=-1)
    return pos @ pos.T


def plot_position_similarity(model: nn.Module) -> Figure:
    """One small heatmap per patch: its position embedding's cosine similarity to every patch's."""
    sim = position_similarity(model)
    g = math.isqrt(len(sim))
    fig = Figure(figsize=(min(1.0 * g, 8) + 0.8, min(1.0 * g, 8)), layout="constrained")
    axes = fig.subplots(g, g, squeeze=False)
    for i, ax in enumerate(axes.flat):
        im = ax.imshow(sim[i].reshape(g, g).numpy(), cmap="viridis", vmin=-1, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
    for r in range(g):
        axes[r, 0].set_ylabel(str(r + 1), fontsize=8)
        axes[-1, r].set_xlabel(str(r + 1), fontsize=8)
    fig.colorbar(im, ax=axes, shrink=0.8, label="cosine similarity")
    fig.suptitle("position embedding similarity (patch row, column)")
    return fig


def figure_png(fig: Figure, dpi: int = 80) -> bytes:
    """Render a matplotlib figure to PNG bytes with the Agg backend (no display needed)."""
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def __getattr__(name):  # viz.AttentionExplorer lives in coursekit.explorer
    if name == "AttentionExplorer":
        from coursekit.explorer import AttentionExplorer
        return AttentionExplorer
    raise AttributeError(f"module 'coursekit.viz' has no attribute {name!r}")
