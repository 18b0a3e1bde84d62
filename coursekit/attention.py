"""Attention written from the formula: scaled dot-product, multi-head, sinusoidal positions.

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V

Every function here is checked against PyTorch in ``tests/test_attention.py``: the explicit code
is for reading and plotting (it returns the weights); use ``F.scaled_dot_product_attention`` and
``nn.MultiheadAttention`` when speed matters.

Masks follow ``F.scaled_dot_product_attention``: a boolean tensor, True where a query may look at
a key. (``nn.MultiheadAttention`` uses the opposite sign: its True means "ignore", so pass
``~key_padding_mask`` there.)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def scaled_dot_product_attention(q, k, v, mask=None):
    """Return ``(output, weights)`` of softmax(q k^T / sqrt(d)) v.

    q: [..., N, d], k: [..., M, d], v: [..., M, d_v] (leading dims broadcast, e.g. [B, H]).
    mask: bool, broadcastable to [..., N, M], True = allowed.
    Returns output [..., N, d_v] and weights [..., N, M] (each row sums to 1).
    A query row whose mask is all False has no key to average: that raises ``ValueError``
    (``F.scaled_dot_product_attention`` returns zeros there, ``nn.MultiheadAttention`` NaN).
    """
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q has d={q.shape[-1]} but k has d={k.shape[-1]} (q: {tuple(q.shape)}, "
                         f"k: {tuple(k.shape)}); queries and keys need the same last dimension")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"k has M={k.shape[-2]} keys but v has {v.shape[-2]} values (k: {tuple(k.shape)}, "
                         f"v: {tuple(v.shape)}); give one value per key")
    try:
        score_shape = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2]) + (q.shape[-2], k.shape[-2])
    except RuntimeError:
        raise ValueError(f"the leading dims of q {tuple(q.shape)} and k {tuple(k.shape)} do not "
                         "broadcast; use [B, H, N, d] and [B, H, M, d] or add size-1 dims") from None
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # [..., N, M]
    if mask is not None:
        if mask.dtype != torch.bool:
            raise ValueError(f"mask must be bool (True = allowed), got {mask.dtype}; "
                             "use mask.bool() or build it with a comparison")
        try:
            torch.broadcast_shapes(mask.shape, score_shape)
        except RuntimeError:
            raise ValueError(f"mask {tuple(mask.shape)} does not broadcast to the scores "
                             f"{tuple(score_shape)} [..., N, M]; e.g. a key padding mask [B, M] "
                             "becomes mask[:, None, None, :]") from None
        if not mask.any(dim=-1).all():
            raise ValueError("a query row of the mask is all False, so it has no key to attend to "
                             "(softmax over nothing is NaN); allow at least one key per query, e.g. "
                             "let each padded query attend to itself")
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = F.softmax(scores, dim=-1)
    return weights @ v, weights


class MultiHeadAttention(nn.Module):
    """Multi-head attention with separate q, k, v projections, shaped like ``nn.MultiheadAttention``.

    d_model: width of the tokens; num_heads: how many heads share it (d_head = d_model / num_heads).
    Self-attention: ``mha(x, x, x)``. Cross-attention: ``mha(y, x, x)``, queries from one sequence
    y [B, N, d_model], keys and values from another x [B, M, d_model], weights [B, H, N, M].
    ``MultiHeadAttention.from_torch(mha)`` copies the weights of an ``nn.MultiheadAttention``.
    """

    def __init__(self, d_model: int, num_heads: int):
        super().__init__()
        if d_model <= 0 or num_heads <= 0:
            raise ValueError(f"d_model={d_model} and num_heads={num_heads} must be positive")
        if d_model % num_heads:
            valid = [h for h in range(1, min(d_model, 64) + 1) if d_model % h == 0]
            raise ValueError(f"d_model={d_model} is not divisible by num_heads={num_heads}; "
                             f"try num_heads in {valid} or change d_model")
        self.d_model, self.num_heads, self.d_head = d_model, num_heads, d_model // num_heads
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def forward(self, query, key, value, mask=None):
        """Return ``(output, weights)``.

        query: [B, N, d_model], key and value: [B, M, d_model];
        mask: bool broadcastable to [B, H, N, M], True = allowed (a key padding mask [B, M] is
        ``mask[:, None, None, :]``, a causal mask [N, M] broadcasts as it is).
        Returns output [B, N, d_model] and per-head weights [B, H, N, M] (``.mean(1)`` gives
        what ``nn.MultiheadAttention`` returns by default).
        """
        for name, t in (("query", query), ("key", key), ("value", value)):
            if t.dim() != 3 or t.shape[-1] != self.d_model:
                raise ValueError(f"{name} has shape {tuple(t.shape)}; expected [B, length, "
                                 f"d_model={self.d_model}] (batch first)")
        if key.shape[:2] != value.shape[:2] or query.shape[0] != key.shape[0]:
            raise ValueError(f"query {tuple(query.shape)}, key {tuple(key.shape)} and value "
                             f"{tuple(value.shape)} must share B, and key and value the length M")
        B, N, D = query.shape
        M, H, hd = key.shape[1], self.num_heads, self.d_head
        q = self.q_proj(query).view(B, N, H, hd).transpose(1, 2)  # (B, H, N, hd)
        k = self.k_proj(key).view(B, M, H, hd).transpose(1, 2)    # (B, H, M, hd)
        v = self.v_proj(value).view(B, M, H, hd).transpose(1, 2)  # (B, H, M, hd)
        out, weights = scaled_dot_product_attention(q, k, v, mask)  # (B, H, N, hd), (B, H, N, M)
        out = out.transpose(1, 2).reshape(B, N, D)  # concatenate the heads
        return self.out_proj(out), weights

    @classmethod
    def from_torch(cls, mha: nn.MultiheadAttention) -> "MultiHeadAttention":
        """A ``MultiHeadAttention`` holding a copy of ``mha``'s weights (same dtype and device).

        ``nn.MultiheadAttention`` stacks the three input projections in ``in_proj_weight``
        [3 * d_model, d_model] (rows: q, then k, then v) and ``in_proj_bias``; they are split here.
        """
        if not mha._qkv_same_embed_dim or mha.in_proj_bias is None or mha.bias_k is not None:
            raise ValueError("from_torch needs nn.MultiheadAttention(d_model, heads) with bias=True, "
                             "add_bias_kv=False and no kdim/vdim")
        w = mha.in_proj_weight
        new = cls(mha.embed_dim, mha.num_heads).to(dtype=w.dtype, device=w.device)
        with torch.no_grad():
            for proj, wi, bi in zip((new.q_proj, new.k_proj, new.v_proj),
                                    w.chunk(3), mha.in_proj_bias.chunk(3)):
                proj.weight.copy_(wi)
                proj.bias.copy_(bi)
            new.out_proj.weight.copy_(mha.out_proj.weight)
            new.out_proj.bias.copy_(mha.out_proj.bias)
        return new


def sinusoidal_positional_encoding(max_len: int, d_model: int, base: float = 10000.0, dtype=None):
    """Return the fixed encoding of "Attention Is All You Need", a tensor [max_len, d_model].

    PE[pos, 2i] = sin(pos / base^(2i / d_model)),  PE[pos, 2i + 1] = cos(pos / base^(2i / d_model))
    for pos = 0 .. max_len - 1. An odd d_model works too: the last column is a sine.
    Computed in float64, returned as ``dtype`` (default: torch's default dtype).
    """
    if max_len <= 0 or d_model <= 0:
        raise ValueError(f"max_len={max_len} and d_model={d_model} must be positive integers")
    pos = torch.arange(max_len, dtype=torch.float64)[:, None]        # (max_len, 1)
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)         # (ceil(d_model / 2),)
    angles = pos / base ** (two_i / d_model)                         # (max_len, ceil(d_model / 2))
    pe = torch.zeros(max_len, d_model, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(angles)
    pe[:, 1::2] = torch.cos(angles[:, : d_model // 2])
    return pe.to(dtype or torch.get_default_dtype())
