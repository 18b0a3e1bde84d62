"""Tests for coursekit.faithfulness and the ViT paper's figure 7 numbers in coursekit.maps: deletion and
insertion curves on a model whose answer is known, Spearman against its closed form, the
randomization check, mean attention distance against brute force, filter PCs of a known subspace."""

import math

import pytest
import torch
from conftest import SMALL
from matplotlib.figure import Figure
from torch import nn

from coursekit import viz
from coursekit.faithfulness import (deletion_curve, explanations, insertion_curve, patch_ranking, random_ranking,
                                    randomization_check, randomization_stages, randomized_copy,
                                    rollout_flattening, spearman)
from coursekit.maps import (attention_maps, layer_similarity, mean_attention_distance, patch_embedding_components,
                            sink_share)
from coursekit.models import build_model


class OnePatch(nn.Module):
    """Looks only at patch ``patch`` (0..g*g-1) of a g x g grid: class 0's logit is ``gain`` times the
    patch's mean pixel, class 1's is 0. A bright patch gives class 0; with the patch at 0 the two
    classes tie at probability 1/2, whatever the rest of the image holds."""

    def __init__(self, patch: int, g: int, gain: float = 10.0):
        super().__init__()
        self.patch, self.g = patch, g
        self.gain = nn.Parameter(torch.tensor(gain))

    def forward(self, x):
        side = x.shape[-1] // self.g
        row, col = divmod(self.patch, self.g)
        mean = x[:, :, row * side:(row + 1) * side, col * side:(col + 1) * side].mean(dim=(1, 2, 3))
        return torch.stack([self.gain * mean, torch.zeros_like(mean)], dim=1)


def bright_images(n=64, side=28, seed=0):
    """Images of 0.5 to 1.5 everywhere: the OnePatch model answers class 0 on each."""
    return 0.5 + torch.rand(n, 1, side, side, generator=torch.Generator().manual_seed(seed))


def ranking_with_first(patch, n_images, n_patches):
    rest = [p for p in range(n_patches) if p != patch]
    return torch.tensor([patch] + rest).expand(n_images, n_patches)


@pytest.mark.parametrize("g", [4, 7])  # 7: squares of 4 pixels on 28, as a hybrid's 7x7 tokens
def test_deleting_the_one_patch_the_model_reads_drops_its_probability_at_once(g):
    model, images = OnePatch(patch=5, g=g), bright_images()
    P = g * g
    first = deletion_curve(model, images, ranking_with_first(5, len(images), P))
    with torch.no_grad():
        start = torch.softmax(model(images), dim=-1)[:, 0]  # [B]: about 1, the patch is bright
    torch.testing.assert_close(first.prob[0], start.mean())
    torch.testing.assert_close(first.prob[1:], torch.full((P,), 0.5))  # gone at step 1, then a tie
    torch.testing.assert_close(first.share, torch.arange(P + 1) / P)
    by_hand = (start + 0.5) / 2 / P + 0.5 * (P - 1) / P  # trapezoid rule: one slope, then flat at 1/2
    torch.testing.assert_close(first.aucs, by_hand)
    assert first.auc == pytest.approx(float(by_hand.mean()), abs=1e-6)
    shuffled = deletion_curve(model, images, random_ranking(len(images), P, seed=0))
    assert shuffled.auc > first.auc + 0.05  # random order deletes the patch later on average
    last = deletion_curve(model, images, ranking_with_first(5, len(images), P).flip(-1))
    assert last.auc > shuffled.auc  # the worst order keeps the patch to the end


def test_insertion_is_the_mirror():
    model, images = OnePatch(patch=10, g=4), bright_images()
    first = insertion_curve(model, images, ranking_with_first(10, len(images), 16))
    with torch.no_grad():
        start = torch.softmax(model(images), dim=-1)[:, 0]
    assert float(first.prob[0]) == pytest.approx(0.5)  # all baseline: a tie
    torch.testing.assert_close(first.prob[1:], start.mean().expand(16))  # back at once
    shuffled = insertion_curve(model, images, random_ranking(len(images), 16, seed=1))
    assert first.auc > shuffled.auc + 0.05


def test_steps_baseline_batches_and_model_flags():
    model, images = OnePatch(patch=0, g=4), bright_images(10)
    ranking = ranking_with_first(0, 10, 16)
    coarse = deletion_curve(model, images, ranking, steps=4)
    torch.testing.assert_close(coarse.share, torch.tensor([0, 0.25, 0.5, 0.75, 1.0]))
    whole = deletion_curve(model, images, ranking, batch_size=256)
    torch.testing.assert_close(deletion_curve(model, images, ranking, batch_size=3).prob, whole.prob)
    # a baseline as bright as the images: deleting changes nothing
    same = deletion_curve(model, torch.ones(10, 1, 28, 28), ranking, baseline=1.0)
    torch.testing.assert_close(same.prob, same.prob[:1].expand(17))
    model.train()
    deletion_curve(model, images, ranking)
    assert model.training  # restored after eval mode


def test_a_vits_curves_ignore_which_constant_a_removed_patch_becomes_a_hybrids_do_not():
    images = torch.randn(6, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    ranking = random_ranking(6, 16, seed=0)
    for kind, same in (("vit", True), ("hybrid", False)):
        torch.manual_seed(0)
        model = build_model(kind, "mnist", patch_size=7 if kind == "vit" else 2, **SMALL)
        if kind == "hybrid":
            ranking = random_ranking(6, 49, seed=0)  # its 7x7 tokens: squares of 4 pixels
        black, grey = (deletion_curve(model, images, ranking, baseline=b).prob for b in (-0.42, 0.0))
        # the first LayerNorm standardizes each patch: a constant patch is one input, whatever its value
        assert torch.allclose(black, grey, atol=1e-4) == same, kind


def test_rankings():
    grid = torch.tensor([[[0.1, 0.4], [0.3, 0.2]]])
    assert patch_ranking(grid).tolist() == [[1, 2, 3, 0]]
    assert patch_ranking(torch.zeros(1, 2, 2)).tolist() == [[0, 1, 2, 3]]  # ties: row by row
    a, b = random_ranking(5, 16, seed=3), random_ranking(5, 16, seed=3)
    assert torch.equal(a, b) and not torch.equal(a, random_ranking(5, 16, seed=4))
    assert torch.equal(a.sort(-1).values, torch.arange(16).expand(5, 16))


def test_bad_inputs_give_clear_errors():
    model, images = OnePatch(patch=0, g=4), bright_images(4)
    with pytest.raises(ValueError, match="one row per image"):
        deletion_curve(model, images, random_ranking(3, 16))
    with pytest.raises(ValueError, match="square grid"):
        deletion_curve(model, images, random_ranking(4, 15))
    with pytest.raises(ValueError, match="exactly once"):
        deletion_curve(model, images, torch.zeros(4, 16, dtype=torch.long))
    with pytest.raises(ValueError, match="steps=17"):
        deletion_curve(model, images, random_ranking(4, 16), steps=17)
    with pytest.raises(ValueError, match=r"\[B, C, H, H\]"):
        deletion_curve(model, images[0], random_ranking(4, 16))
    with pytest.raises(ValueError, match=r"\[B, g, g\]"):
        patch_ranking(torch.zeros(4, 16))
    with pytest.raises(ValueError, match="same shape"):
        spearman(torch.zeros(2, 4), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="top=9"):
        randomized_copy(build_model("vit", "mnist", **SMALL), top=9)
    with pytest.raises(ValueError, match="not a vit-pytorch ViT"):
        randomization_stages(model)
    with pytest.raises(ValueError, match="negative"):
        mean_attention_distance(-torch.ones(1, 1, 1, 5, 5), 7)
    with pytest.raises(ValueError, match="square grid"):
        mean_attention_distance(torch.ones(1, 1, 1, 6, 6), 7)
    with pytest.raises(ValueError, match="patch embedding"):
        patch_embedding_components(model)


def test_spearman_matches_its_closed_form_and_handles_ties():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(6, 3, 3, generator=gen), torch.randn(6, 3, 3, generator=gen)
    d = a.flatten(1).argsort(-1).argsort(-1) - b.flatten(1).argsort(-1).argsort(-1)  # rank differences
    n = 9
    closed = 1 - 6 * (d.double() ** 2).sum(-1) / (n * (n * n - 1))
    torch.testing.assert_close(spearman(a, b), closed.float())
    torch.testing.assert_close(spearman(a, a.exp()), torch.ones(6))  # any increasing map: 1
    torch.testing.assert_close(spearman(a, -a), -torch.ones(6))
    # ties share their mean rank: [1, 1, 2, 3] has ranks [0.5, 0.5, 2, 3]; Pearson of those with [0, 1, 2, 3]
    x, y = torch.tensor([[1.0, 1.0, 2.0, 3.0]]), torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    rx, ry = torch.tensor([0.5, 0.5, 2, 3]), torch.tensor([0.0, 1, 2, 3])
    rx, ry = rx - rx.mean(), ry - ry.mean()
    assert float(spearman(x, y)) == pytest.approx(float((rx @ ry) / (rx.norm() * ry.norm())))
    assert math.isnan(float(spearman(torch.ones(1, 4), y)))  # a flat map has no order


def test_randomization_check_gives_one_for_the_same_model_and_less_for_a_new_one():
    torch.manual_seed(0)
    model = build_model("vit", "mnist", **SMALL)
    images = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    explain = lambda m, x: explanations(m, x, target=0)  # noqa: E731
    same = randomization_check(model, images, explain, top=0)
    assert same == pytest.approx({"attention, last layer": 1.0, "rollout": 1.0, "gradient rollout": 1.0})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    new = randomization_check(model, images, explain, seed=0)
    assert all(v < 0.9 for v in new.values()), new
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the model untouched
    assert new == randomization_check(model, images, explain, seed=0)  # seeded


def test_randomized_copy_reinitializes_stages_from_the_top():
    torch.manual_seed(0)
    model = build_model("vit", "mnist", **SMALL)
    names = [name for name, _ in randomization_stages(model)]
    assert names == ["head", "block 2", "block 1", "embedding"]
    state = torch.random.get_rng_state()
    top2 = randomized_copy(model, top=2, seed=0)
    assert torch.equal(state, torch.random.get_rng_state())  # torch's random numbers left as they were
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, top2.state_dict()[k])}
    assert any(k.startswith("mlp_head") for k in changed) and any(k.startswith("transformer.layers.1") for k in changed)
    assert not any(k.startswith(("transformer.layers.0", "to_patch_embedding", "pos_embedding")) for k in changed)
    everything = randomized_copy(model, seed=0)
    assert not torch.equal(everything.pos_embedding, model.pos_embedding)
    hybrid = build_model("hybrid", "mnist", **SMALL)
    assert hybrid.stem in randomization_stages(hybrid)[-1][1]


def brute_force_distance(weights, g, p):
    """Attention-weighted mean distance with Python loops: weights [P, P] rows over patches."""
    total = 0.0
    for q in range(g * g):
        for k in range(g * g):
            total += float(weights[q, k]) * math.dist(divmod(q, g), divmod(k, g)) * p
    return total / (g * g)


def maps_from(patch_weights, cls_share=0.0):
    """[1, 1, 1, T, T] attention from patch rows [P, P]: CLS row/column added, rows summing to 1."""
    P = len(patch_weights)
    maps = torch.zeros(P + 1, P + 1)
    maps[0] = 1.0 / (P + 1)
    maps[1:, 0] = cls_share
    maps[1:, 1:] = patch_weights * (1 - cls_share)
    return maps[None, None, None]


@pytest.mark.parametrize("g,p", [(2, 7), (4, 7), (4, 4)])
def test_mean_attention_distance_against_brute_force(g, p):
    P = g * g
    own = mean_attention_distance(maps_from(torch.eye(P), cls_share=0.3), p)
    assert own.shape == (1, 1) and float(own) == pytest.approx(0.0)
    uniform = mean_attention_distance(maps_from(torch.full((P, P), 1.0 / P), cls_share=0.3), p)
    assert float(uniform) == pytest.approx(brute_force_distance(torch.full((P, P), 1.0 / P), g, p), rel=1e-5)
    if g == 2:  # each patch: itself 0, two neighbours p, the diagonal p*sqrt(2)
        assert float(uniform) == pytest.approx(p * (2 + math.sqrt(2)) / 4, rel=1e-6)
    weights = torch.rand(P, P, generator=torch.Generator().manual_seed(g))
    weights = weights / weights.sum(-1, keepdim=True)
    assert float(mean_attention_distance(maps_from(weights, 0.2), p)) == pytest.approx(
        brute_force_distance(weights, g, p), rel=1e-5)


def test_mean_attention_distance_is_per_layer_and_head_and_averages_images():
    P = 16
    own, uniform = maps_from(torch.eye(P)), maps_from(torch.full((P, P), 1.0 / P))
    maps = torch.cat([torch.cat([own, uniform], dim=2), torch.cat([uniform, uniform], dim=2)], dim=0)
    distance = mean_attention_distance(maps, 7)  # 2 images, 1 layer, 2 heads
    far = brute_force_distance(torch.full((P, P), 1.0 / P), 4, 7)
    torch.testing.assert_close(distance, torch.tensor([[far / 2, far]]))


def test_filter_components_recover_a_known_subspace():
    torch.manual_seed(0)
    model = build_model("vit", "mnist", patch_size=7, **SMALL)  # filters: 32 rows of length 49
    u = torch.zeros(2, 49)
    u[0, :24], u[0, 24:48] = 1, -1  # two orthogonal directions with mean 0
    u[1, ::2], u[1, 1::2] = 1, -1
    u[1, 48] = 0
    u[1] -= u[1].mean()
    u = u / u.norm(dim=1, keepdim=True)
    u[1] -= (u[1] @ u[0]) * u[0]
    u[1] /= u[1].norm()
    a = torch.tensor([3.0, -3.0] * 16)  # centred coefficients: variances 9 and 1
    b = torch.tensor([1.0, 1.0, -1.0, -1.0] * 8)
    embed = model.to_patch_embedding
    gain = 0.5 + torch.rand(49, generator=torch.Generator().manual_seed(3))  # the first LayerNorm's gain
    with torch.no_grad():  # the filters W * gain span u: W = (a u0 + b u1 + a constant, invisible) / gain
        embed[2].weight.copy_((a[:, None] * u[0] + b[:, None] * u[1] + 0.7) / gain)
        embed[1].weight.copy_(gain)
    components, explained = patch_embedding_components(model, k=3)
    assert components.shape == (3, 1, 7, 7)
    torch.testing.assert_close(explained[:2], torch.tensor([0.9, 0.1]), atol=1e-5, rtol=0)
    assert float(explained[2]) == pytest.approx(0.0, abs=1e-6)
    flat = components.reshape(3, 49)
    assert abs(float(flat[0] @ u[0])) == pytest.approx(1.0, abs=1e-5)
    assert abs(float(flat[1] @ u[1])) == pytest.approx(1.0, abs=1e-5)


def test_filter_components_keep_vit_pytorchs_patch_layout():
    torch.manual_seed(0)
    model = build_model("vit", "cifar10", patch_size=4, **SMALL)  # (p1 p2 c): 4x4 patches of RGB
    w = torch.zeros(32, 48)
    w[::2, 3 * (1 * 4 + 2) + 0] = 1.0  # red at row 1, column 2 in half the filters
    with torch.no_grad():
        model.to_patch_embedding[2].weight.copy_(w)
        model.to_patch_embedding[1].weight.fill_(1.0)
    components, _ = patch_embedding_components(model, k=1)
    assert components.shape == (1, 3, 4, 4)
    assert components[0].abs().argmax() == torch.tensor([0, 1, 2]) @ torch.tensor([16, 4, 1])


def test_rollout_flattening_numbers():
    torch.manual_seed(0)
    model = build_model("vit", "mnist", patch_size=7, **SMALL)
    maps = attention_maps(model, torch.randn(3, 1, 28, 28))
    numbers = rollout_flattening(maps)
    assert set(numbers) == {"kept on the diagonal", "one head", "heads averaged", "rollout"}
    assert all(v.shape == (2,) for v in numbers.values())
    assert (numbers["kept on the diagonal"] >= 0.5).all()  # (A_ii + 1) / 2 for softmax rows
    expected = ((maps.mean(2).diagonal(dim1=-2, dim2=-1) + 1) / 2).mean(dim=(0, 2))
    torch.testing.assert_close(numbers["kept on the diagonal"], expected)
    one = maps[:, :1]  # one layer: rollout's spread is the fused layer's, halved by the identity
    torch.testing.assert_close(rollout_flattening(one)["rollout"], rollout_flattening(one)["heads averaged"] / 2)


def test_pictures_return_labelled_figures():
    torch.manual_seed(0)
    model = build_model("vit", "mnist", patch_size=7, **SMALL)
    images = torch.randn(4, 1, 28, 28)
    fig = viz.plot_filter_components(*patch_embedding_components(model, k=6))
    assert isinstance(fig, Figure) and any(ax.get_ylabel().startswith("weight") for ax in fig.axes)
    distance = mean_attention_distance(attention_maps(model, images), 7)
    fig = viz.plot_attention_distance(distance, 7, grid=4)
    assert fig.axes[0].get_ylabel() == "mean attention distance (pixels)"
    ranking = random_ranking(4, 16)
    fig = viz.plot_deletion_curves({"random": deletion_curve(model, images, ranking)},
                                   {"random": insertion_curve(model, images, ranking)}, baseline="0")
    assert [ax.get_xlabel() for ax in fig.axes] == ["share of patches removed", "share of patches inserted"]
    assert viz.figure_png(fig).startswith(b"\x89PNG")
    stages = [name for name, _ in randomization_stages(model)]
    fig = viz.plot_randomization({"rollout": [1.0, 0.9, 0.5, 0.2, 0.1]}, stages)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["none", "head", "+ block 2", "+ block 1",
                                                                     "+ embedding"]
    assert fig.axes[0].get_ylim() == (-1.05, 1.05)


def test_layer_similarity_is_one_for_equal_blocks_and_zero_for_disjoint_ones():
    attend = lambda targets: torch.eye(5)[targets]  # noqa: E731  (row i: all attention on token targets[i])
    same = torch.stack([attend([1, 1, 2, 3, 4])] * 3)  # three equal blocks
    other = attend([0, 0, 0, 0, 0])  # every token looks at CLS: no column shared with `same`'s
    maps = torch.cat([same, other[None]])[None, :, None]  # [1, 4 blocks, 1 head, 5, 5]
    sim = layer_similarity(maps)
    assert sim.shape == (4, 4)
    torch.testing.assert_close(sim[:3, :3], torch.full((3, 3), 4 / 5))  # 4 of 5 columns non-zero, each cos 1
    torch.testing.assert_close(sim[3, :3], torch.zeros(3))
    gen = torch.Generator().manual_seed(0)
    rand = torch.rand(2, 3, 2, 5, 5, generator=gen).softmax(-1)
    brute = torch.zeros(3, 3)
    for p in range(3):
        for q in range(3):
            brute[p, q] = torch.nn.functional.cosine_similarity(
                rand[:, p].transpose(-1, -2), rand[:, q].transpose(-1, -2), dim=-1).mean()
    torch.testing.assert_close(layer_similarity(rand), brute)


def test_sink_share_is_one_over_tokens_when_uniform_and_one_for_a_sink():
    uniform = torch.full((2, 1, 1, 5, 5), 0.2)
    torch.testing.assert_close(sink_share(uniform), torch.full((1, 1), 0.2))
    sink = torch.zeros(2, 1, 1, 5, 5)
    sink[..., 3] = 1.0  # every query sends all its attention to token 3
    torch.testing.assert_close(sink_share(sink), torch.ones(1, 1))
    with pytest.raises(ValueError, match="attention_maps"):
        sink_share(torch.ones(5, 5))
