"""Datasets and loaders for the course: MNIST, Fashion-MNIST, CIFAR-10 and CIFAR-100.

Files come from torchvision's download when online, or from a folder you point ``COURSEKIT_DATA``
at (torchvision's layout, e.g. ``$COURSEKIT_DATA/MNIST/raw/train-images-idx3-ubyte``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import datasets, transforms

from .config import DATA_ENV, data_root, is_fast


@dataclass(frozen=True)
class DatasetInfo:
    """What the course needs to know about one dataset."""

    cls: type  # the torchvision dataset class
    channels: int
    image_size: int  # side length in pixels
    num_classes: int
    mean: tuple  # per-channel mean of the training images (after ToTensor, in [0, 1])
    std: tuple  # per-channel standard deviation of the training images
    files: tuple  # files torchvision reads, relative to the data folder
    classes: tuple = ()  # class names, where they are short enough to print


_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

DATASETS = {
    "mnist": DatasetInfo(datasets.MNIST, 1, 28, 10, (0.1307,), (0.3081,),
                         tuple(f"MNIST/raw/{f}" for f in _MNIST_FILES),
                         tuple(str(d) for d in range(10))),
    "fashion_mnist": DatasetInfo(datasets.FashionMNIST, 1, 28, 10, (0.2860,), (0.3530,),
                                 tuple(f"FashionMNIST/raw/{f}" for f in _MNIST_FILES),
                                 ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                  "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")),
    "cifar10": DatasetInfo(datasets.CIFAR10, 3, 32, 10,
                           (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
                           tuple(f"cifar-10-batches-py/{f}" for f in
                                 ("batches.meta", "test_batch",
                                  *(f"data_batch_{i}" for i in range(1, 6))))),
    "cifar100": DatasetInfo(datasets.CIFAR100, 3, 32, 100,
                            (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
                            ("cifar-100-python/meta", "cifar-100-python/train",
                             "cifar-100-python/test")),
}
CIFAR = ("cifar10", "cifar100")


def dataset_info(name: str) -> DatasetInfo:
    """Look a dataset up by name; an unknown name raises ``ValueError`` listing the known ones."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    return DATASETS[name]


class StandInDataset(Dataset):
    """Generated images shaped like a real dataset: NOT real data, only for fast mode in CI.

    Each class is a fixed random pattern plus noise, so a model can learn something; the numbers
    it gives say nothing about the real dataset. ``__getitem__`` returns ``(image [C, H, W], label)``.
    """

    stand_in = True

    def __init__(self, name: str, train: bool = True, transform=None, size: int = 2000):
        info = dataset_info(name)
        g = torch.Generator().manual_seed(1 if train else 2)
        shape = (info.channels, info.image_size, info.image_size)
        templates = torch.rand((info.num_classes, *shape), generator=torch.Generator().manual_seed(0))
        self.targets = torch.randint(info.num_classes, (size,), generator=g)
        noise = torch.rand((size, *shape), generator=g)
        self.data = (0.6 * templates[self.targets] + 0.4 * noise).clamp(0, 1)
        self.transform = transform
        self.classes = [f"class {i}" for i in range(info.num_classes)]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i):
        image = transforms.functional.to_pil_image(self.data[i])
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.targets[i])


def uses_stand_in(data) -> bool:
    """True if a dataset or loader (possibly wrapped in ``Subset``) is a generated stand-in."""
    data = getattr(data, "dataset", data)
    while isinstance(data, Subset):
        data = data.dataset
    return bool(getattr(data, "stand_in", False))


def _missing_files_error(name: str, root, info: DatasetInfo) -> FileNotFoundError:
    expected = "\n".join(f"  {root / f}" for f in info.files)
    return FileNotFoundError(
        f"The {name} files were not found in the data folder {root}.\n"
        f"Expected:\n{expected}\n"
        f"Fix: run once with internet and download=True (torchvision fetches them), or copy the files "
        f"there, or set the environment variable {DATA_ENV} to the folder that holds them "
        f"(offline course machines: COURSEKIT_DATA=../shared/data).")


def default_transform(name: str, train: bool = False, augment: bool = False):
    """``ToTensor`` + the dataset's own normalization; with ``augment``, crops (and flips where
    a flipped image is still the same class) for training."""
    info = dataset_info(name)
    steps = []
    if train and augment:
        pad = 4 if name in CIFAR else 2
        steps.append(transforms.RandomCrop(info.image_size, padding=pad))
        if name != "mnist":  # a flipped digit is not the same digit
            steps.append(transforms.RandomHorizontalFlip())
    steps += [transforms.ToTensor(), transforms.Normalize(info.mean, info.std)]
    return transforms.Compose(steps)


def get_dataset(name: str, train: bool = True, root=None, download: bool = True, transform=None):
    """A torchvision dataset whose items are ``(image [C, H, W], label)``.

    ``root``: the argument, else ``$COURSEKIT_DATA``, else a per-user cache folder.
    ``transform``: defaults to ``ToTensor`` and the dataset's normalization.
    Missing files raise ``FileNotFoundError`` saying where they were looked for. In fast mode a
    missing CIFAR is replaced by a :class:`StandInDataset`, with a warning.
    """
    info = dataset_info(name)
    root = data_root(root)
    transform = transform or default_transform(name)
    if all((root / f).exists() for f in info.files):
        return info.cls(str(root), train=train, transform=transform, download=False)
    if download:
        try:
            return info.cls(str(root), train=train, transform=transform, download=True)
        except Exception:  # offline, or a broken download: fall through to the clear message
            pass
    if is_fast() and name in CIFAR:
        warnings.warn(f"{name} is not available in {root}: fast mode uses a GENERATED STAND-IN of "
                      f"the same shape. Its results are not {name} results.", stacklevel=2)
        return StandInDataset(name, train=train, transform=transform)
    raise _missing_files_error(name, root, info) from None


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


def get_loaders(name: str, batch_size: int = 128, val_fraction: float = 0.1, subset: int | None = None,
                augment: bool = False, seed: int = 0, root=None, download: bool = True,
                num_workers: int = 0):
    """``(train_loader, val_loader, test_loader)`` for one dataset.

    The validation set is held out of the training set (the test set never chooses a model).
    ``subset=N``: a reproducible, class-balanced sample of N training images, split into train and
    validation, and at most N test images. ``seed`` fixes the split and the subset; the order of
    training batches follows torch's global RNG, which :func:`coursekit.train.fit` seeds.
    Batches are ``images [B, C, H, W]`` and ``labels [B]``.
    """
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction={val_fraction} must be in [0, 1), e.g. 0.1")
    train_set = get_dataset(name, True, root, download, default_transform(name, True, augment))
    eval_set = get_dataset(name, True, root, download, default_transform(name))
    test_set = get_dataset(name, False, root, download, default_transform(name))

    targets = torch.as_tensor(train_set.targets)
    pool = balanced_indices(targets, subset or len(targets), seed)
    n_val = round(val_fraction * len(pool))
    # balanced_indices of the pool's own labels puts every class in the validation set
    val_pos = balanced_indices(targets[pool], n_val, seed + 1) if n_val else torch.empty(0, dtype=torch.long)
    keep = torch.ones(len(pool), dtype=torch.bool)
    keep[val_pos] = False
    train_idx, val_idx = pool[keep], pool[val_pos]
    if subset:
        test_targets = torch.as_tensor(test_set.targets)
        test_set = Subset(test_set, balanced_indices(test_targets, min(subset, len(test_targets)), seed).tolist())

    def loader(ds, shuffle):
        return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
                          persistent_workers=num_workers > 0)

    return (loader(Subset(train_set, train_idx.tolist()), True),
            loader(Subset(eval_set, val_idx.tolist()), False),
            loader(test_set, False))
