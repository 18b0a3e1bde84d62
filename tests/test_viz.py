"""Tests for coursekit.viz and coursekit.explorer: attention maps against a hand-written forward pass,
rollout options and gradient rollout against hand computations, one colour scale, the explorer on
ipywidgets 7.7.1 (COURSEKIT_IPYWIDGETS7, installed by .ci/run) and 8."""

import os

import pytest
import torch
from conftest import small
from matplotlib.figure import Figure
from torch.nn.modules import module as torch_module

from coursekit import viz
from coursekit.explorer import AttentionExplorer
from coursekit.maps import attention_maps, attention_rollout, cls_map, gradient_rollout, position_similarity, token_map


@pytest.fixture
def images():
    return torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))


def no_hooks(model):
    hook_dicts = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    local = all(not getattr(m, d) for m in model.modules() for d in hook_dicts)
    return local and not torch_module._global_forward_hooks and not torch_module._global_forward_pre_hooks


def first_layer_by_hand(net, x):
    """Layer 1's attention weights written out from the vit-pytorch weights: [B, heads, T, T]."""
    tokens = net.to_patch_embedding(x)
    cls = net.cls_token.reshape(1, 1, -1).expand(len(x), 1, -1)
    tokens = torch.cat([cls, tokens], dim=1) + net.pos_embedding.reshape(1, -1, tokens.shape[-1])
    attn = net.transformer.layers[0][0]
    q, k, v = attn.to_qkv(attn.norm(tokens)).chunk(3, dim=-1)
    q, k = (t.unflatten(-1, (attn.heads, -1)).transpose(1, 2) for t in (q, k))
    weights = torch.softmax(q @ k.transpose(-1, -2) * attn.scale, dim=-1)  # [B, h, T, T]
    if hasattr(attn, "reattn_weights"):  # DeepViT: mix the heads, then norm over heads
        weights = torch.einsum("bhij,hg->bgij", weights, attn.reattn_weights)
        weights = attn.reattn_norm(weights)
    return weights


@pytest.mark.parametrize("kind", ["vit", "deepvit", "hybrid"])
def test_shapes_and_first_layer_match_a_hand_written_forward(kind, images):
    model = small(kind).eval()
    maps = attention_maps(model, images)
    assert maps.shape == (3, 2, 4, 50, 50)  # 49 patches + CLS (hybrid: 14x14 map, 2x2 patches)
    with torch.no_grad():
        x = model.stem(images) if kind == "hybrid" else images
        expected = first_layer_by_hand(model.vit if kind == "hybrid" else model, x)
    torch.testing.assert_close(maps[:, 0], expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", ["vit", "hybrid"])
def test_rows_are_softmax_weights(kind, images):
    maps = attention_maps(small(kind), images)
    assert (maps >= 0).all()
    torch.testing.assert_close(maps.sum(-1), torch.ones(maps.shape[:-1]))


def test_deepvit_records_reattention_not_softmax(images):
    maps = attention_maps(small("deepvit"), images)
    # re-attention is normalized across heads, so its rows are not softmax rows
    assert not torch.allclose(maps.sum(-1), torch.ones(maps.shape[:-1]))


def test_different_images_give_different_maps(images):
    maps = attention_maps(small("vit"), images)
    assert not torch.allclose(maps[0], maps[1])


@pytest.mark.parametrize("kind", ["vit", "deepvit", "hybrid"])
def test_model_unchanged_and_no_hooks_left(kind, images):
    model = small(kind).train()
    (model.stem if kind == "hybrid" else model.transformer.layers[0][0]).eval()  # mixed flags
    flags = {name: m.training for name, m in model.named_modules()}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    attention_maps(model, images)
    assert no_hooks(model)
    assert flags == {name: m.training for name, m in model.named_modules()}
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_hooks_removed_when_the_forward_pass_fails():
    model = small("vit").train()
    with pytest.raises(Exception):
        attention_maps(model, torch.randn(2, 3, 28, 28))  # 3 channels: the model wants 1
    assert no_hooks(model) and model.training


def test_bad_input_gives_clear_errors():
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        attention_maps(small("vit"), torch.randn(1, 28, 28))
    with pytest.raises(ValueError, match="no vit-pytorch attention"):
        attention_maps(small("cnn"), torch.randn(1, 1, 28, 28))
    with pytest.raises(ValueError, match="layers, heads"):
        attention_rollout(torch.rand(2, 3, 5, 5))


def test_rollout_rows_sum_to_one(images):
    rollout = attention_rollout(attention_maps(small("vit"), images))
    assert rollout.shape == (3, 50, 50)
    torch.testing.assert_close(rollout.sum(-1), torch.ones(3, 50))


def test_rollout_matches_a_hand_computed_case():
    # 1 image, 2 layers, 2 heads, 2 tokens. Layer 1's heads average to [[1, 0], [.5, .5]];
    # + I and renormalized: [[1, 0], [.25, .75]]. Layer 2: [[0, 1], [1, 0]] -> [[.5, .5], [.5, .5]].
    layer1 = torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]]])
    layer2 = torch.tensor([[[0.0, 1.0], [1.0, 0.0]], [[0.0, 1.0], [1.0, 0.0]]])
    maps = torch.stack([layer1, layer2])[None]  # [1, 2, 2, 2, 2]
    expected = torch.tensor([[0.5, 0.5], [0.5, 0.5]]) @ torch.tensor([[1.0, 0.0], [0.25, 0.75]])
    torch.testing.assert_close(attention_rollout(maps)[0], expected)
    torch.testing.assert_close(expected, torch.tensor([[0.625, 0.375], [0.625, 0.375]]))


def test_cls_map_and_position_similarity():
    model = small("vit", patch_size=7)
    sim = position_similarity(model)
    assert sim.shape == (16, 16)
    torch.testing.assert_close(sim.diagonal(), torch.ones(16))
    assert cls_map(torch.rand(2, 17, 17)).shape == (2, 4, 4)
    with pytest.raises(ValueError, match="square grid"):
        cls_map(torch.rand(18, 18))


def test_rollout_options_match_hand_computed_cases():
    # 1 image, 1 layer, 2 heads, 2 tokens
    h1 = torch.tensor([[0.8, 0.2], [0.4, 0.6]])
    h2 = torch.tensor([[0.2, 0.8], [0.0, 1.0]])
    maps = torch.stack([h1, h2])[None, None]  # [1, 1, 2, 2, 2]
    def by_hand(fused):
        a = fused + torch.eye(2)
        return a / a.sum(-1, keepdim=True)
    # mean [[.5, .5], [.2, .8]] -> +I [[1.5, .5], [.2, 1.8]] -> rows / 2
    torch.testing.assert_close(attention_rollout(maps), torch.tensor([[[0.75, 0.25], [0.1, 0.9]]]))
    # max [[.8, .8], [.4, 1.]] -> [[1.8, .8], [.4, 2.]]; min [[.2, .2], [0., .6]] -> [[1.2, .2], [0., 1.6]]
    torch.testing.assert_close(attention_rollout(maps, "max")[0], by_hand(torch.tensor([[0.8, 0.8], [0.4, 1.0]])))
    torch.testing.assert_close(attention_rollout(maps, "min")[0], torch.tensor([[1.2 / 1.4, 0.2 / 1.4], [0.0, 1.0]]))
    # discard 0.5 of 4 entries = 2: of mean [[.5, .5], [.2, .8]] the smallest two, never [0, 0]:
    # .2 at [1, 0] and one .5 at [0, 1] -> [[.5, 0], [0, .8]] -> +I -> identity after renormalizing
    torch.testing.assert_close(attention_rollout(maps, discard_ratio=0.5)[0], torch.eye(2))
    # discard 0.25 = 1 entry: only .2 -> [[.5, .5], [0, .8]] -> [[1.5, .5], [0, 1.8]] / rows
    torch.testing.assert_close(attention_rollout(maps, discard_ratio=0.25)[0],
                               torch.tensor([[0.75, 0.25], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="head_fusion"):
        attention_rollout(maps, "median")
    with pytest.raises(ValueError, match="discard_ratio"):
        attention_rollout(maps, discard_ratio=1.0)


def hand_gradient_rollout(net, x, target):
    """Chefer et al.'s rule on a forward pass written out by hand (no hooks): [B, T, T]."""
    tokens = net.to_patch_embedding(x)
    cls = net.cls_token.reshape(1, 1, -1).expand(len(x), 1, -1)
    z = torch.cat([cls, tokens], dim=1) + net.pos_embedding.reshape(1, -1, tokens.shape[-1])
    attentions = []
    for attn, ff in net.transformer.layers:
        q, k, v = attn.to_qkv(attn.norm(z)).chunk(3, dim=-1)
        q, k, v = (t.unflatten(-1, (attn.heads, -1)).transpose(1, 2) for t in (q, k, v))
        a = torch.softmax(q @ k.transpose(-1, -2) * attn.scale, dim=-1)  # [B, h, T, T]
        attentions.append(a)
        z = attn.to_out((a @ v).transpose(1, 2).flatten(2)) + z
        z = ff(z) + z
    logits = net.mlp_head(net.transformer.norm(z)[:, 0])
    grads = torch.autograd.grad(logits[torch.arange(len(x)), target].sum(), attentions)
    R = torch.eye(z.shape[1]).repeat(len(x), 1, 1)
    for a, g in zip(attentions, grads):
        cam = (g * a).clamp(min=0).mean(1)
        R = R + torch.bmm(cam, R)
    return R


def test_gradient_rollout_matches_a_hand_computation(images):
    model = small("vit", patch_size=7).eval()
    target = torch.tensor([3, 0, 9])
    expected = hand_gradient_rollout(model, images, target)[:, 0, 1:].reshape(3, 4, 4)
    got = gradient_rollout(model, images, target)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
    assert (got >= 0).all() and got.sum() > 0
    assert not torch.allclose(got, gradient_rollout(model, images, 5)), "the target must matter"
    assert all(p.grad is None for p in model.parameters()) and no_hooks(model)


def shared_scale(fig):
    """(vmin, vmax) of every overlay image in fig's panels, and how many colourbars it has."""
    scales = {im.get_clim() for ax in fig.axes for im in ax.images if im.get_cmap().name == "inferno"}
    bars = sum(1 for ax in fig.axes if ax.get_label() == "<colorbar>")
    return scales, bars


def test_attention_pictures_use_one_colour_scale_with_a_colourbar(images):
    model = small("vit", patch_size=7)
    maps = attention_maps(model, images)
    for fig, top in [(viz.plot_attention_grid(maps[0], images[0], "x"), cls_map(maps[0]).max()),
                     (viz.plot_attention_grid(maps[0], images[0], query=5, layers=[1]),
                      token_map(maps[0, [1]], 5).max()),
                     (viz.plot_cls_attention(attention_rollout(maps), images),
                      cls_map(attention_rollout(maps)).max())]:
        scales, bars = shared_scale(fig)
        assert scales == {(0.0, float(top))}, scales
        assert bars == 1
    grid = viz.plot_attention_grid(maps[0], images[0])
    own = [ax.get_xlabel() for ax in grid.axes if ax.get_title()]
    assert own[0] == f"to itself {float(maps[0, 0, 0, 0, 0]):.2f}"


def test_rollout_pictures_are_blocks_that_state_their_range_against_uniform(images):
    maps = attention_maps(small("vit", patch_size=7), images)
    rollout = attention_rollout(maps)  # [3, 17, 17]
    fig = viz.plot_cls_attention(rollout, images)
    panels = [ax for ax in fig.axes if ax.get_xlabel()]
    grid = cls_map(rollout)[0]
    assert panels[0].get_xlabel().startswith(f"{float(grid.min()):.3f} to {float(grid.max()):.3f} (uniform 0.059)")
    shown = next(im for im in panels[0].images if im.get_cmap().name == "inferno").get_array()
    assert len(set(shown.ravel().tolist())) <= 16  # one flat block per patch: nothing finer is invented
    bar = next(ax for ax in fig.axes if ax.get_label() == "<colorbar>")
    assert [tuple(line.get_ydata()) for line in bar.lines] == [(1 / 17, 1 / 17)]


def test_plots_return_figures(images):
    model = small("vit", patch_size=7)  # 16 patches keep the position-similarity grid quick
    maps = attention_maps(model, images)
    grid = viz.plot_attention_grid(maps[0], images[0])
    titles = [ax.get_title() for ax in grid.axes]
    assert "Layer 1, Head 2" in titles and "Layer 2, Head 4" in titles
    titles = viz.prediction_titles(model, images, [7, 2, 1])
    assert titles[0].startswith("#0: label 7, predicted ") and titles[0].endswith("%)")
    classes = [f"class {k}" for k in range(10)]
    named = viz.prediction_titles(model, images, [7, 2, 1], classes=classes)
    predicted = int(titles[1].split("predicted ")[1].split(" ")[0])
    assert named[1].startswith(f"#1: label class 2, predicted class {predicted} (")
    rel = gradient_rollout(model, images, 1)
    for fig in (grid, viz.plot_cls_attention(attention_rollout(maps), images, list("abc")),
                viz.plot_relevance(rel, images, list("abc")), viz.plot_position_similarity(model)):
        assert isinstance(fig, Figure)
        assert viz.figure_png(fig)[:4] == b"\x89PNG"


@pytest.mark.parametrize("g, size", [(4, 28), (7, 28), (8, 32), (2, 32), (3, 28)])
def test_patch_numbering_is_the_same_in_every_picture(g, size):
    """CLS is token 0; patches are 1..g*g row by row. The pixels the pictures colour with token t
    (``patch_tokens``, which the explorer's JavaScript also reads) are exactly those inside its
    outlined square (``patch_square``), and token_map puts token t's weight at row (t-1)//g."""
    tokens = viz.patch_tokens(g, size)
    assert tokens[0, 0] == 1 and tokens[-1, -1] == g * g and tokens[0, -1] == g
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    for t in range(1, g * g + 1):
        x, y, side = viz.patch_square(t, g, size)
        inside = (cols >= x) & (cols < x + side) & (rows >= y) & (rows < y + side)
        assert torch.equal(tokens == t, inside), t
    weights = torch.zeros(g * g + 1, g * g + 1)
    weights[0, 1 + g + 1] = 1.0  # CLS -> the second patch of the second row
    assert token_map(weights, 0)[1, 1] == 1.0
    with pytest.raises(ValueError, match="0 is CLS"):
        viz.patch_square(0, g, size)


def test_explorer_redraws_from_maps_computed_once_without_a_browser(images, monkeypatch):
    explorer = AttentionExplorer(small("vit"), images, labels=torch.tensor([7, 2, 1]))
    assert explorer.head.description == "head" and explorer.head.max == 4 and explorer.layer.max == 2
    assert explorer.query.max == 49
    import coursekit.explorer as module
    pictures = [explorer.picture.value]
    with monkeypatch.context() as patch:  # a move only redraws: no attention is computed again
        for name in ("attention_maps", "attention_rollout"):
            patch.setattr(module, name, lambda *a, _n=name, **k: pytest.fail(f"{_n} called on a move"))
        for control, value in [(explorer.head, 2), (explorer.head, 3), (explorer.layer, 2),
                               (explorer.query, 9), (explorer.image, 1), (explorer.image, 2)]:
            control.value = value  # observers run synchronously, as when a slider moves
            pictures.append(explorer.picture.value)
    assert all(a != b for a, b in zip(pictures, pictures[1:])), "every move must change the picture"
    assert "image 2: label 1, predicted" in explorer.caption.value
    assert "patch 9 to itself" in explorer.current()[1]
    explorer.mean.value = True
    assert explorer.head.disabled and "mean over heads" in explorer.current()[1]
    explorer.rollout.value = True
    assert "rollout of layers 1-2" in explorer.current()[1]
    assert len(explorer.show_static().axes) == 8 + 1  # 2 x 4 panels and one colourbar
    html = explorer.html()
    assert html.count('type="range"') == 4 and "<canvas" in html and len(html) < 1_000_000
    named = AttentionExplorer(small("vit"), images[:1], labels=[7], classes=[f"digit {d}" for d in range(10)])
    assert named.title(0).startswith("image 0: label digit 7, predicted digit ")


KERNEL_CODE = """
import sys, torch
from coursekit.explorer import AttentionExplorer
from coursekit.models import build_model
import ipywidgets
print("ipywidgets", ipywidgets.__version__)
torch.manual_seed(0)
model = build_model("vit", "mnist", dim=32, depth=1, heads=2, dim_head=8, mlp_dim=32, patch_size=7)
AttentionExplorer(model, torch.randn(2, 1, 28, 28))
"""


def run_in_kernel(code, extra_path=None):
    """Outputs of ``code`` run in a fresh Python kernel (with ``extra_path`` first on sys.path)."""
    import nbformat
    from nbclient import NotebookClient

    prefix = f"import sys; sys.path.insert(0, {str(extra_path)!r})\n" if extra_path else ""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(prefix + code)])
    NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    return nb.cells[0].outputs


def widgets7_folder():
    """Where .ci/run installs ipywidgets 7.7.1 (Colab's version) beside the course's ipywidgets 8."""
    from pathlib import Path

    return Path(os.environ.get("COURSEKIT_IPYWIDGETS7",
                               Path.home() / ".cache" / "coursekit" / "ipywidgets7"))


@pytest.mark.parametrize("version", ["7", "8"])
def test_explorer_displays_a_widget_view_in_a_real_kernel(version):
    folder = None
    if version == "7":
        folder = widgets7_folder()
        if not (folder / "ipywidgets").is_dir():
            if os.environ.get("COURSEKIT_IPYWIDGETS7"):  # CI (.ci/run) promised it: a failure
                pytest.fail(f"COURSEKIT_IPYWIDGETS7={folder} holds no ipywidgets package")
            pytest.skip(f"ipywidgets 7.7.1 not found in {folder}: .ci/run installs it there "
                        "(pip install --target FOLDER ipywidgets==7.7.1 ipython_genutils --no-deps)")
    outputs = run_in_kernel(KERNEL_CODE, folder)
    assert not [o for o in outputs if o.output_type == "error"], outputs
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert f"ipywidgets {version}." in text
    data = [o.data for o in outputs if o.output_type == "display_data"]
    views = [d for d in data if "application/vnd.jupyter.widget-view+json" in d]
    assert len(views) == 1 and views[0]["application/vnd.jupyter.widget-view+json"]["model_id"]
    assert any("ck-explorer" in d.get("text/html", "") for d in data), "the kernel-free view is missing"


def test_neighbour_similarity_tells_a_grid_from_no_grid():
    from coursekit.maps import neighbour_similarity

    g = 6
    rows, cols = torch.arange(g).repeat_interleave(g).float(), torch.arange(g).repeat(g).float()
    angles = torch.stack([rows, cols], 1) * 0.5  # embeddings that vary smoothly with the place: [36, 2]
    grid = torch.cat([angles.sin(), angles.cos()], 1)
    grid = torch.nn.functional.normalize(grid - grid.mean(0), dim=1)
    near, far = neighbour_similarity(grid @ grid.T)
    assert near > far + 0.3
    noise = torch.nn.functional.normalize(torch.randn(g * g, 64, generator=torch.Generator().manual_seed(0)), dim=1)
    near, far = neighbour_similarity(noise @ noise.T)
    assert abs(near - far) < 0.05
    shuffled = grid[torch.randperm(g * g, generator=torch.Generator().manual_seed(0))]  # places mixed up
    near, far = neighbour_similarity(shuffled @ shuffled.T)
    assert abs(near - far) < 0.15
    with pytest.raises(ValueError, match="square grid"):
        neighbour_similarity(torch.eye(5))
