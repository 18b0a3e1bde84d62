"""coursekit.attention against PyTorch and closed forms, in float64."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from coursekit.attention import (MultiHeadAttention, scaled_dot_product_attention,
                                 sinusoidal_positional_encoding)

DT = torch.float64


def rand(*shape, seed=0):
    return torch.randn(*shape, dtype=DT, generator=torch.Generator().manual_seed(seed))


def causal(n, m=None):
    return torch.ones(n, m or n, dtype=torch.bool).tril()


# --- scaled_dot_product_attention -------------------------------------------------------------

@pytest.mark.parametrize("shape_q,shape_kv", [
    ((5, 4), (7, 4)),                   # no batch dims
    ((2, 5, 8), (2, 6, 8)),             # batch
    ((2, 3, 5, 8), (2, 3, 6, 8)),       # batch and heads
    ((2, 3, 5, 8), (1, 3, 6, 8)),       # keys broadcast over the batch
])
def test_sdpa_matches_torch(shape_q, shape_kv):
    q, k, v = rand(*shape_q, seed=1), rand(*shape_kv, seed=2), rand(*shape_kv, seed=3)
    out, w = scaled_dot_product_attention(q, k, v)
    assert torch.allclose(out, F.scaled_dot_product_attention(q, k, v), atol=1e-12)
    assert torch.allclose(w.sum(-1), torch.ones((), dtype=DT))
    # the weights are the softmax of the scaled scores, written independently
    ref_w = torch.exp(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]))
    assert torch.allclose(w, ref_w / ref_w.sum(-1, keepdim=True), atol=1e-12)


@pytest.mark.parametrize("mask_shape", [(2, 3, 5, 6), (2, 1, 5, 6), (2, 1, 1, 6), (5, 6), (6,)])
def test_sdpa_bool_masks_match_torch(mask_shape):
    q, k, v = rand(2, 3, 5, 8, seed=1), rand(2, 3, 6, 8, seed=2), rand(2, 3, 6, 8, seed=3)
    mask = torch.rand(mask_shape, generator=torch.Generator().manual_seed(4)) > 0.4
    mask[..., 0] = True  # every query keeps at least one key
    out, w = scaled_dot_product_attention(q, k, v, mask)
    assert torch.allclose(out, F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask.expand(2, 3, 5, 6)), atol=1e-12)
    assert torch.all(w[~mask.expand_as(w)] == 0)
    assert torch.allclose(w.sum(-1), torch.ones((), dtype=DT))


def test_sdpa_causal_matches_torch():
    q, k, v = rand(2, 4, 6, 8, seed=1), rand(2, 4, 6, 8, seed=2), rand(2, 4, 6, 8, seed=3)
    out, w = scaled_dot_product_attention(q, k, v, causal(6))
    assert torch.allclose(out, F.scaled_dot_product_attention(q, k, v, is_causal=True), atol=1e-12)
    assert torch.all(w.triu(1) == 0)
    # the first query can only see the first key
    assert torch.allclose(out[..., 0, :], v[..., 0, :])


def test_sdpa_identical_keys_give_uniform_weights_and_the_mean_value():
    q, v = rand(3, 4, seed=1), rand(5, 2, seed=2)
    k = rand(1, 4, seed=3).expand(5, 4)
    out, w = scaled_dot_product_attention(q, k, v)
    assert torch.allclose(w, torch.full((3, 5), 0.2, dtype=DT), atol=1e-12)
    assert torch.allclose(out, v.mean(0).expand(3, 2), atol=1e-12)


def test_sdpa_one_hot_closed_form():
    # q_i = s * e_i, k = identity: score(i, j) = s * [i == j] / sqrt(d), so each query mostly
    # picks its own value, with weight e^a / (e^a + d - 1), a = s / sqrt(d)
    d, s = 4, 10.0
    q, k, v = s * torch.eye(d, dtype=DT), torch.eye(d, dtype=DT), rand(d, 3, seed=1)
    out, w = scaled_dot_product_attention(q, k, v)
    a = s / math.sqrt(d)
    on, off = math.exp(a) / (math.exp(a) + d - 1), 1 / (math.exp(a) + d - 1)
    expected_w = torch.full((d, d), off, dtype=DT).fill_diagonal_(on)
    assert torch.allclose(w, expected_w, atol=1e-12)
    assert torch.allclose(out, expected_w @ v, atol=1e-12)


def test_sdpa_mask_makes_masked_values_irrelevant():
    q, k, v = rand(4, 8, seed=1), rand(6, 8, seed=2), rand(6, 3, seed=3)
    mask = torch.tensor([True, True, True, False, False, False])
    out, _ = scaled_dot_product_attention(q, k, v, mask)
    v2 = v.clone()
    v2[3:] = 1e6
    out2, _ = scaled_dot_product_attention(q, k, v2, mask)
    ref, _ = scaled_dot_product_attention(q, k[:3], v[:3])
    assert torch.allclose(out, out2) and torch.allclose(out, ref, atol=1e-12)


@pytest.mark.parametrize("q_shape,k_shape,v_shape,mask,match", [
    ((5, 4), (6, 3), (6, 3), None, "same last dimension"),
    ((5, 4), (6, 4), (7, 4), None, "one value per key"),
    ((2, 5, 4), (3, 6, 4), (3, 6, 4), None, "do not broadcast"),
    ((5, 4), (6, 4), (6, 4), torch.ones(5, 6), "must be bool"),
    ((5, 4), (6, 4), (6, 4), torch.ones(5, 5, dtype=torch.bool), "does not broadcast"),
    ((2, 4), (3, 4), (3, 4), torch.tensor([[True, False, False], [False, False, False]]),
     "all False"),
])
def test_sdpa_errors(q_shape, k_shape, v_shape, mask, match):
    with pytest.raises(ValueError, match=match):
        scaled_dot_product_attention(rand(*q_shape), rand(*k_shape), rand(*v_shape), mask)


# --- MultiHeadAttention ------------------------------------------------------------------------

def pair(d_model=12, heads=3, seed=0):
    torch.manual_seed(seed)
    ref = nn.MultiheadAttention(d_model, heads, batch_first=True, dtype=DT).eval()
    with torch.no_grad():  # non-zero biases, so a bias copied to the wrong place shows
        ref.in_proj_bias.normal_()
        ref.out_proj.bias.normal_()
    return ref, MultiHeadAttention.from_torch(ref)


@pytest.mark.parametrize("self_attention", [True, False])
def test_mha_matches_torch(self_attention):
    ref, mine = pair()
    x = rand(2, 5, 12, seed=1)
    kv = x if self_attention else rand(2, 7, 12, seed=2)
    out, w = mine(x, kv, kv)
    ref_out, ref_w = ref(x, kv, kv)                                   # weights averaged over heads
    _, ref_w_heads = ref(x, kv, kv, average_attn_weights=False)      # [B, H, N, M]
    assert w.shape == (2, 3, 5, kv.shape[1])
    assert torch.allclose(out, ref_out, atol=1e-12)
    assert torch.allclose(w, ref_w_heads, atol=1e-12)
    assert torch.allclose(w.mean(1), ref_w, atol=1e-12)


def test_mha_masks_match_torch():
    ref, mine = pair(d_model=8, heads=2)
    x = rand(3, 6, 8, seed=1)
    pad = torch.tensor([[False] * 6, [False] * 4 + [True] * 2, [False] * 2 + [True] * 4])  # True = pad
    keep = ~pad[:, None, None, :]                                     # ours: True = allowed
    out, w = mine(x, x, x, keep)
    ref_out, ref_w = ref(x, x, x, key_padding_mask=pad, average_attn_weights=False)
    assert torch.allclose(out, ref_out, atol=1e-12) and torch.allclose(w, ref_w, atol=1e-12)
    # causal and padding together; torch's bool attn_mask is True where NOT allowed
    out, w = mine(x, x, x, keep & causal(6))
    ref_out, ref_w = ref(x, x, x, key_padding_mask=pad, attn_mask=~causal(6))
    assert torch.allclose(out, ref_out, atol=1e-12) and torch.allclose(w.mean(1), ref_w, atol=1e-12)


def test_mha_from_torch_copies_rather_than_shares():
    ref, mine = pair()
    with torch.no_grad():
        mine.q_proj.weight.zero_()
    assert ref.in_proj_weight.abs().sum() > 0
    x = rand(1, 4, 12)
    assert not torch.allclose(mine(x, x, x)[0], ref(x, x, x)[0])


def test_mha_from_torch_rejects_unsupported():
    with pytest.raises(ValueError, match="bias=True"):
        MultiHeadAttention.from_torch(nn.MultiheadAttention(8, 2, bias=False))
    with pytest.raises(ValueError, match="kdim"):
        MultiHeadAttention.from_torch(nn.MultiheadAttention(8, 2, kdim=4, vdim=4))


def test_mha_errors():
    with pytest.raises(ValueError, match=r"d_model=10 is not divisible by num_heads=3.*\[1, 2, 5, 10\]"):
        MultiHeadAttention(10, 3)
    with pytest.raises(ValueError, match="must be positive"):
        MultiHeadAttention(8, 0)
    mha = MultiHeadAttention(8, 2)
    x = torch.randn(2, 5, 8)
    with pytest.raises(ValueError, match="d_model=8"):
        mha(torch.randn(2, 5, 6), x, x)
    with pytest.raises(ValueError, match="batch first"):
        mha(torch.randn(5, 8), x, x)
    with pytest.raises(ValueError, match="share B"):
        mha(x, x, torch.randn(2, 4, 8))
    with pytest.raises(ValueError, match="share B"):
        mha(torch.randn(3, 5, 8), x, x)


# --- sinusoidal_positional_encoding -------------------------------------------------------------

def test_sinusoidal_closed_form_entries():
    pe = sinusoidal_positional_encoding(50, 16)
    assert pe.shape == (50, 16) and pe.dtype == torch.get_default_dtype()
    for pos, i in [(0, 0), (1, 0), (7, 3), (49, 7), (20, 5)]:
        angle = pos / 10000 ** (2 * i / 16)
        assert math.isclose(pe[pos, 2 * i].item(), math.sin(angle), abs_tol=1e-6)
        assert math.isclose(pe[pos, 2 * i + 1].item(), math.cos(angle), abs_tol=1e-6)
    assert torch.equal(pe[0, 0::2], torch.zeros(8)) and torch.equal(pe[0, 1::2], torch.ones(8))


def test_sinusoidal_odd_d_model_and_offset_is_a_rotation():
    pe = sinusoidal_positional_encoding(10, 7)
    assert pe.shape == (10, 7)
    for pos, col in [(3, 6), (9, 6), (4, 1), (5, 4)]:
        angle = pos / 10000 ** ((col - col % 2) / 7)
        expected = math.sin(angle) if col % 2 == 0 else math.cos(angle)
        assert math.isclose(pe[pos, col].item(), expected, abs_tol=1e-6)
    # PE[pos + k] = R_k PE[pos] with the same block-diagonal rotation R_k for every pos
    d, k = 8, 3
    pe = sinusoidal_positional_encoding(40, d, dtype=DT)
    assert pe.dtype == DT
    w = 1 / 10000 ** (torch.arange(0, d, 2, dtype=DT) / d)
    c, s = torch.cos(w * k), torch.sin(w * k)
    R = torch.block_diag(*[torch.stack([torch.stack([ci, si]), torch.stack([-si, ci])]) for ci, si in zip(c, s)])
    assert torch.allclose(pe[k:], pe[:-k] @ R.T, atol=1e-12)


def test_sinusoidal_errors():
    with pytest.raises(ValueError, match="max_len=0"):
        sinusoidal_positional_encoding(0, 8)
    with pytest.raises(ValueError, match="d_model=-2"):
        sinusoidal_positional_encoding(5, -2)


# --- cross-attention: queries from one sequence, keys and values from another --------------------

def test_cross_attention_is_rectangular_and_matches_torch_with_a_key_padding_mask():
    ref, mine = pair(d_model=8, heads=2, seed=3)
    target, source = rand(2, 4, 8, seed=1), rand(2, 6, 8, seed=2)  # N = 4 queries, M = 6 keys and values
    keep = torch.tensor([[True] * 6, [True] * 3 + [False] * 3])       # source 2 is 3 tokens + 3 pads
    out, w = mine(target, source, source, keep[:, None, None, :])
    ref_out, ref_w = ref(target, source, source, key_padding_mask=~keep, average_attn_weights=False)
    assert out.shape == (2, 4, 8) and w.shape == (2, 2, 4, 6)       # one output per query, weights N x M
    assert torch.allclose(out, ref_out, atol=1e-12) and torch.allclose(w, ref_w, atol=1e-12)
    assert torch.allclose(w.sum(-1), torch.ones((), dtype=DT)) and torch.all(w[1, :, :, 3:] == 0)
    # the same heads with F.scaled_dot_product_attention, from the projections
    def split(t):  # [B, length, 8] -> [B, H, length, d_head]
        return t.view(2, -1, 2, 4).transpose(1, 2)

    q, k, v = split(mine.q_proj(target)), split(mine.k_proj(source)), split(mine.v_proj(source))
    heads = F.scaled_dot_product_attention(q, k, v, attn_mask=keep[:, None, None, :])
    assert torch.allclose(mine.out_proj(heads.transpose(1, 2).reshape(2, 4, 8)), out, atol=1e-12)
