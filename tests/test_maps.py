"""coursekit.maps beyond the pictures: every check names the problem, the hybrid is read through its
ViT, rollout's discarding works layer by layer, and the summary numbers against hand computations."""

import pytest
import torch
from conftest import small
from torch import nn
from vit_pytorch.vit import ViT

from coursekit import maps


def softmax_maps(B=2, L=2, H=3, T=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, L, H, T, T, generator=g).softmax(-1)


def test_a_model_without_attention_or_embeddings_is_named_with_the_fix():
    cnn = small("cnn")
    with pytest.raises(ValueError, match=r"^CNN has no vit-pytorch attention layers; attention_maps works with "
                       r"vit_pytorch.ViT, vit_pytorch.deepvit.DeepViT and coursekit's Hybrid$"):
        maps.attention_maps(cnn, torch.zeros(1, 1, 28, 28))
    with pytest.raises(ValueError, match=r"^CNN has no learned position embedding \(pos_embedding\)$"):
        maps.position_similarity(cnn)
    with pytest.raises(ValueError, match=r"^CNN has no vit-pytorch patch embedding \(to_patch_embedding = "
                       r"Rearrange, LayerNorm, Linear, LayerNorm\); build a ViT with vit-pytorch$"):
        maps.patch_embedding_components(cnn)


def test_maps_that_are_not_square_are_refused_everywhere():
    bad = torch.rand(1, 2, 3, 5, 6)
    fix = r"\[B, layers, heads, tokens, tokens\], got \(1, 2, 3, 5, 6\); pass"
    for summary in (maps.layer_similarity, maps.sink_share, lambda m: maps.mean_attention_distance(m, 4)):
        with pytest.raises(ValueError, match=fix + r" attention_maps\(model, images\)$"):
            summary(bad)
    with pytest.raises(ValueError, match=fix + r" the output of attention_maps\(model, images\)$"):
        maps.attention_rollout(bad)


def test_the_hybrid_is_read_through_its_vit():
    hybrid = small("hybrid")
    assert torch.equal(maps.position_similarity(hybrid), maps.position_similarity(hybrid.vit))
    pos = nn.functional.normalize(hybrid.vit.pos_embedding.detach()[1:], dim=-1)
    assert torch.allclose(maps.position_similarity(hybrid), pos @ pos.T, atol=1e-6)
    components, explained = maps.patch_embedding_components(hybrid, k=4)
    again, same = maps.patch_embedding_components(hybrid.vit, k=4)
    assert torch.equal(components, again) and torch.equal(explained, same)
    assert components.shape == (4, hybrid.vit.to_patch_embedding[2].in_features // 4, 2, 2)


def test_deepvit_gives_its_softmax_maps_only_when_asked():
    deepvit = small("deepvit")
    images = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    softmax = maps.attention_maps(deepvit, images, reattention=False)
    mixed = maps.attention_maps(deepvit, images)
    assert torch.allclose(softmax.sum(-1), torch.ones(softmax.shape[:-1]), atol=1e-5)
    assert not torch.allclose(mixed, softmax, atol=1e-3)


def test_rollout_discards_the_smallest_entries_of_each_layer_separately():
    a = softmax_maps(B=1, L=2, H=1, T=3)
    a[0, 1] *= 0.01  # layer 2 far smaller: a choice across layers would take all its entries
    got = maps.attention_rollout(a, discard_ratio=0.4)  # 3 of the 9 entries of each layer
    by_hand = []
    for layer in a[0, :, 0]:
        flat = layer.flatten().clone()
        keyed = flat.clone()
        keyed[0] = float("inf")
        flat[keyed.argsort()[:3]] = 0
        kept = flat.view(3, 3) + torch.eye(3)
        by_hand.append(kept / kept.sum(-1, keepdim=True))
    assert torch.allclose(got[0], by_hand[1] @ by_hand[0], atol=1e-6)


def test_a_query_names_one_token_and_the_default_is_cls():
    attention = softmax_maps(B=1, L=1, H=1, T=5)[0, 0, 0]  # [5, 5]: CLS and a 2x2 grid
    assert torch.equal(maps.token_map(attention), attention[0, 1:].view(2, 2))
    assert torch.equal(maps.token_map(attention, 4), attention[4, 1:].view(2, 2))  # the last patch
    assert maps.self_share(attention) == attention[0, 0]
    with pytest.raises(ValueError, match=r"^query=5 must be 0 \(CLS\) or a patch 1..4$"):
        maps.token_map(attention, 5)
    with pytest.raises(ValueError, match=r"^6 tokens are not 1 CLS token \+ a square grid of patches; "
                       r"build the ViT with pool='cls' and a square image$"):
        maps.token_map(torch.rand(2, 3, 6, 6))


def test_mean_attention_distance_names_bad_maps():
    with pytest.raises(ValueError, match=r"^maps has negative weights \(DeepViT's re-attention\?\); "
                       r"mean_attention_distance needs attention rows of shares >= 0, as a ViT's softmax gives$"):
        maps.mean_attention_distance(softmax_maps() - 0.5, 4)
    with pytest.raises(ValueError, match=r"^6 tokens are not 1 CLS token \+ a square grid of patches$"):
        maps.mean_attention_distance(softmax_maps(L=3, T=6), 4)


def test_neighbours_are_exactly_one_grid_step_away():
    g = 3
    rows, cols = torch.arange(g).repeat_interleave(g), torch.arange(g).repeat(g)
    steps = (rows[:, None] - rows).abs() + (cols[:, None] - cols).abs()  # 0 to 4 grid steps
    near, far = maps.neighbour_similarity(-steps.float())
    assert near == -1.0 and far == pytest.approx(-steps[steps > 1].float().mean().item())
    for bad in (torch.rand(4, 5), torch.rand(4, 4, 4), torch.rand(5, 5)):
        with pytest.raises(ValueError, match=r"^sim must be \[P, P\] for P patches on a square grid"):
            maps.neighbour_similarity(bad)


def test_patch_components_are_the_centred_filters_principal_directions():
    vit = small("vit")
    components, explained = maps.patch_embedding_components(vit)
    assert components.shape == (16, 1, 4, 4)  # k=16 by default: every direction of 4x4 grey patches
    embedding = vit.to_patch_embedding
    filters = (embedding[2].weight * embedding[1].weight).detach()
    filters = filters - filters.mean(1, keepdim=True)
    centred = filters - filters.mean(0)
    variance = torch.linalg.eigvalsh(centred.T @ centred).flip(0)
    assert torch.allclose(explained, variance / variance.sum(), atol=1e-5)
    assert torch.allclose(components.flatten(1).sum(1)[:15], torch.zeros(15), atol=1e-5)  # no constant part
    with pytest.raises(ValueError, match=r"^k=17 must be between 1 and 16 \(the filters' count and length\)$"):
        maps.patch_embedding_components(vit, k=17)
    with pytest.raises(ValueError, match=r"^k=0 must be between 1 and 16"):
        maps.patch_embedding_components(vit, k=0)


@pytest.mark.parametrize("first, width", [(nn.Identity(), 16), (None, 20)])
def test_a_patch_embedding_that_is_not_vit_pytorchs_is_refused(first, width):
    vit = ViT(image_size=28, patch_size=4, num_classes=10, dim=32, depth=1, heads=2, mlp_dim=32)
    rearrange = vit.to_patch_embedding[0] if first is None else first
    vit.to_patch_embedding = nn.Sequential(rearrange, nn.LayerNorm(width), nn.Linear(width, 32), nn.LayerNorm(32))
    with pytest.raises(ValueError, match=r"^to_patch_embedding\[0\] is not vit-pytorch's Rearrange with the "
                       r"patch side p1; build a ViT with vit-pytorch$"):
        maps.patch_embedding_components(vit)


def test_a_patch_embedding_without_its_layer_norm_is_refused():
    vit = ViT(image_size=28, patch_size=4, num_classes=10, dim=32, depth=1, heads=2, mlp_dim=32)
    vit.to_patch_embedding = nn.Sequential(vit.to_patch_embedding[0], nn.Linear(16, 32))
    with pytest.raises(ValueError, match="has no vit-pytorch patch embedding"):
        maps.patch_embedding_components(vit)
