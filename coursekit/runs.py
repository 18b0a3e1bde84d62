"""The one table of run settings: how every model the course trains is built and trained.

A run is a (grid, dataset, model) triple. The grids:

- ``"reference"``: the reference table's scale (64 tokens of CIFAR, depth 8, dropout), 30 epochs:
  hours on a CPU, minutes on a GPU;
- ``"cpu"``: the same models sized and scheduled for a laptop CPU, chosen by measurement
  (``python benchmarks/precision.py --grid cpu`` for the sizes; the epochs and learning rates:
  ``benchmarks/results/run_choices.md``); notebook 05 and ``python -m coursekit.reproduce --grid cpu``;
- ``"notebook03"``: notebook 03's MNIST CNN and ViT, as its shipped weights were trained
  (``benchmarks/mnist_recipes.py`` is how they were chosen), and the CIFAR-10 ViT whose position
  embeddings show the patch grid (``benchmarks/position_grid.py``).

``settings(grid, dataset, model)`` returns one :class:`Run` that holds everything the run is built
and trained with; printing it shows all of it::

    >>> print(settings("cpu", "cifar10", "hybrid"))

:func:`coursekit.models.build_model` reads the ``sizes``, :mod:`coursekit.reproduce` trains the
grids, :mod:`coursekit.weights` trains and records the shipped models, and notebooks 03 and 05
print the runs they train.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, field, fields, replace

from . import config
from .sources import dataset_info


def _setting(doc: str, default=MISSING, **kwargs):
    return field(default=default, metadata={"doc": doc}, **kwargs)


@dataclass(frozen=True)
class Run:
    """How one model is built and trained: ``build_model``'s settings, ``get_loaders``' and ``fit``'s."""

    grid: str = _setting("which grid of the table (see the module's docstring)")
    dataset: str = _setting("the dataset it trains on (coursekit.sources.DATASETS)")
    model: str = _setting('build_model\'s kind: "cnn", "vit", "deepvit", "hybrid" or "resnet"')
    sizes: dict = _setting("build_model's settings: patch size, width, depth, heads, ... (none for the CNN)",
                           default_factory=dict)
    epochs: int = _setting("training epochs", 30)
    batch_size: int = _setting("images per training step", 128)
    lr: float = _setting("peak learning rate of fit's one-cycle schedule (AdamW)", 1e-3)
    label_smoothing: float = _setting("fit's label smoothing", 0.0)
    augment: bool = _setting("padded random crops (and flips where they keep the class)", False)
    seed: int = _setting("fixes the split, the subset, the initial weights, batch order, augmentation", 0)
    subset: int | None = _setting("train on N class-balanced images (None: the whole training set)", None)
    max_steps: int | None = _setting("at most this many batches per epoch (None: all; fast mode: 2)", None)
    precision: str = _setting('"fp32", "bf16", or "auto": the faster of the two for this model, measured by fit',
                              "auto")
    fast: bool = _setting("made in fast mode (a quick check that the code runs): not a result", False)

    def __str__(self) -> str:
        sizes = ", ".join(f"{k}={v}" for k, v in self.sizes.items()) or "-"
        lines = [f"{self.grid} / {self.dataset} / {self.model}", f"  sizes: {sizes}"]
        lines += [f"  {f.name:<16}{getattr(self, f.name)!r:<8}  # {f.metadata['doc']}" for f in fields(self)[4:]]
        return "\n".join(lines)

    def as_dict(self) -> dict:
        """The run as JSON stores it (tuples become lists): what records and weights files keep."""
        return json.loads(json.dumps(asdict(self)))


ANY = "*"
DIGITS = ("mnist", "fashion_mnist")  # 28x28 grey
CIFAR = ("cifar10", "cifar100")  # 32x32 colour
_REFERENCE_TRANSFORMER = dict(dim=128, depth=8, heads=4, mlp_dim=384,
                              dropout=0.1, emb_dropout=0.1)  # as the reference table's; ~1.6x per CPU step
_CPU_TRANSFORMER = dict(dim=128, depth=6, heads=4, mlp_dim=256,  # 6 blocks of width 128: ~0.8M parameters
                        dropout=0.0, emb_dropout=0.0)  # regularized by augmentation and weight decay instead

# A run's settings are Run's defaults, then each row that matches it, top to bottom: its changes
# replace fields, and its "sizes" are added to the sizes so far. A run no row matches does not exist.
# Every model has at most the parameters of the reference table's model of its kind and dataset
# and at least 16 patches; the ResNet, which the reference table lacks, at most the parameters of
# its grid's hybrid (tests/test_models.py checks all three).
TABLE = [
    # grid        datasets      models               changes
    ("reference", ANY,          ANY,                 {}),
    # 28 -> 7x7 = 49 patches of 4x4; 32 -> 8x8 = 64
    ("reference", ANY,          ("vit", "deepvit"),  dict(sizes=dict(_REFERENCE_TRANSFORMER, patch_size=4))),
    # one stage: 28 -> a 14x14 feature map -> 49 patches of 2x2; 32 -> 16x16 -> 64
    ("reference", ANY,          ("hybrid",),         dict(sizes=dict(_REFERENCE_TRANSFORMER, stem=((32, 32),),
                                                                     patch_size=2))),
    # the CPU grid's ResNet at twice its width (192, not 256, last): at most the reference hybrid's parameters
    ("reference", ANY,          ("resnet",),         dict(sizes=dict(widths=(32, 64, 128, 192), blocks=(1, 1, 1)))),

    ("cpu",       ANY,          ANY,                 {}),
    # no augmentation on MNIST: it slowed the ViTs down in 3-5 epochs
    ("cpu",       ("mnist",),   ANY,                 dict(epochs=4, lr=2e-3)),
    ("cpu",       CIFAR,        ANY,                 dict(epochs=12, lr=2e-3)),
    # 4x4 = 16 patches: 7x7 pixels on MNIST, 8x8 on CIFAR; a quarter of the reference's tokens
    ("cpu",       DIGITS,       ("vit",),            dict(sizes=dict(_CPU_TRANSFORMER, patch_size=7))),
    ("cpu",       CIFAR,        ("vit",),            dict(sizes=dict(_CPU_TRANSFORMER, patch_size=8))),
    # re-attention mixes the heads (a LayerNorm across them): 8 heads of 16 trained better than 4 of 32
    # at the same width (benchmarks/results/run_choices.md has this table's measurements)
    ("cpu",       DIGITS,       ("deepvit",),        dict(sizes=dict(_CPU_TRANSFORMER, heads=8, dim_head=16,
                                                                     patch_size=7))),
    ("cpu",       CIFAR,        ("deepvit",),        dict(sizes=dict(_CPU_TRANSFORMER, heads=8, dim_head=16,
                                                                     patch_size=8))),
    # two stages reach a 7x7 (MNIST) or 8x8 (CIFAR) map of 64 channels: one token per cell
    ("cpu",       ANY,          ("hybrid",),         dict(sizes=dict(_CPU_TRANSFORMER, depth=4,
                                                                     stem=((32,), (64,)), patch_size=1))),
    # chosen on validation accuracy of the CIFAR-10 JPEG copy, never on the test set: the DeepViT,
    # the slowest learner, did better at half the column's learning rate
    ("cpu",       ("cifar10",), ("deepvit",),        dict(lr=1e-3)),
    # 20 epochs reach the hybrid's 80% aim on CIFAR-10, which 12 missed
    ("cpu",       ("cifar10",), ("hybrid",),         dict(epochs=20)),
    # the ResNet-9 layout at a quarter of its width: under the hybrid's parameters and faster per epoch
    # (benchmarks/resnet_vs_hybrid.py measures both; its numbers: benchmarks/results/resnet_vs_hybrid_cpu.txt)
    ("cpu",       ANY,          ("resnet",),         dict(sizes=dict(widths=(16, 32, 64, 128), blocks=(1, 1, 1)))),
    # CIFAR-10: the column's lr 2e-3, chosen on validation accuracy in a pilot on a subset; 18 epochs, since
    # 12 fell short of 85% with validation accuracy still rising, and 18 is what the aim of about 30 minutes
    # on 2 threads was projected to hold (benchmarks/results/reproduce_cpu_resnet_cifar10.md: the runs)
    ("cpu",       ("cifar10",), ("resnet",),         dict(epochs=18)),

    ("notebook03", ("mnist",),  ("cnn", "vit"),      dict(augment=True, precision="fp32")),
    # the classic PyTorch MNIST example network: 5 epochs at lr 2e-3, padded random crops
    ("notebook03", ("mnist",),  ("cnn",),            dict(epochs=5, lr=2e-3)),
    # 16 patches of 7x7 (17 tokens), narrower and shallower than the reference's; 12 epochs at lr 3e-3
    # with label smoothing 0.1, chosen with benchmarks/mnist_recipes.py
    ("notebook03", ("mnist",),  ("vit",),            dict(epochs=12, lr=3e-3, label_smoothing=0.1,
                                                          sizes=dict(patch_size=7, dim=96, depth=6, heads=4,
                                                                     dim_head=24, mlp_dim=192, dropout=0.0,
                                                                     emb_dropout=0.0))),
    # 64 patches of 4x4, small and fast: its position embeddings learn the patch grid (notebook 03,
    # section 5); lr 4e-3 made the grid clearer than 2e-3 (benchmarks/position_grid.py measures it)
    ("notebook03", ("cifar10",), ("vit",),           dict(epochs=12, lr=4e-3, batch_size=64, label_smoothing=0.1,
                                                          precision="fp32",
                                                          sizes=dict(patch_size=4, dim=64, depth=4, heads=4,
                                                                     dim_head=16, mlp_dim=128, dropout=0.0,
                                                                     emb_dropout=0.0))),
]
GRIDS = tuple(dict.fromkeys(row[0] for row in TABLE))
FAST = dict(epochs=1, batch_size=16, subset=128, max_steps=2, fast=True)  # fast mode (CI): seconds


def _matches(names, name) -> bool:
    return names == ANY or name in names


def settings(grid: str, dataset: str, model: str, fast: bool | None = None, **changes) -> Run:
    """The :class:`Run` of ``model`` on ``dataset`` in ``grid``, from ``TABLE``.

    ``fast``: fast mode (1 epoch of 2 batches of 16 on 128 images); ``None`` reads
    ``COURSEKIT_FAST``. ``changes`` that are not ``None`` replace fields last, e.g.
    ``settings("cpu", "cifar10", "deepvit", epochs=2)``. ``augment`` is the dataset's default
    (on for CIFAR, off for digits) unless a row or a change sets it.
    """
    if grid not in GRIDS:
        raise ValueError(f"unknown grid {grid!r}; known grids: {', '.join(GRIDS)}")
    info = dataset_info(dataset)  # ValueError naming the known datasets
    rows = [c for g, d, m, c in TABLE if g == grid and _matches(d, dataset) and _matches(m, model)]
    if not rows:
        held = {f"{d} {m}" for g, ds, ms, _ in TABLE if g == grid
                for d in (ds if ds != ANY else ["any dataset"]) for m in (ms if ms != ANY else ["any model"])}
        raise ValueError(f"grid {grid!r} has no run of {model!r} on {dataset!r}; it holds: "
                         f"{', '.join(sorted(held))}")
    values = dict(grid=grid, dataset=dataset, model=model, sizes={}, augment=info.augment)
    for row in rows:
        values.update({k: v for k, v in row.items() if k != "sizes"})
        values["sizes"] = {**values["sizes"], **row.get("sizes", {})}
    if config.is_fast() if fast is None else fast:
        values.update(FAST)
    return replace(Run(**values), **{k: v for k, v in changes.items() if v is not None})
