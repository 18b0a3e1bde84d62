"""The four models the course compares: a CNN, a ViT, a DeepViT and a hybrid CNN + ViT.

ViT and DeepViT come from the ``vit-pytorch`` library. ``build_model(kind, dataset)`` gives the
course's defaults, chosen to have at most as many parameters as the reference table's models
(1.2M to 1.9M) and at least 16 patches.
"""

from __future__ import annotations

import torch
from torch import nn
from vit_pytorch import ViT
from vit_pytorch.deepvit import DeepViT

from .data import dataset_info


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


class Hybrid(nn.Module):
    """A small convolutional stem whose feature map a ViT reads as its image.

    The stem (two 3x3 convolutions with batch norm, then a 2x2 max-pool) turns
    x: [B, C, H, W] into a feature map [B, stem_channels, H/2, W/2]; the ViT (``self.vit``)
    cuts that map into patches. Returns logits [B, num_classes].
    """

    def __init__(self, in_channels: int, num_classes: int, image_size: int, stem_channels: int = 32,
                 patch_size: int = 2, dim: int = 128, depth: int = 8, heads: int = 4,
                 mlp_dim: int = 384, dropout: float = 0.1, emb_dropout: float = 0.1, **vit_kwargs):
        super().__init__()
        if image_size % 2:
            raise ValueError(f"image_size={image_size} must be even: the stem halves it")
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, stem_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(stem_channels), nn.ReLU(),
            nn.Conv2d(stem_channels, stem_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(stem_channels), nn.ReLU(),
            nn.MaxPool2d(2),
        )
        try:
            self.vit = make_vit(ViT, image_size=image_size // 2, patch_size=patch_size,
                                num_classes=num_classes, dim=dim, depth=depth, heads=heads,
                                mlp_dim=mlp_dim, channels=stem_channels, dropout=dropout,
                                emb_dropout=emb_dropout, **vit_kwargs)
        except ValueError as error:
            raise ValueError(f"the hybrid's stem halves {image_size}x{image_size} images to a "
                             f"{image_size // 2}x{image_size // 2} feature map: {error}") from None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vit(self.stem(x))


def check_vit_config(image_size: int, patch_size: int, dim: int, heads: int) -> int:
    """Raise ``ValueError`` with a fix for an impossible ViT setting; return the number of patches."""
    if image_size <= 0 or patch_size <= 0:
        raise ValueError(f"image_size={image_size} and patch_size={patch_size} must be positive")
    if image_size % patch_size:
        divisors = [p for p in range(2, image_size) if image_size % p == 0]
        raise ValueError(f"patch_size={patch_size} does not divide image_size={image_size}; "
                         f"try one of {divisors or [1]}")
    if dim <= 0 or heads <= 0 or dim % heads:
        good = [h for h in range(1, max(dim, 1) + 1) if dim % h == 0 and h <= 16]
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


# The course's defaults. Every model has at most the parameters of the reference table's model of
# the same kind and dataset (tests/test_models.py checks it) and at least 16 patches.
TRANSFORMER = dict(dim=128, depth=8, heads=4, mlp_dim=384, dropout=0.1, emb_dropout=0.1)
DEFAULTS = {
    "vit": TRANSFORMER,
    "deepvit": TRANSFORMER,
    # 28 -> 14x14 feature map -> 49 patches of 2x2; 32 -> 16x16 -> 64 patches
    "hybrid": dict(TRANSFORMER, stem_channels=32, patch_size=2),
}
# patch size per image side: 28 -> 7x7 = 49 patches of 4x4; 32 -> 8x8 = 64 patches of 4x4
PATCH_SIZE = {28: 4, 32: 4}
KINDS = ("cnn", "vit", "deepvit", "hybrid")


def build_model(kind: str, dataset: str = "mnist", **overrides) -> nn.Module:
    """The course's model ``kind`` ("cnn", "vit", "deepvit", "hybrid") sized for ``dataset``.

    ``overrides`` replace default settings, e.g. ``build_model("vit", "mnist", depth=4, patch_size=7)``.
    The model maps images [B, C, H, W] to logits [B, num_classes].
    """
    if kind not in KINDS:
        raise ValueError(f"unknown model kind {kind!r}; known kinds: {', '.join(KINDS)}")
    info = dataset_info(dataset)
    shape = dict(num_classes=info.num_classes, image_size=info.image_size)
    if kind == "cnn":
        if overrides:
            raise ValueError(f"the CNN has no settings to override (got {sorted(overrides)}); "
                             "it is the fixed PyTorch MNIST example network")
        return CNN(in_channels=info.channels, **shape)
    if kind == "hybrid":
        return Hybrid(in_channels=info.channels, **shape, **{**DEFAULTS[kind], **overrides})
    settings = {"patch_size": PATCH_SIZE[info.image_size], **DEFAULTS[kind], **overrides}
    cls = ViT if kind == "vit" else DeepViT
    return make_vit(cls, channels=info.channels, **shape, **settings)
