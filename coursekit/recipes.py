"""Notebook 03's training recipes: the one place that says how its CNN and ViT are trained.

Notebook 03 trains with these values, and ``python -m coursekit.weights --train 03`` trains the
course's shipped weights with them; ``benchmarks/mnist_recipes.py`` is how they were chosen.
(Notebook 05's models follow ``coursekit.reproduce``'s grids instead.)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from torch import nn

from .config import seed_everything
from .models import build_model

# notebook 03's small ViT: 16 patches of 7x7 (17 tokens), narrower and shallower than the default
VIT_SETTINGS = dict(patch_size=7, dim=96, depth=6, heads=4, dim_head=24, mlp_dim=192,
                    dropout=0.0, emb_dropout=0.0)


@dataclass(frozen=True)
class Recipe:
    """How one model is built and trained (``coursekit.train.fit``'s arguments and the data's)."""

    kind: str  # build_model's kind: "cnn", "vit", ...
    dataset: str  # the dataset it trains on
    epochs: int  # training epochs
    lr: float  # peak learning rate of fit's one-cycle schedule
    model: dict = field(default_factory=dict)  # build_model's overrides, e.g. VIT_SETTINGS
    label_smoothing: float = 0.0  # fit's label smoothing
    batch_size: int = 128  # images per training step
    augment: bool = True  # padded random crops (get_loaders' augment)
    seed: int = 0  # seeds the initial weights (build) and the batch order (fit)

    def build(self) -> nn.Module:
        """The untrained model, its initial weights drawn after seeding with ``seed``."""
        seed_everything(self.seed)
        return build_model(self.kind, self.dataset, **self.model)

    def as_dict(self) -> dict:
        return asdict(self)


RECIPES = {
    # the classic PyTorch MNIST example network: 5 epochs at lr 2e-3
    "mnist_cnn": Recipe("cnn", "mnist", epochs=5, lr=2e-3),
    # 12 epochs at lr 3e-3 with label smoothing 0.1 (README, "Measured results": 99.26% alone)
    "mnist_vit": Recipe("vit", "mnist", epochs=12, lr=3e-3, model=VIT_SETTINGS, label_smoothing=0.1),
}
