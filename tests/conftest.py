"""Shared fixtures: small generated datasets in torchvision's layout, and the real data if present."""

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from coursekit.sources import dataset_info

CIFAR10_CLASSES = dataset_info("cifar10").classes


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array in the IDX format MNIST uses (magic 0x0801 labels, 0x0803 images)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = np.array([0x0800 + array.ndim, *array.shape], dtype=">i4").tobytes()
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def make_mnist_like(root: Path, folder: str = "MNIST", n_train: int = 600, n_test: int = 200,
                    seed: int = 0) -> Path:
    """Generate a tiny MNIST-shaped dataset: each class is a bright bar at its own row, plus noise."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        rng.shuffle(labels)
        images = rng.integers(0, 60, size=(n, 28, 28))
        for i, label in enumerate(labels):
            images[i, 2 + 2 * label: 4 + 2 * label, 4:24] = 255
        write_idx(root / folder / "raw" / f"{split}-images-idx3-ubyte", images)
        write_idx(root / folder / "raw" / f"{split}-labels-idx1-ubyte", labels)
    return root


@pytest.fixture
def fake_root(tmp_path):
    """A data folder with a generated MNIST and Fashion-MNIST (600 train / 200 test images each)."""
    make_mnist_like(tmp_path, "MNIST")
    make_mnist_like(tmp_path, "FashionMNIST", seed=1)
    return tmp_path


@pytest.fixture
def real_root():
    """The real datasets folder from COURSEKIT_DATA; skips the test when it is not there."""
    root = os.environ.get("COURSEKIT_DATA")
    if not root or not all((Path(root) / f).exists() for f in dataset_info("mnist").files):
        pytest.skip("real MNIST not found: set COURSEKIT_DATA to a folder that holds it")
    return Path(root)


def brightness(label: int) -> int:
    return 10 + 24 * label  # each class its own grey level, which survives JPEG


@pytest.fixture
def jpeg_root(tmp_path, monkeypatch):
    """A tiny CIFAR-10 JPEG copy (4 train / 2 test images per class) and a private cache folder."""
    monkeypatch.setenv("COURSEKIT_CACHE", str(tmp_path / "cache"))
    for split, n in (("train", 4), ("test", 2)):
        for label, name in enumerate(CIFAR10_CLASSES):
            folder = tmp_path / "data" / "CIFAR-10-images" / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = np.full((32, 32, 3), brightness(label), dtype=np.uint8)
                pixels[i, :, 0] = 255  # a mark that tells the files of a class apart
                Image.fromarray(pixels).save(folder / f"{i:04d}.jpg", quality=95)
    return tmp_path / "data"
