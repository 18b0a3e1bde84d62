"""coursekit.sequence: the reversal task, its layers against PyTorch's, training, maps, bad input."""

import pytest
import torch
from torch import nn

from coursekit.attention import MultiHeadAttention
from coursekit.sequence import (BOS, DecoderLayer, EncoderLayer, Seq2Seq, attention_maps, causal_mask,
                                evaluate, greedy_decode, reversal_data, teacher_input, train)

DT = torch.float64


# --- the data -----------------------------------------------------------------------------------

def test_reversal_data_is_held_out_reversed_and_seeded():
    (src, tgt), (test_src, test_tgt) = reversal_data(3000, 500, length=6, seed=1)
    assert src.shape == tgt.shape == (3000, 6) and test_src.shape == (500, 6) and src.dtype == torch.long
    assert torch.equal(tgt, src.flip(1)) and torch.equal(test_tgt, test_src.flip(1))
    assert src.min() == 0 and src.max() == 9
    rows = {tuple(r) for r in src.tolist()}
    assert len(rows) == 3000, "every training string occurs once"
    assert not rows & {tuple(r) for r in test_src.tolist()}, "no held-out string is in the training set"
    again = reversal_data(3000, 500, length=6, seed=1)
    assert torch.equal(again[0][0], src) and torch.equal(again[1][0], test_src)
    assert not torch.equal(reversal_data(3000, 500, length=6, seed=2)[0][0], src)


@pytest.mark.parametrize("args,match", [
    ((0, 10), "at least 1"), ((10, 10, 19), "between 1 and 18"), ((30, 30, 2), "too many"),
])
def test_reversal_data_errors(args, match):
    with pytest.raises(ValueError, match=match):
        reversal_data(*args)


def test_teacher_input_is_bos_then_the_target_shifted_right():
    tgt = torch.tensor([[3, 1, 4], [1, 5, 9]])
    assert teacher_input(tgt).tolist() == [[BOS, 3, 1], [BOS, 1, 5]]


# --- the layers against PyTorch's, with the same weights ------------------------------------------

def copy_linear_norms_ff(mine, ref, norms):
    for i, ours in enumerate(norms, 1):
        ours.load_state_dict(getattr(ref, f"norm{i}").state_dict())
    mine.ff[0].load_state_dict(ref.linear1.state_dict())
    mine.ff[2].load_state_dict(ref.linear2.state_dict())


def torch_layer(cls, seed=0):
    torch.manual_seed(seed)
    ref = cls(12, 3, dim_feedforward=20, dropout=0.0, activation="gelu", batch_first=True,
              norm_first=True, dtype=DT).eval()
    with torch.no_grad():  # non-zero biases, so a bias copied to the wrong place shows
        for p in ref.parameters():
            if p.dim() == 1:
                p.normal_()
    return ref


def test_encoder_layer_equals_torch_pre_norm_layer():
    ref = torch_layer(nn.TransformerEncoderLayer)
    mine = EncoderLayer(12, 3, 20).to(DT).eval()
    mine.attn = MultiHeadAttention.from_torch(ref.self_attn)
    copy_linear_norms_ff(mine, ref, (mine.norm1, mine.norm2))
    x = torch.randn(2, 7, 12, dtype=DT)
    assert torch.allclose(mine(x), ref(x), atol=1e-12)
    assert mine.weights.shape == (2, 3, 7, 7)


def test_decoder_layer_equals_torch_and_its_cross_attention_equals_multihead_attention():
    ref = torch_layer(nn.TransformerDecoderLayer)
    mine = DecoderLayer(12, 3, 20).to(DT).eval()
    mine.self_attn = MultiHeadAttention.from_torch(ref.self_attn)
    mine.cross_attn = MultiHeadAttention.from_torch(ref.multihead_attn)
    copy_linear_norms_ff(mine, ref, (mine.norm1, mine.norm2, mine.norm3))
    g = torch.Generator().manual_seed(1)
    y, memory = torch.randn(2, 5, 12, dtype=DT, generator=g), torch.randn(2, 8, 12, dtype=DT, generator=g)
    out = mine(y, memory)
    # torch's bool masks are True where attention is NOT allowed: the opposite of ours
    assert torch.allclose(out, ref(y, memory, tgt_mask=~causal_mask(5)), atol=1e-12)
    assert mine.self_weights.shape == (2, 3, 5, 5) and torch.all(mine.self_weights.triu(1) == 0)
    # the cross-attention alone: queries from the decoder [2, 5], keys and values from the encoder [2, 8]
    n1 = ref.norm1(y)
    h = y + ref.self_attn(n1, n1, n1, attn_mask=~causal_mask(5))[0]  # after the causal self-attention
    ours, ours_w = mine.cross_attn(ref.norm2(h), memory, memory)
    theirs, theirs_w = ref.multihead_attn(ref.norm2(h), memory, memory, average_attn_weights=False)
    assert ours_w.shape == (2, 3, 5, 8)                            # rectangular: N = 5 queries, M = 8 keys
    assert torch.allclose(ours, theirs, atol=1e-12) and torch.allclose(ours_w, theirs_w, atol=1e-12)
    assert torch.allclose(mine.cross_weights, ours_w, atol=1e-12)  # what the layer kept is that map


# --- the model ------------------------------------------------------------------------------------

def test_without_positions_the_model_cannot_tell_a_string_from_its_shuffles():
    torch.manual_seed(0)
    src = reversal_data(50, 1, length=8)[0][0]
    tgt_in = teacher_input(src.flip(1))
    shuffled = src[:, torch.randperm(8, generator=torch.Generator().manual_seed(3))]
    with torch.no_grad():
        blind, seeing = Seq2Seq(positions=False).eval(), Seq2Seq(positions=True).eval()
        assert torch.allclose(blind(src, tgt_in), blind(shuffled, tgt_in), atol=1e-5)
        assert not torch.allclose(seeing(src, tgt_in), seeing(shuffled, tgt_in), atol=1e-3)


def test_fast_training_learns_to_reverse_held_out_strings_and_repeats_exactly():
    (src, tgt), (test_src, test_tgt) = reversal_data(1000, 300, length=6, seed=0)
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = Seq2Seq()
        runs.append((train(model, src, tgt, steps=100, batch_size=64, progress=False), model))
    (losses, model), (losses2, model2) = runs
    assert losses == losses2, "a seeded CPU run repeats exactly"
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), model2.state_dict().values()))
    assert losses[-1] < losses[0] / 3
    scores = evaluate(model, test_src, test_tgt)
    # chance: 10% of the digits and 1e-6 of the strings; after 100 steps most strings come out right
    assert scores["token_acc"] > 0.7 and scores["seq_acc"] > 0.3, scores


def test_attention_maps_shapes_and_rows():
    torch.manual_seed(0)
    model = Seq2Seq(d_model=16, num_heads=4, num_layers=2)
    src = reversal_data(5, 1, length=7)[0][0]
    maps = attention_maps(model, src)
    assert torch.equal(maps["output"], greedy_decode(model, src))
    assert maps["encoder"].shape == (2, 5, 4, 7, 7)
    assert maps["decoder"].shape == (2, 5, 4, 7, 7)
    assert maps["cross"].shape == (2, 5, 4, 7, 7)
    src_short = src[:, :4]
    maps = attention_maps(model, src_short)
    assert maps["cross"].shape == (2, 5, 4, 4, 4) and maps["output"].shape == (5, 4)
    for name in ("encoder", "decoder", "cross"):
        assert torch.allclose(maps[name].sum(-1), torch.ones(())), name
    assert torch.all(maps["decoder"].triu(1) == 0), "the decoder cannot look ahead"


def test_bad_input_says_what_is_wrong():
    model = Seq2Seq(max_len=8)
    src = torch.randint(0, 10, (4, 6))
    with pytest.raises(ValueError, match="digits 0-9 or BOS"):
        model(src + 5, teacher_input(src))
    with pytest.raises(ValueError, match="int64"):
        model(src.float(), teacher_input(src))
    with pytest.raises(ValueError, match="max_len=8"):
        model(torch.randint(0, 10, (4, 9)), teacher_input(src))
    with pytest.raises(ValueError, match="batch size"):
        model(src[:3], teacher_input(src))
    with pytest.raises(ValueError, match="must both be"):
        train(model, src, src[:, :5], steps=1, batch_size=2, progress=False)
    with pytest.raises(ValueError, match="batch_size=5"):
        train(model, src, src, steps=1, batch_size=5, progress=False)
    with pytest.raises(ValueError, match="same, non-empty shape"):
        evaluate(model, src, src[:2])


def test_training_runs_on_one_thread_and_restores_the_setting():
    before = torch.get_num_threads()
    seen = []
    model = Seq2Seq()
    model.register_forward_pre_hook(lambda *_: seen.append(torch.get_num_threads()))
    src = reversal_data(8, 1, length=4)[0][0]
    try:
        torch.set_num_threads(2)
        train(model, src, src.flip(1), steps=2, batch_size=4, progress=False)
        greedy_decode(model, src)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert seen and set(seen) == {1}
