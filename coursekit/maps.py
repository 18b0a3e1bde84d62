"""What a vision transformer attends to, as numbers: attention maps, rollout, gradient rollout, and
what the ViT paper's figure 7 shows (patch-embedding filters, position embeddings, attention distance).

Works with vit-pytorch's ``ViT`` and ``DeepViT`` and with :class:`coursekit.models.Hybrid`.
Tokens are ``[CLS, patch 1, ..., patch P]`` with the patches in row-major order. The pictures of
these maps are in :mod:`coursekit.viz`; how far to believe them, in :mod:`coursekit.faithfulness`.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn
from torch.nn import functional as F
from vit_pytorch import deepvit, vit

from .train import eval_mode


def _attention_layers(model: nn.Module) -> list[nn.Module]:
    """The attention blocks of ``model`` in the order they run."""
    layers = [m for m in model.modules() if isinstance(m, (vit.Attention, deepvit.Attention))]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no vit-pytorch attention layers; attention_maps "
                         "works with vit_pytorch.ViT, vit_pytorch.deepvit.DeepViT and coursekit's Hybrid")
    return layers


def _weights_module(layer: nn.Module, reattention: bool = True) -> nn.Module:
    # ViT: the softmax output multiplies v (dropout is off in eval mode).
    # DeepViT: the softmax weights (its dropout's input and output, in eval mode) are mixed across
    # heads and normalized ("re-attention"); the output of that norm is what multiplies v.
    if isinstance(layer, deepvit.Attention):
        return layer.reattn_norm if reattention else layer.dropout
    return layer.attend


@contextlib.contextmanager
def _recorded_attention(model: nn.Module, images: torch.Tensor, reattention: bool = True):
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

    with eval_mode(model):
        handles = []
        try:
            handles = [_weights_module(layer, reattention).register_forward_hook(recorder(i))
                       for i, layer in enumerate(layers)]
            yield records, images.to(next(model.parameters()).device)
        finally:
            for handle in handles:
                handle.remove()


@torch.no_grad()
def attention_maps(model: nn.Module, images: torch.Tensor, reattention: bool = True) -> torch.Tensor:
    """Attention weights of every layer and head: ``[B, layers, heads, tokens, tokens]`` on the CPU.

    images: [B, C, H, W], normalized like the training data.
    Entry ``[b, l, h, i, j]`` is how much token ``i`` takes from token ``j`` in head ``h`` of layer
    ``l`` (token 0 is CLS). For ViT and Hybrid each row is a softmax and sums to 1; for DeepViT it
    is the re-attention matrix that multiplies the values (rows need not sum to 1), or with
    ``reattention=False`` the softmax maps its heads computed before they were mixed.
    The model runs once in eval mode under temporary forward hooks; its training flags are
    restored and the hooks removed afterwards, even when the forward pass fails.
    """
    with _recorded_attention(model, images, reattention) as (records, x):
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


def _pos_embedding(model: nn.Module) -> torch.Tensor:
    net = model.vit if hasattr(model, "vit") else model
    if not hasattr(net, "pos_embedding"):
        raise ValueError(f"{type(model).__name__} has no learned position embedding (pos_embedding)")
    return net.pos_embedding.detach().float().cpu().reshape(-1, net.pos_embedding.shape[-1])


def position_similarity(model: nn.Module) -> torch.Tensor:
    """Cosine similarity of the learned patch position embeddings: [patches, patches] (CLS left out)."""
    pos = F.normalize(_pos_embedding(model)[1:], dim=-1)
    return pos @ pos.T


def neighbour_similarity(sim: torch.Tensor) -> tuple[float, float]:
    """Does a similarity map have the patch grid's 2-D structure? ``(to neighbours, to the others)``.

    sim: [P, P] (e.g. :func:`position_similarity`) for P patches on a square grid, row by row. Returns
    the mean similarity of each patch to its grid neighbours (up, down, left, right) and the mean to
    every other patch. Learned embeddings that encode the grid give a clearly larger first number;
    embeddings that ignore it (random, or not trained to tell positions apart) give about equal ones.
    """
    g = math.isqrt(len(sim))
    if sim.ndim != 2 or sim.shape[0] != sim.shape[1] or g * g != len(sim):
        raise ValueError(f"sim must be [P, P] for P patches on a square grid, got {tuple(sim.shape)}")
    rows, cols = torch.arange(g).repeat_interleave(g), torch.arange(g).repeat(g)  # each patch's place
    distance = (rows[:, None] - rows[None, :]).abs() + (cols[:, None] - cols[None, :]).abs()
    neighbours, others = distance == 1, distance > 1
    return float(sim[neighbours].mean()), float(sim[others].mean())


def _check_maps(maps: torch.Tensor) -> None:
    if maps.dim() != 5 or maps.shape[-1] != maps.shape[-2]:
        raise ValueError(f"maps must be [B, layers, heads, tokens, tokens], got {tuple(maps.shape)}; "
                         "pass attention_maps(model, images)")


def mean_attention_distance(maps: torch.Tensor, patch_size: float) -> torch.Tensor:
    """How far each head looks, in pixels: ``[layers, heads]`` (Dosovitskiy et al., 2021, figure 7 right).

    maps: [B, layers, heads, tokens, tokens] with tokens = 1 CLS + g*g patches (softmax rows, >= 0);
    patch_size: the side of one patch in image pixels (a hybrid: image side / g).
    For each query patch, the attention-weighted mean distance between its centre and every key
    patch's centre (Euclidean, grid steps times ``patch_size``), averaged over query patches and images.
    CLS has no place in the image, so its row and column are left out, and each patch's row is
    renormalized over the patch keys: the distance of the attention that went to patches. A head
    that attends only to its own patch gives 0; uniform attention gives the grid's mean pairwise
    distance (for a 2x2 grid, patch_size * (2 + sqrt(2)) / 4).
    """
    _check_maps(maps)
    if (maps < 0).any():
        raise ValueError("maps has negative weights (DeepViT's re-attention?); mean_attention_distance "
                         "needs attention rows of shares >= 0, as a ViT's softmax gives")
    g = math.isqrt(maps.shape[-1] - 1)
    if g * g != maps.shape[-1] - 1:
        raise ValueError(f"{maps.shape[-1]} tokens are not 1 CLS token + a square grid of patches")
    rows, cols = torch.arange(g).repeat_interleave(g), torch.arange(g).repeat(g)  # each patch's place
    centres = torch.stack([rows, cols], dim=-1).float() * patch_size  # [P, 2] in pixels
    distance = torch.cdist(centres, centres)  # [P, P]
    patches = maps[..., 1:, 1:].float()
    patches = patches / patches.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    return (patches * distance).sum(dim=-1).mean(dim=(0, 3))  # [B, L, H, P] -> [L, H]


def layer_similarity(maps: torch.Tensor) -> torch.Tensor:
    """How alike the attention of two blocks is: ``[layers, layers]``, the mean cosine similarity.

    maps: [B, layers, heads, tokens, tokens]. Entry ``[p, q]`` compares block ``p`` with block ``q``
    as Zhou et al. (2021, DeepViT) do to measure "attention collapse": for each head ``h`` and key
    token ``t``, the cosine of the column ``maps[b, p, h, :, t]`` (how every token attends to ``t``)
    with the same column of block ``q``; then the mean over images, heads and tokens. 1 on the
    diagonal for softmax maps (a column no token attends to counts 0); near 1 between two blocks
    means the deeper one attends as the other did.
    """
    _check_maps(maps)
    columns = F.normalize(maps.float().transpose(-1, -2), dim=-1)  # [B, L, H, key t, query i], unit rows
    B, _, H, T, _ = columns.shape
    return torch.einsum("bphti,bqhti->pq", columns, columns) / (B * H * T)


def sink_share(maps: torch.Tensor) -> torch.Tensor:
    """How much one key token draws from every query: ``[layers, heads]``, the largest mean column.

    maps: [B, layers, heads, tokens, tokens] (softmax rows). For each image, head and key token
    ``t``, the mean over queries of ``maps[..., :, t]``: the share of all attention that ``t``
    receives. Returned: its maximum over keys, averaged over images. Uniform attention gives
    ``1 / tokens``; a head whose every query sends most of its attention to one token, whatever
    that token shows, gives near 1 (an "attention sink": Xiao et al., 2024; Darcet et al., 2024).
    """
    _check_maps(maps)
    received = maps.float().mean(dim=-2)  # [B, L, H, T]: each key's share of the attention
    return received.amax(dim=-1).mean(dim=0)


def patch_embedding_components(model: nn.Module, k: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """The top ``k`` principal components of a ViT's patch-embedding filters, as patches:
    ``(components [k, C, p, p], explained [k])`` (Dosovitskiy et al., 2021, figure 7 left).

    vit-pytorch 1.26 embeds a patch by ``LayerNorm -> Linear(p*p*C, dim) -> LayerNorm``. The first
    LayerNorm standardizes each patch (subtracts its mean, divides by its spread) and scales entry j
    by a learned gain g_j; so row i of the Linear weight W acts on the standardized patch as the
    filter ``W[i] * g``. Its part along a constant patch never reaches the model (a standardized
    patch has mean 0), so it is removed: what is shown are these ``dim`` filters, with the mean over
    filters subtracted, and their principal directions (right singular vectors). The second
    LayerNorm rescales tokens, not the filters' shapes, so it is left out. ``explained``: each
    component's share of the filters' variance. A component's sign is arbitrary.
    """
    net = model.vit if hasattr(model, "vit") else model
    embedding = getattr(net, "to_patch_embedding", None)
    linear = [m for m in embedding.modules() if isinstance(m, nn.Linear)] if embedding is not None else []
    norms = [m for m in embedding.modules() if isinstance(m, nn.LayerNorm)] if embedding is not None else []
    if len(linear) != 1 or not norms or norms[0].normalized_shape[0] != linear[0].in_features:
        raise ValueError(f"{type(model).__name__} has no vit-pytorch patch embedding "
                         "(to_patch_embedding = Rearrange, LayerNorm, Linear, LayerNorm); build a ViT with vit-pytorch")
    weight = linear[0].weight.detach().float().cpu()  # [dim, p*p*C]
    filters = weight * norms[0].weight.detach().float().cpu()  # the gain of the first LayerNorm
    filters = filters - filters.mean(dim=1, keepdim=True)  # a standardized patch has mean 0
    p = dict(getattr(embedding[0], "axes_lengths", {})).get("p1")  # the Rearrange's patch side
    if not p or weight.shape[1] % (p * p):
        raise ValueError("to_patch_embedding[0] is not vit-pytorch's Rearrange with the patch side p1; "
                         "build a ViT with vit-pytorch")
    channels = weight.shape[1] // (p * p)
    if not 1 <= k <= min(weight.shape):
        raise ValueError(f"k={k} must be between 1 and {min(weight.shape)} (the filters' count and length)")
    _, s, vt = torch.linalg.svd(filters - filters.mean(dim=0), full_matrices=False)
    explained = s ** 2 / (s ** 2).sum()
    # vit-pytorch flattens a patch as (p1 p2 c): row, column, then channel
    return vt[:k].reshape(k, p, p, channels).permute(0, 3, 1, 2), explained[:k]
