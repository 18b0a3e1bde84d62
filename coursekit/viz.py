"""Looking inside vision transformers: attention maps, attention rollout, pictures, an explorer.

Works with vit-pytorch's ``ViT`` and ``DeepViT`` and with :class:`coursekit.models.Hybrid`.
Tokens are ``[CLS, patch 1, ..., patch P]`` with the patches in row-major order.
"""

from __future__ import annotations

import base64
import io
import math
import sys

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
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a tensor [B, C, H, W], got {shape}; "
                         "for one image use images.unsqueeze(0)")
    layers = _attention_layers(model)
    records: list[torch.Tensor | None] = [None] * len(layers)

    def recorder(index):
        def hook(module, inputs, output):
            records[index] = output.detach().float().cpu()
        return hook

    flags = {m: m.training for m in model.modules()}
    handles = []
    try:
        handles = [_weights_module(layer).register_forward_hook(recorder(i))
                   for i, layer in enumerate(layers)]
        model.eval()
        device = next(model.parameters()).device
        model(images.to(device))
    finally:
        for handle in handles:
            handle.remove()
        for module, flag in flags.items():
            module.training = flag
    return torch.stack(records, dim=1)


def attention_rollout(maps: torch.Tensor) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema, 2020): ``[B, tokens, tokens]``, rows summing to 1.

    maps: [B, layers, heads, tokens, tokens]. Per layer: mean over heads, add the identity for the
    residual connection, renormalize the rows; then multiply the layers, the first on the right:
    ``R = A_L ... A_2 A_1``. ``R[b, 0, 1:]`` says how much each patch reached the CLS token.
    """
    if maps.dim() != 5 or maps.shape[-1] != maps.shape[-2]:
        raise ValueError(f"maps must be [B, layers, heads, tokens, tokens], got {tuple(maps.shape)}; "
                         "pass the output of attention_maps(model, images)")
    a = maps.mean(dim=2) + torch.eye(maps.shape[-1], dtype=maps.dtype, device=maps.device)
    a = a / a.sum(dim=-1, keepdim=True)
    rollout = a[:, 0]
    for layer in range(1, a.shape[1]):
        rollout = a[:, layer] @ rollout
    return rollout


def cls_map(attention: torch.Tensor) -> torch.Tensor:
    """The CLS token's row without CLS itself, laid out as the patch grid.

    attention: [..., tokens, tokens] with tokens = 1 + g*g -> [..., g, g].
    """
    patches = attention.shape[-1] - 1
    side = math.isqrt(patches)
    if side * side != patches:
        raise ValueError(f"{attention.shape[-1]} tokens are not 1 CLS token + a square grid of patches; "
                         "build the ViT with pool='cls' and a square image")
    return attention[..., 0, 1:].reshape(*attention.shape[:-2], side, side)


def upsample(grid: torch.Tensor, size: int, smooth: bool = False) -> torch.Tensor:
    """A patch grid [g, g] scaled up to [size, size] (nearest: each patch a flat square)."""
    mode = dict(mode="bilinear", align_corners=False) if smooth else dict(mode="nearest")
    return F.interpolate(grid[None, None].float(), size=(size, size), **mode)[0, 0]


def _display_image(image: torch.Tensor):
    """image: [C, H, W], any scale -> an array matplotlib shows, scaled to [0, 1]."""
    image = image.detach().float().cpu()
    image = (image - image.min()) / (image.max() - image.min()).clamp_min(1e-8)
    return image[0].numpy() if image.shape[0] == 1 else image.permute(1, 2, 0).numpy()


def _overlay(ax, image: torch.Tensor, grid: torch.Tensor, smooth: bool = False, alpha: float = 0.55):
    """Draw image [C, H, W] in gray and the patch grid [g, g] upsampled over it."""
    ax.imshow(_display_image(image), cmap="gray")
    ax.imshow(upsample(grid, image.shape[-1], smooth).numpy(), cmap="inferno", alpha=alpha)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_attention_grid(maps: torch.Tensor, image: torch.Tensor, smooth: bool = False) -> Figure:
    """CLS -> patch attention of every layer (rows) and head (columns) drawn over the image.

    maps: [layers, heads, tokens, tokens] for one image; image: [C, H, W].
    """
    if maps.dim() != 4:
        raise ValueError(f"maps must be [layers, heads, tokens, tokens] for one image, got "
                         f"{tuple(maps.shape)}; pass attention_maps(model, images)[i]")
    layers, heads = maps.shape[:2]
    fig = Figure(figsize=(1.6 * heads, 1.6 * layers), layout="constrained")
    axes = fig.subplots(layers, heads, squeeze=False)
    grids = cls_map(maps)
    for l in range(layers):
        for h in range(heads):
            _overlay(axes[l, h], image, grids[l, h], smooth)
            axes[l, h].set_title(f"Layer {l + 1}, Head {h + 1}", fontsize=8)
    return fig


def plot_cls_attention(attention: torch.Tensor, images: torch.Tensor, titles=None,
                       smooth: bool = True) -> Figure:
    """For each image, the CLS token's attention to the patches upsampled over the image.

    attention: [B, tokens, tokens], e.g. attention_rollout(maps) or maps[:, layer].mean(1);
    images: [B, C, H, W]; titles: one string per image.
    """
    n = len(images)
    fig = Figure(figsize=(2.0 * n, 4.2), layout="constrained")
    axes = fig.subplots(2, n, squeeze=False)
    grids = cls_map(attention)
    for i in range(n):
        axes[0, i].imshow(_display_image(images[i]), cmap="gray")
        axes[0, i].set_axis_off()
        if titles is not None:
            axes[0, i].set_title(titles[i], fontsize=9)
        _overlay(axes[1, i], images[i], grids[i], smooth, alpha=0.65)
    return fig


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



class AttentionExplorer:
    """An ipywidgets panel that slides through the attention of ``model`` over ``images``.

    images: [B, C, H, W] (normalized like the training data); labels: optional [B] for the caption.
    Sliders pick the image, the layer and the head; "mean over heads" averages the heads;
    "rollout" shows attention rollout up to the chosen layer. Each image's maps are computed once
    and cached, so a redraw only draws (a PNG rendered with matplotlib's Agg backend).
    Without a widget frontend (GitHub, nbval) the display falls back to that PNG; ``show_static()``
    returns the layer x head grid of the current image as a figure.
    """

    def __init__(self, model: nn.Module, images: torch.Tensor, labels=None, smooth: bool = False,
                 dpi: int = 80):
        import ipywidgets as w

        if not isinstance(images, torch.Tensor) or images.dim() != 4 or len(images) == 0:
            raise ValueError("images must be a non-empty tensor [B, C, H, W]; "
                             "for one image use images.unsqueeze(0)")
        if "google.colab" in sys.modules:  # Colab draws ipywidgets 8 with its custom manager
            try:
                from google.colab import output
                output.enable_custom_widget_manager()
            except Exception:  # pragma: no cover - only on Colab
                pass
        self.model, self.images, self.labels = model, images.detach().cpu(), labels
        self.smooth, self.dpi = smooth, dpi
        maps = attention_maps(model, self.images)  # once, for every image
        rollouts = torch.stack([attention_rollout(maps[:, :l + 1]) for l in range(maps.shape[1])], 1)
        self._cache = {i: (maps[i], rollouts[i]) for i in range(len(maps))}
        layers, heads = maps.shape[1:3]
        self.image = w.IntSlider(0, min=0, max=len(images) - 1, description="image")
        self.layer = w.IntSlider(1, min=1, max=layers, description="layer")
        self.head = w.IntSlider(1, min=1, max=heads, description="head")
        self.mean = w.Checkbox(False, description="mean over heads", indent=False)
        self.rollout = w.Checkbox(False, description="rollout", indent=False)
        self.picture = w.Image(format="png", width=300, height=300)
        self.caption = w.HTML()
        for control in (self.image, self.layer, self.head, self.mean, self.rollout):
            control.observe(lambda change: self.redraw(), names="value")
        self.widget = w.VBox([w.HBox([self.image, self.layer, self.head]),
                              w.HBox([self.mean, self.rollout, self.caption]), self.picture])
        self.redraw()

    def maps(self, index: int):
        """``(maps [layers, heads, T, T], rollouts [layers, T, T])`` of image ``index``, computed
        when the explorer was made; ``rollouts[l]`` rolls out layers 1..l+1."""
        return self._cache[index]

    def current(self) -> tuple[torch.Tensor, str]:
        """The patch grid [g, g] the controls select, and a title for it."""
        maps, rollouts = self.maps(self.image.value)
        l, h = self.layer.value - 1, self.head.value - 1
        self.head.disabled = self.mean.value or self.rollout.value
        if self.rollout.value:
            return cls_map(rollouts[l]), f"rollout of layers 1-{l + 1}"
        if self.mean.value:
            return cls_map(maps[l].mean(0)), f"Layer {l + 1}, mean over heads"
        return cls_map(maps[l, h]), f"Layer {l + 1}, Head {h + 1}"

    def redraw(self) -> None:
        """Draw the selected map over the selected image into ``self.picture``."""
        grid, title = self.current()
        fig = Figure(figsize=(3, 3), layout="constrained")
        ax = fig.subplots()
        _overlay(ax, self.images[self.image.value], grid, self.smooth)
        ax.set_title(f"CLS attention: {title}", fontsize=8)
        self.picture.value = figure_png(fig, self.dpi)
        label = "" if self.labels is None else f" (label {int(self.labels[self.image.value])})"
        self.caption.value = f"image {self.image.value}{label}"

    def show_static(self) -> Figure:
        """The layer x head grid of the current image, for frontends without widgets."""
        return plot_attention_grid(self.maps(self.image.value)[0], self.images[self.image.value],
                                   self.smooth)

    def _repr_mimebundle_(self, include=None, exclude=None):
        bundle = dict(self.widget._repr_mimebundle_(include=include, exclude=exclude) or {})
        bundle["image/png"] = base64.b64encode(self.picture.value).decode("ascii")
        bundle["text/plain"] = (f"AttentionExplorer over {len(self.images)} images: run it in "
                                "JupyterLab or Colab to use the sliders; the picture shows the current view.")
        return bundle
