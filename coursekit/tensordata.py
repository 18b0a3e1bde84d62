"""The tensor data path: each split decoded once into uint8 tensors, batches made a whole batch at a time.

The second floor of the data path: it reads datasets through :mod:`coursekit.sources` and is used
by :mod:`coursekit.data`, which makes the loaders.

Decoding 50,000 JPEG files takes seconds and transforming images one by one costs a share of every
epoch. Here a split is decoded once into ``images`` uint8 [N, C, H, W] and ``labels`` [N], cached in
``coursekit.config.cache_dir()`` (never in the data folder, which may be read-only) under a
fingerprint of its source files, so a changed source is decoded again. :class:`TensorLoader` then
normalizes, crops and flips whole batches with tensor operations.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import Dataset, Subset
from tqdm.auto import tqdm

from .config import cache_dir, data_root
from .files import save_atomically
from .sources import dataset_info, get_dataset, load_rgb, source_of, uses_stand_in

CACHE_VERSION = 1  # bump when the cached format changes


class TensorSplit(Dataset):
    """One split in memory: ``images`` uint8 [N, C, H, W], ``targets`` int64 [N].

    ``__getitem__`` returns ``(image [C, H, W] normalized float, label)``, like the per-image path.
    """

    def __init__(self, name: str, images: torch.Tensor, targets: torch.Tensor, source: str,
                 stand_in: bool = False, classes=()):
        info = dataset_info(name)
        self.name, self.images, self.targets = name, images, targets
        self.source, self.stand_in, self.classes = source, stand_in, list(classes)
        self.mean = torch.tensor(info.mean).view(-1, 1, 1)
        self.std = torch.tensor(info.std).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i):
        return normalize(self.images[i], self.mean, self.std), int(self.targets[i])


def normalize(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 images [..., C, H, W] -> float32 ``(x / 255 - mean) / std``; mean, std: [C, 1, 1]."""
    return (images.float() / 255 - mean) / std


def augment_batch(images: torch.Tensor, pad: int = 0, flip: bool = False, generator=None) -> torch.Tensor:
    """Random crops of the zero-padded images and random horizontal flips, per image.

    images: uint8 [B, C, H, W] -> [B, C, H, W]. Each output is the H x W window at a random offset
    in 0..2*pad of the image padded by ``pad`` pixels on every side (torchvision's
    ``RandomCrop(H, padding=pad)``), mirrored with probability 1/2 when ``flip``.
    """
    B, C, H, W = images.shape
    if pad:
        padded = F.pad(images, (pad, pad, pad, pad))
        windows = padded.unfold(2, H, 1).unfold(3, W, 1)  # a view [B, C, 2p+1, 2p+1, H, W]
        dy, dx = torch.randint(0, 2 * pad + 1, (2, B), generator=generator)
        images = windows[torch.arange(B), :, dy, dx]  # image b's window at offset (dy[b], dx[b])
    if flip:
        mirror = torch.rand(B, generator=generator) < 0.5
        images = images.clone() if not pad else images  # never flip the caller's tensor in place
        images[mirror] = images[mirror].flip(-1)
    return images


class TensorLoader:
    """Batches ``(images [B, C, H, W] float, labels [B])`` from a :class:`TensorSplit`.

    ``indices`` picks the images (all when ``None``). With ``shuffle`` the order, and with
    ``pad``/``flip`` the augmentation, come from a generator seeded from torch's global RNG at the
    start of each epoch: ``torch.manual_seed`` (which ``fit`` calls) makes a run repeat exactly.
    """

    def __init__(self, split: TensorSplit, indices=None, batch_size: int = 128, shuffle: bool = False,
                 pad: int = 0, flip: bool = False):
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be at least 1")
        indices = torch.arange(len(split)) if indices is None else torch.as_tensor(indices)
        self.dataset = Subset(split, indices.tolist())  # what uses_stand_in and len() read
        self.images, self.targets = split.images[indices], split.targets[indices]
        self.mean, self.std = split.mean, split.std
        self.batch_size, self.shuffle, self.pad, self.flip = batch_size, shuffle, pad, flip

    def __len__(self) -> int:
        return -(-len(self.targets) // self.batch_size)  # ceiling division

    def __iter__(self):
        g = None
        if self.shuffle or self.pad or self.flip:
            g = torch.Generator().manual_seed(int(torch.randint(2**62, ()).item()))
        n = len(self.targets)
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        for start in range(0, n, self.batch_size):
            idx = order[start:start + self.batch_size]
            images = self.images[idx]
            if self.pad or self.flip:
                images = augment_batch(images, self.pad, self.flip, g)
            yield normalize(images, self.mean, self.std), self.targets[idx]


def _decode(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 images [N, C, H, W], int64 labels [N]) of a torchvision-style dataset, untransformed."""
    if hasattr(dataset, "samples"):  # an ImageFolder: decode every file
        files = [path for path, _ in dataset.samples]
        images = [np.asarray(load_rgb(f)) for f in tqdm(files, desc="decoding", unit="image",
                                                        mininterval=2, leave=False)]
        images = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)
    elif isinstance(dataset.data, np.ndarray):  # torchvision's CIFAR: [N, H, W, C]
        images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2)
    else:  # MNIST-like [N, H, W], or the stand-in's [N, C, H, W]
        images = dataset.data if dataset.data.ndim == 4 else dataset.data.unsqueeze(1)
    return images.contiguous(), torch.as_tensor(dataset.targets, dtype=torch.long)


def source_files(name: str, dataset, root) -> list[Path]:
    """The files dataset ``name`` was read from: an ImageFolder's images, or torchvision's data files."""
    if hasattr(dataset, "samples"):
        return [Path(p) for p, _ in dataset.samples]
    return [Path(root) / f for f in dataset_info(name).files]


def fingerprint(files) -> str:
    """A hash of the files' paths, sizes and modification times: it changes when the source does."""
    digest = hashlib.sha1(f"v{CACHE_VERSION}".encode())
    for f in files:
        stat = f.stat()
        digest.update(f"{f}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def _read_cache(path: Path):
    """A cache file's ``(images, targets)``; ``None`` when there is none or it does not load as one
    (cut short, another format, or not plain tensors: ``weights_only`` never runs code from it)."""
    if not path.exists():
        return None
    try:
        cached = torch.load(path, weights_only=True)
        return cached["images"], cached["targets"]
    except Exception as error:  # whatever is wrong with it, decoding again gives the right tensors
        warnings.warn(f"{path} is not a readable cache ({type(error).__name__}); decoding its source again",
                      stacklevel=3)
        return None


def load_split(name: str, train: bool = True, root=None, download: bool = True,
               cache: bool = True) -> TensorSplit:
    """One split as a :class:`TensorSplit`, from the cache when its source is unchanged.

    ``cache=False`` decodes the source files and neither reads nor writes the cache (the grader's
    way: nothing another process wrote can change what it scores against).

    The first call decodes the source (:func:`coursekit.sources.get_dataset`) and writes
    ``cache_dir()/<name>-<split>-<fingerprint>.pt`` atomically; later calls load that file. A cache
    folder that cannot be written only costs the decoding next time, and a cache file that does not
    load is decoded again (a warning says so in both cases).
    """
    dataset = get_dataset(name, train, root, download)
    source, classes = source_of(dataset), getattr(dataset, "classes", ())
    if uses_stand_in(dataset):
        return TensorSplit(name, *_decode(dataset), source, stand_in=True, classes=classes)
    if not cache:
        return TensorSplit(name, *_decode(dataset), source, classes=classes)
    split = "train" if train else "test"
    key = fingerprint(source_files(name, dataset, data_root(root)))
    path = cache_dir() / f"{name}-{split}-{key}.pt"
    cached = _read_cache(path)
    if cached is not None:
        images, targets = cached
    else:
        images, targets = _decode(dataset)
        try:
            save_atomically({"images": images, "targets": targets}, path)
            for old in path.parent.glob(f"{name}-{split}-*.pt"):  # caches of an older source
                if old != path:
                    old.unlink()
        except OSError as error:
            warnings.warn(f"could not write the decoded {name} cache to {path} ({error}); set "
                          "COURSEKIT_CACHE to a folder you can write", stacklevel=2)
    return TensorSplit(name, images, targets, source, classes=classes)
