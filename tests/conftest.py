"""Shared fixtures: small generated datasets in torchvision's layout, the real data if present, and a
clean copy of the repository.

Real data: a test that reads it asks for ``real_root``, carries ``@pytest.mark.needs_data("mnist")``
(or other dataset names) or calls the ``missing_data`` fixture. Without the data such a test is
skipped on a laptop but fails under CI (``CI`` set, as .ci/run and GitHub Actions do), where
COURSEKIT_DATA was promised: a missing folder must not turn the data tests into silent skips.
"""

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from coursekit.config import data_root
from coursekit.models import build_model
from coursekit.sources import dataset_info

ROOT = Path(__file__).resolve().parents[1]
DATA_FIX = ("set COURSEKIT_DATA to the course's data folder (README, 'Data, offline machines and fast "
            "mode'; on the course's machines: export COURSEKIT_DATA=../shared/data)")


# transformers small enough for a test to build and run in a fraction of a second
SMALL = dict(dim=32, depth=2, heads=4, dim_head=8, mlp_dim=64)


def small(kind: str, **overrides):
    """The course's model ``kind`` for MNIST, a transformer at SMALL's sizes, seeded (the CNN as it is)."""
    torch.manual_seed(0)
    return build_model(kind, "mnist", **{**({} if kind == "cnn" else SMALL), **overrides})


class RunsCode:
    """Pickles to ``os.mkdir(marker)``: a file that would run code if it were unpickled freely."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def stop_for_missing_data(what: str) -> None:
    """Skip the running test, or under CI fail it, because ``what`` (real data) is not here."""
    message = f"{what} not found in {data_root()}: {DATA_FIX}"
    if os.environ.get("CI"):
        pytest.fail(f"CI={os.environ['CI']}: a data test must not be skipped in CI; {message}", pytrace=False)
    pytest.skip(message)


def require_data(*datasets: str) -> Path:
    """The data folder (``coursekit.config.data_root()``) when it holds every file of ``datasets``."""
    root = data_root()
    for name in datasets:
        missing = [f for f in dataset_info(name).files if not (root / f).exists()]
        if missing:
            stop_for_missing_data(f"real {name} ({missing[0]} and {len(missing) - 1} more files)")
    return root


def pytest_configure(config):
    config.addinivalue_line("markers", "needs_data(*datasets): the test reads these real datasets (names of "
                            "coursekit.sources.DATASETS); skipped without them, a failure under CI")


def pytest_runtest_setup(item):
    for mark in item.iter_markers("needs_data"):
        require_data(*mark.args)


@pytest.fixture
def missing_data():
    """``missing_data(what)``: skip this test, or under CI fail it, because real data is not here."""
    return stop_for_missing_data

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
def fake_root(tmp_path, monkeypatch):
    """A data folder with a generated MNIST and Fashion-MNIST (600 train / 200 test images each).

    Its decoded caches go to a private folder: in the user's cache they would replace the real MNIST's
    (a new source's cache removes the older one of the same name)."""
    monkeypatch.setenv("COURSEKIT_CACHE", str(tmp_path / "cache"))
    make_mnist_like(tmp_path, "MNIST")
    make_mnist_like(tmp_path, "FashionMNIST", seed=1)
    return tmp_path


@pytest.fixture
def real_root():
    """The data folder holding the real MNIST (COURSEKIT_DATA); without it a skip, under CI a failure."""
    return require_data("mnist")


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


@pytest.fixture(scope="session")
def clean_copy():
    """``clean_copy(dest)``: copy the repository's files into ``dest`` as a fresh clone has them
    (tracked or new, never ignored: no build output, caches or virtual environments); returns ``dest``.
    Skips the test where the repository is not a git checkout."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: this test works on a clean copy of the repository's files")

    def copy(dest: Path) -> Path:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                                cwd=ROOT, capture_output=True, check=True).stdout.decode().split("\0")
        for rel_path in filter(None, listed):
            if (ROOT / rel_path).is_file():
                (dest / rel_path).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / rel_path, dest / rel_path)
        return dest

    return copy
