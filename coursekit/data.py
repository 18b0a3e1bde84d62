"""Loaders for the course: training, validation and test batches of one dataset.

The last floor of the data path, where a dataset name comes down to batches:
:mod:`coursekit.sources` reads the files, :mod:`coursekit.tensordata` decodes them once into
cached tensors, and this module splits them and makes the loaders. Nothing here is imported back
up. The names notebooks use to read a dataset (``get_dataset``, ``dataset_info``, ``source_of``,
...) live in :mod:`coursekit.sources` and can be imported from here too.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Subset

from .sources import (DATASETS, JPEG_COPY, DatasetInfo, StandInDataset,  # noqa: F401  (offered here too)
                      dataset_info, default_transform, get_dataset, jpeg_copy, load_rgb, source_of,
                      stand_in_label, uses_stand_in)
from .tensordata import TensorLoader, load_split


def balanced_indices(targets, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` indices drawn at random with (as nearly as possible) the same count per class."""
    targets = torch.as_tensor(targets)
    if not 0 < n <= len(targets):
        raise ValueError(f"subset={n} must be between 1 and the dataset size {len(targets)}")
    g = torch.Generator().manual_seed(seed)
    classes = targets.unique()
    per_class = [torch.nonzero(targets == c).flatten() for c in classes]
    per_class = [idx[torch.randperm(len(idx), generator=g)] for idx in per_class]
    # deal the classes out round-robin so that any prefix is balanced
    longest = max(len(idx) for idx in per_class)
    table = torch.full((longest, len(classes)), -1, dtype=torch.long)
    for j, idx in enumerate(per_class):
        table[: len(idx), j] = idx
    order = table.flatten()
    order = order[order >= 0][:n]
    return order[torch.randperm(n, generator=g)]


def split_indices(train_targets, test_targets, val_fraction: float = 0.1, subset: int | None = None,
                  seed: int = 0, full_test: bool = False):
    """``(train_idx, val_idx, test_idx)``: validation held out of training, every class in each.

    ``subset=N``: a class-balanced sample of N training images (then split) and at most N test
    images, or every test image with ``full_test``; ``test_idx`` is ``None`` when the whole test
    set is used.
    """
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction={val_fraction} must be in [0, 1), e.g. 0.1")
    targets = torch.as_tensor(train_targets)
    pool = balanced_indices(targets, subset or len(targets), seed)
    n_val = round(val_fraction * len(pool))
    # balanced_indices of the pool's own labels puts every class in the validation set
    val_pos = balanced_indices(targets[pool], n_val, seed + 1) if n_val else torch.empty(0, dtype=torch.long)
    keep = torch.ones(len(pool), dtype=torch.bool)
    keep[val_pos] = False
    test_idx = None
    if subset and not full_test:
        test_targets = torch.as_tensor(test_targets)
        test_idx = balanced_indices(test_targets, min(subset, len(test_targets)), seed)
    return pool[keep], pool[val_pos], test_idx


def get_loaders(name: str, batch_size: int = 128, val_fraction: float = 0.1, subset: int | None = None,
                augment: bool = False, seed: int = 0, root=None, download: bool = True,
                num_workers: int = 0, transform=None, full_test: bool = False):
    """``(train_loader, val_loader, test_loader)`` for one dataset.

    The validation set is held out of the training set (the test set never chooses a model).
    ``subset=N``: a reproducible, class-balanced sample of N training images, split into train and
    validation, and at most N test images (``full_test``: all of them, to compare training-set sizes
    on one test set). ``seed`` fixes the split and the subset; the order of
    training batches and the augmentation follow torch's global RNG, which
    :func:`coursekit.train.fit` seeds. Batches are ``images [B, C, H, W]`` and ``labels [B]``.

    By default the images are decoded once into uint8 tensors (cached, see
    :mod:`coursekit.tensordata`) and whole batches are normalized and, with ``augment``, cropped and
    flipped at once. ``transform``: your own torchvision transform for the training images instead
    (a per-image ``DataLoader`` with ``num_workers`` processes; validation and test keep the default).
    """
    if transform is not None:
        if augment:
            raise ValueError("augment=True adds the default augmentation, but you passed your own "
                             "transform: put the augmentation into that transform instead")
        return _per_image_loaders(name, batch_size, val_fraction, subset, seed, root, download,
                                  num_workers, transform, full_test)
    train_split, test_split = load_split(name, True, root, download), load_split(name, False, root, download)
    train_idx, val_idx, test_idx = split_indices(train_split.targets, test_split.targets,
                                                 val_fraction, subset, seed, full_test)
    info = dataset_info(name)
    crop = dict(pad=info.pad, flip=info.flip) if augment else {}
    return (TensorLoader(train_split, train_idx, batch_size, shuffle=True, **crop),
            TensorLoader(train_split, val_idx, batch_size),
            TensorLoader(test_split, test_idx, batch_size))


def _per_image_loaders(name, batch_size, val_fraction, subset, seed, root, download, num_workers,
                       transform, full_test):
    train_set = get_dataset(name, True, root, download, transform)
    eval_set = get_dataset(name, True, root, download, default_transform(name))
    test_set = get_dataset(name, False, root, download, default_transform(name))
    train_idx, val_idx, test_idx = split_indices(train_set.targets, test_set.targets, val_fraction,
                                                 subset, seed, full_test)
    if test_idx is not None:
        test_set = Subset(test_set, test_idx.tolist())

    def loader(ds, shuffle):
        return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
                          persistent_workers=num_workers > 0)

    return (loader(Subset(train_set, train_idx.tolist()), True),
            loader(Subset(eval_set, val_idx.tolist()), False),
            loader(test_set, False))
