import pytest
import torch
from vit_pytorch import ViT
from vit_pytorch.deepvit import DeepViT

from coursekit.bench import count_parameters
from torch import nn

from coursekit.models import CNN, KINDS, Hybrid, ResidualBlock, ResNet, build_model, check_vit_config
from coursekit import runs

GRIDS = ("reference", "cpu")  # the four models' grids (runs.GRIDS also holds notebook 03's two models)

# The course's reference table (shared/seeds): parameters of each model the course must not exceed.
REFERENCE_PARAMETERS = {
    ("cnn", "mnist"): 1_199_882, ("cnn", "cifar10"): 1_626_442, ("cnn", "cifar100"): 1_638_052,
    ("vit", "mnist"): 1_614_866, ("vit", "cifar10"): 1_812_106, ("vit", "cifar100"): 1_823_716,
    ("deepvit", "mnist"): 1_615_010, ("deepvit", "cifar10"): 1_812_250,
    ("deepvit", "cifar100"): 1_823_860,
    ("hybrid", "mnist"): 1_591_652, ("hybrid", "cifar10"): 1_727_012,
    ("hybrid", "cifar100"): 1_727_012,
}
SHAPES = {"mnist": (1, 28, 28), "cifar10": (3, 32, 32), "cifar100": (3, 32, 32)}


@pytest.mark.parametrize("dataset, expected", [("mnist", 1_199_882), ("cifar10", 1_626_442),
                                               ("cifar100", 1_638_052)])
def test_cnn_matches_the_reference_parameter_counts(dataset, expected):
    assert count_parameters(build_model("cnn", dataset)) == expected


def test_cnn_defaults_are_mnist():
    assert count_parameters(CNN()) == 1_199_882
    assert CNN()(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_the_four_models_grids_are_in_the_run_table():
    assert set(GRIDS) < set(runs.GRIDS)


@pytest.mark.parametrize("kind, dataset", sorted(REFERENCE_PARAMETERS))
@pytest.mark.parametrize("grid", sorted(GRIDS))
def test_both_grids_are_parameter_matched_and_run(grid, kind, dataset):
    torch.manual_seed(0)
    model = build_model(kind, dataset, grid).eval()
    n = count_parameters(model)
    assert (1_000_000 if grid == "reference" else 500_000) <= n <= REFERENCE_PARAMETERS[kind, dataset]
    classes = 100 if dataset == "cifar100" else 10
    logits = model(torch.randn(3, *SHAPES[dataset]))
    assert logits.shape == (3, classes) and torch.isfinite(logits).all()


# patches per image: (side of the image or of the hybrid's feature map / patch size) ** 2
PATCHES = {
    ("reference", "vit", "mnist"): (28 // 4) ** 2, ("reference", "vit", "cifar10"): (32 // 4) ** 2,
    ("reference", "hybrid", "mnist"): (14 // 2) ** 2, ("reference", "hybrid", "cifar10"): (16 // 2) ** 2,
    ("cpu", "vit", "mnist"): (28 // 7) ** 2, ("cpu", "vit", "cifar10"): (32 // 8) ** 2,
    ("cpu", "hybrid", "mnist"): (7 // 1) ** 2, ("cpu", "hybrid", "cifar10"): (8 // 1) ** 2,
}


@pytest.mark.parametrize("kind, cls", [("vit", ViT), ("deepvit", DeepViT), ("hybrid", Hybrid)])
@pytest.mark.parametrize("grid", sorted(GRIDS))
@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
def test_transformers_use_the_side_length_and_at_least_16_patches(kind, cls, grid, dataset):
    model = build_model(kind, dataset, grid)
    assert isinstance(model, cls)
    vit = model.vit if kind == "hybrid" else model
    patches = PATCHES[grid, "hybrid" if kind == "hybrid" else "vit", dataset]
    # image_size is the side length: one position embedding per patch plus the class token
    assert vit.pos_embedding.shape[-2] == patches + 1 >= 17


@pytest.mark.parametrize("stem, channels, side", [(((32, 32),), 32, 16), (((32,), (64,)), 64, 8),
                                                  (((8, 8), (16,), (24,)), 24, 4)])
def test_the_hybrid_stem_halves_the_side_per_stage(stem, channels, side):
    model = Hybrid(3, 10, 32, stem=stem, patch_size=1, dim=32, depth=1, heads=2, mlp_dim=32)
    assert model.stem(torch.randn(2, 3, 32, 32)).shape == (2, channels, side, side)
    assert sum(isinstance(m, nn.Conv2d) for m in model.stem) == sum(map(len, stem))


def test_overrides_change_the_model():
    small = build_model("vit", "mnist", dim=64, depth=2, heads=4, mlp_dim=128, patch_size=7)
    assert small.pos_embedding.shape == (17, 64)
    assert count_parameters(small) < count_parameters(build_model("vit", "mnist"))


def test_impossible_settings_raise_with_a_fix():
    with pytest.raises(ValueError, match=r"patch_size=5 does not divide image_size=28; try one of \[2, 4, 7, 14\]"):
        build_model("vit", "mnist", patch_size=5)
    with pytest.raises(ValueError, match=r"try heads in \[1, 2, 4, 5, 8, 10, 16\]"):  # no loop up to dim
        check_vit_config(28, 7, 10**12, 3)
    with pytest.raises(ValueError, match=r"heads=3 must divide dim=128.*try heads in"):
        build_model("deepvit", "cifar10", heads=3)
    with pytest.raises(ValueError, match="16x16 feature map: patch_size=3 does not divide"):
        build_model("hybrid", "cifar10", patch_size=3)
    with pytest.raises(ValueError, match="7x7 feature map: patch_size=2 does not divide"):
        build_model("hybrid", "mnist", "cpu", patch_size=2)
    with pytest.raises(ValueError, match="need a side that halves evenly, and 7 does not"):
        build_model("hybrid", "mnist", stem=((8,), (8,), (8,)))
    with pytest.raises(ValueError, match="unknown grid 'gpu'; known grids: reference, cpu"):
        build_model("vit", "mnist", "gpu")
    with pytest.raises(ValueError, match="must be even"):
        CNN(image_size=27)
    with pytest.raises(ValueError, match="no settings to override"):
        build_model("cnn", "mnist", depth=3)


def test_unknown_kind_and_dataset_list_the_known_ones():
    with pytest.raises(ValueError, match="known kinds: " + ", ".join(KINDS)):
        build_model("resnet50", "mnist")
    with pytest.raises(ValueError, match="known datasets"):
        build_model("vit", "imagenet")


@pytest.mark.parametrize("dataset", ["mnist", "cifar10", "cifar100"])
@pytest.mark.parametrize("grid", sorted(GRIDS))
def test_the_resnet_has_at_most_the_hybrids_parameters_and_maps_images_to_logits(grid, dataset):
    torch.manual_seed(0)
    model = build_model("resnet", dataset, grid)
    assert isinstance(model, ResNet)
    n = count_parameters(model)
    assert 300_000 <= n <= count_parameters(build_model("hybrid", dataset, grid))
    logits = model.eval()(torch.randn(3, *SHAPES[dataset]))
    assert logits.shape == (3, 100 if dataset == "cifar100" else 10) and torch.isfinite(logits).all()


@pytest.mark.parametrize("shape, side", [((1, 28, 28), 3), ((3, 32, 32), 4)])
def test_the_resnet_halves_the_side_per_stage(shape, side):
    assert count_parameters(ResNet(3, 10, 32)) == 486_938 and count_parameters(ResNet(1, 10, 28)) == 486_650
    model = ResNet(shape[0], 10, shape[1], widths=(8, 16, 24, 32), blocks=(1, 0, 2))
    x = torch.randn(2, *shape)
    for layer in model.features[:-2]:  # up to the global pooling
        x = layer(x)
    assert x.shape == (2, 32, side, side)  # 28 -> 14 -> 7 -> 3, 32 -> 16 -> 8 -> 4
    assert sum(isinstance(m, ResidualBlock) for m in model.features) == 3


def test_a_residual_block_adds_its_input():
    torch.manual_seed(0)
    block = ResidualBlock(8).eval()
    x = torch.randn(2, 8, 5, 5)
    last_bn = block.body[1][1]
    by_hand = x + torch.relu(last_bn(block.body[1][0](block.body[0](x))))
    torch.testing.assert_close(block(x), by_hand)
    with torch.no_grad():  # a silent body leaves the identity path: the block passes x through
        last_bn.weight.zero_()
        last_bn.bias.zero_()
    torch.testing.assert_close(block(x), x)


def test_impossible_resnet_settings_raise_with_a_fix():
    with pytest.raises(ValueError, match=r"give 4 widths and 3 block counts, e.g. widths=\(16, 32, 64, 128\)"):
        build_model("resnet", "cifar10", widths=(16, 32, 64))
    with pytest.raises(ValueError, match="need images of at least 8x8"):
        ResNet(3, 10, 6)
