"""The models the course compares: two CNNs (the MNIST example and a small ResNet), a ViT, a DeepViT
and a hybrid CNN + ViT.

ViT and DeepViT come from the ``vit-pytorch`` library. ``build_model(kind, dataset, grid)`` builds
one with the sizes of a grid of :mod:`coursekit.runs` (``"reference"``: the reference table's
scale, for a GPU; ``"cpu"``: sized for a laptop CPU), each with at most as many parameters as the
reference table's model of the same kind and dataset (1.2M to 1.9M) and at least 16 patches;
the ResNet has at most the parameters of the hybrid of its grid and dataset.
"""

from __future__ import annotations

import torch
from torch import nn
from vit_pytorch import ViT
from vit_pytorch.deepvit import DeepViT

from .config import seed_everything
from .runs import Run, settings
from .sources import dataset_info


class CNN(nn.Module):
    """The classic PyTorch MNIST example network: two 3x3 convolutions, max-pooling, two linear layers.

    x: [B, in_channels, image_size, image_size] -> logits [B, num_classes].
    1,199,882 parameters for MNIST, 1,626,442 for CIFAR-10, 1,638,052 for CIFAR-100.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28):
        super().__init__()
        if image_size < 6 or image_size % 2:
            raise ValueError(f"image_size={image_size} must be even and at least 6 "
                             "(two 3x3 convolutions and a 2x2 max-pool), e.g. 28 or 32")
        side = (image_size - 4) // 2  # two unpadded 3x3 convolutions, then a 2x2 max-pool
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3), nn.ReLU(),
            nn.Conv2d(32, 64, 3), nn.ReLU(),
            nn.MaxPool2d(2), nn.Dropout(0.25), nn.Flatten(),
        )
        self.classifier = nn.Sequential(
            nn.Linear(64 * side * side, 128), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(128, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def conv_bn(in_channels: int, out_channels: int) -> nn.Sequential:
    """A 3x3 convolution (padded, no bias), batch norm, ReLU: [B, in, H, W] -> [B, out, H, W]."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class ResidualBlock(nn.Module):
    """``x + f(x)``, ``f`` two :func:`conv_bn` layers: x [B, C, H, W] -> [B, C, H, W].

    The identity path lets the gradient skip ``f``, so the network trains fast from the first epoch.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(conv_bn(channels, channels), conv_bn(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResNet(nn.Module):
    """A small residual network with batch norm: the CNN a practitioner picks for CIFAR-sized images.

    The layout of the "ResNet-9" that trained CIFAR-10 fastest in the DAWNBench competition (Page,
    2018), a quarter of its width by default and with a residual block in its second stage too: a
    :func:`conv_bn` layer of ``widths[0]`` channels, then three stages, stage ``i`` a
    :func:`conv_bn` to ``widths[i]`` channels, a 2x2 max-pool and ``blocks[i - 1]``
    :class:`ResidualBlock`s; then global average pooling and one linear layer.
    x: [B, C, 32, 32] -> [B, w0, 32, 32] -> [B, w1, 16, 16] -> [B, w2, 8, 8] -> [B, w3, 4, 4]
    -> pooled [B, w3] -> logits [B, num_classes] (28x28 MNIST: 14, 7, then 3x3).
    The defaults are the CPU grid's: 486,938 parameters for CIFAR-10, 486,650 for MNIST.
    """

    def __init__(self, in_channels: int, num_classes: int, image_size: int,
                 widths=(16, 32, 64, 128), blocks=(1, 1, 1)):
        super().__init__()
        if len(widths) != 4 or len(blocks) != 3:
            raise ValueError(f"widths={widths} and blocks={blocks}: the ResNet has a first layer and "
                             "three stages, so give 4 widths and 3 block counts, e.g. "
                             "widths=(16, 32, 64, 128), blocks=(1, 1, 1)")
        if image_size < 8:
            raise ValueError(f"image_size={image_size}: the three stages' 2x2 max-pools need images "
                             "of at least 8x8, e.g. 28 or 32")
        layers = [conv_bn(in_channels, widths[0])]
        for cin, cout, n in zip(widths, widths[1:], blocks):
            layers += [conv_bn(cin, cout), nn.MaxPool2d(2), *(ResidualBlock(cout) for _ in range(n))]
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())  # -> [B, w3]
        self.classifier = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class Hybrid(nn.Module):
    """A small convolutional stem whose feature map a ViT reads as its image.

    ``stem`` lists stages; each stage is 3x3 convolutions (with batch norm and ReLU) of the given
    widths, then a 2x2 max-pool. The default ``((32, 32),)`` is one stage of two convolutions:
    x: [B, C, H, W] -> feature map [B, 32, H/2, W/2]; ``((32,), (64,))`` gives [B, 64, H/4, W/4].
    The ViT (``self.vit``) cuts that map into patches. Returns logits [B, num_classes].
    """

    def __init__(self, in_channels: int, num_classes: int, image_size: int, stem=((32, 32),),
                 patch_size: int = 2, dim: int = 128, depth: int = 8, heads: int = 4,
                 mlp_dim: int = 384, dropout: float = 0.1, emb_dropout: float = 0.1, **vit_kwargs):
        super().__init__()
        side, layers, channels = image_size, [], in_channels
        for widths in stem:
            if side % 2:
                raise ValueError(f"image_size={image_size}: the stem's {len(stem)} 2x2 max-pools "
                                 f"need a side that halves evenly, and {side} does not; use fewer stages")
            for width in widths:
                layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False),
                           nn.BatchNorm2d(width), nn.ReLU()]
                channels = width
            layers.append(nn.MaxPool2d(2))
            side //= 2
        self.stem = nn.Sequential(*layers)  # [B, C, H, W] -> [B, channels, side, side]
        try:
            self.vit = make_vit(ViT, image_size=side, patch_size=patch_size,
                                num_classes=num_classes, dim=dim, depth=depth, heads=heads,
                                mlp_dim=mlp_dim, channels=channels, dropout=dropout,
                                emb_dropout=emb_dropout, **vit_kwargs)
        except ValueError as error:
            raise ValueError(f"the hybrid's stem turns {image_size}x{image_size} images into a "
                             f"{side}x{side} feature map: {error}") from None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vit(self.stem(x))


def check_vit_config(image_size: int, patch_size: int, dim: int, heads: int) -> int:
    """Raise ``ValueError`` with a fix for an impossible ViT setting; return the number of patches."""
    if image_size <= 0 or patch_size <= 0:
        raise ValueError(f"image_size={image_size} and patch_size={patch_size} must be positive")
    if image_size % patch_size:
        divisors = [p for p in range(2, min(image_size, 1024)) if image_size % p == 0]
        raise ValueError(f"patch_size={patch_size} does not divide image_size={image_size}; "
                         f"try one of {divisors or [1]}")
    if dim <= 0 or heads <= 0 or dim % heads:
        good = [h for h in range(1, 17) if dim % h == 0]  # bounded: dim may be anything a learner typed
        raise ValueError(f"heads={heads} must divide dim={dim} (each head gets dim // heads "
                         f"features); try heads in {good}")
    return (image_size // patch_size) ** 2


def make_vit(cls, *, image_size: int, patch_size: int, dim: int, heads: int, **kwargs):
    """Build a vit-pytorch ``ViT`` or ``DeepViT`` after checking its settings with clear errors.

    ``image_size`` is the side length in pixels (28 for MNIST), not the pixel count. Each head
    works on ``dim // heads`` features unless ``dim_head`` is given.
    """
    check_vit_config(image_size, patch_size, dim, heads)
    kwargs.setdefault("dim_head", dim // heads)
    return cls(image_size=image_size, patch_size=patch_size, dim=dim, heads=heads, **kwargs)


KINDS = ("cnn", "vit", "deepvit", "hybrid", "resnet")  # the ResNet last: earlier figures keep their colours


def build_model(kind: str, dataset: str = "mnist", grid: str = "reference", **overrides) -> nn.Module:
    """The course's model ``kind`` ("cnn", "vit", "deepvit", "hybrid", "resnet") sized for ``dataset``.

    ``grid``: a grid of :mod:`coursekit.runs` ("reference": the reference table's scale, "cpu":
    sized for a laptop CPU), whose ``sizes`` it takes. The CNN is the same in all. ``overrides``
    replace sizes, e.g.
    ``build_model("vit", "mnist", depth=4, patch_size=7)``.
    The model maps images [B, C, H, W] to logits [B, num_classes].
    """
    if kind not in KINDS:
        raise ValueError(f"unknown model kind {kind!r}; known kinds: {', '.join(KINDS)}")
    info = dataset_info(dataset)
    sizes = {**settings(grid, dataset, kind, fast=False).sizes, **overrides}
    shape = dict(num_classes=info.num_classes, image_size=info.image_size)
    if kind == "cnn":
        if overrides:
            raise ValueError(f"the CNN has no settings to override (got {sorted(overrides)}); "
                             "it is the fixed PyTorch MNIST example network")
        return CNN(in_channels=info.channels, **shape)
    if kind == "resnet":
        return ResNet(in_channels=info.channels, **shape, **sizes)
    if kind == "hybrid":
        return Hybrid(in_channels=info.channels, **shape, **sizes)
    cls = ViT if kind == "vit" else DeepViT
    return make_vit(cls, channels=info.channels, **shape, **sizes)


def build_run(run: Run) -> nn.Module:
    """The untrained model of ``run`` (:func:`coursekit.runs.settings`), its initial weights drawn
    after seeding with ``run.seed``: the same model on every call."""
    seed_everything(run.seed)
    return build_model(run.model, run.dataset, run.grid, **run.sizes)
