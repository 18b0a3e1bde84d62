"""The course's datasets as files: what each one is, where its files lie, and reading them.

The first floor of the data path (then :mod:`coursekit.tensordata` caches decoded tensors, then
:mod:`coursekit.data` makes loaders). Files come from torchvision's download when online, or from
a folder you point ``COURSEKIT_DATA`` at (torchvision's layout, e.g.
``$COURSEKIT_DATA/MNIST/raw/train-images-idx3-ubyte``; for CIFAR-10 also a JPEG copy in
``ImageFolder`` layout, whose results are labelled "CIFAR-10 (JPEG copy)").
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset, Subset
from torchvision import datasets, transforms

from .config import DATA_ENV, data_root, is_fast


@dataclass(frozen=True)
class DatasetInfo:
    """Every fact the course uses about one dataset, in one place."""

    cls: type  # the torchvision dataset class
    channels: int
    image_size: int  # side length in pixels
    num_classes: int
    mean: tuple  # per-channel mean of the training images (after ToTensor, in [0, 1])
    std: tuple  # per-channel standard deviation of the training images
    files: tuple  # files torchvision reads, relative to the data folder
    train_size: int  # images in the official training split
    pad: int  # padding of the random crops that augment training images
    flip: bool  # True when a mirrored image still shows the same class (not for digits)
    augment: bool  # True when the course's experiments augment its training images by default
    classes: tuple = ()  # class names in label order, where they are short enough to print
    jpeg_folder: str = ""  # an ImageFolder copy (train/<class>/*.jpg, test/...), if one is known
    fast_stand_in: bool = False  # fast mode (CI) may replace missing files by a generated stand-in


_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

DATASETS = {
    "mnist": DatasetInfo(datasets.MNIST, 1, 28, 10, (0.1307,), (0.3081,),
                         tuple(f"MNIST/raw/{f}" for f in _MNIST_FILES), 60_000, pad=2, flip=False,
                         augment=False, classes=tuple(str(d) for d in range(10))),
    "fashion_mnist": DatasetInfo(datasets.FashionMNIST, 1, 28, 10, (0.2860,), (0.3530,),
                                 tuple(f"FashionMNIST/raw/{f}" for f in _MNIST_FILES), 60_000,
                                 pad=2, flip=True, augment=False,
                                 classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                          "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")),
    "cifar10": DatasetInfo(datasets.CIFAR10, 3, 32, 10,
                           (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
                           tuple(f"cifar-10-batches-py/{f}" for f in
                                 ("batches.meta", "test_batch",
                                  *(f"data_batch_{i}" for i in range(1, 6)))), 50_000,
                           pad=4, flip=True, augment=True, fast_stand_in=True,
                           classes=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                                    "horse", "ship", "truck"),
                           jpeg_folder="CIFAR-10-images"),
    "cifar100": DatasetInfo(datasets.CIFAR100, 3, 32, 100,
                            (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
                            ("cifar-100-python/meta", "cifar-100-python/train",
                             "cifar-100-python/test"), 50_000, pad=4, flip=True, augment=True,
                            fast_stand_in=True),
}
JPEG_COPY = "CIFAR-10 (JPEG copy)"  # how every output names results made from the JPEG copy


def dataset_info(name: str) -> DatasetInfo:
    """Look a dataset up by name; an unknown name raises ``ValueError`` listing the known ones."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    return DATASETS[name]


def stand_in_label(name: str) -> str:
    """The marker every output carries when a generated stand-in replaced dataset ``name``."""
    return f"GENERATED STAND-IN, not {name}"


class StandInDataset(Dataset):
    """Generated images shaped like a real dataset: NOT real data, only for fast mode in CI.

    Each class is a fixed random pattern plus noise, so a model can learn something; the numbers
    it gives say nothing about the real dataset. ``data``: uint8 [N, C, H, W]; ``__getitem__``
    returns ``(transform(image), label)``.
    """

    stand_in = True

    def __init__(self, name: str, train: bool = True, transform=None, size: int = 2000):
        info = dataset_info(name)
        g = torch.Generator().manual_seed(1 if train else 2)
        shape = (info.channels, info.image_size, info.image_size)
        templates = torch.rand((info.num_classes, *shape), generator=torch.Generator().manual_seed(0))
        self.targets = torch.randint(info.num_classes, (size,), generator=g)
        noise = torch.rand((size, *shape), generator=g)
        self.data = (255 * (0.6 * templates[self.targets] + 0.4 * noise)).round().to(torch.uint8)
        self.transform = transform
        self.classes = [f"class {i}" for i in range(info.num_classes)]
        self.source = stand_in_label(name)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i):
        image = transforms.functional.to_pil_image(self.data[i])
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.targets[i])


def _missing_files_error(name: str, root, info: DatasetInfo, failure=None) -> FileNotFoundError:
    expected = "\n".join(f"  {root / f}" for f in info.files)
    if info.jpeg_folder:
        expected += (f"\nor the JPEG copy in ImageFolder layout:\n  {root / info.jpeg_folder}"
                     f"/{{train,test}}/<class>/*.jpg  (classes: {', '.join(info.classes)})")
    cause = f"\nThe download failed: {type(failure).__name__}: {failure}" if failure else ""
    return FileNotFoundError(
        f"The {name} files were not found in the data folder {root}.\n"
        f"Expected:\n{expected}{cause}\n"
        f"Fix: run once with internet and download=True (torchvision fetches them), or copy the files "
        f"there, or set the environment variable {DATA_ENV} to the folder that holds them "
        f"(offline course machines: COURSEKIT_DATA=../shared/data).")


def load_rgb(path) -> Image.Image:
    """Open one image file as RGB; a file that does not decode is a ``ValueError`` naming it."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, SyntaxError) as error:  # PIL's UnidentifiedImageError is an OSError
        raise ValueError(f"{path} does not decode as an image ({error}); "
                         "replace it with a good copy or delete it") from None


def jpeg_copy(folder, info: DatasetInfo, train: bool = True, transform=None) -> datasets.ImageFolder:
    """The ``ImageFolder`` copy ``folder/{train,test}/<class>/*.jpg``, checked against ``info.classes``.

    Labels follow ``info.classes`` (the official order). A missing or extra class folder is a
    ``FileNotFoundError`` / ``ValueError`` naming it.
    """
    split = Path(folder) / ("train" if train else "test")
    if not split.is_dir():
        raise FileNotFoundError(f"{split} is missing: the JPEG copy needs train/ and test/ folders "
                                "with one folder of images per class")
    found = sorted(p.name for p in split.iterdir() if p.is_dir())
    missing = [c for c in info.classes if c not in found]
    extra = [c for c in found if c not in info.classes]
    if missing:
        raise FileNotFoundError(f"class folder(s) {missing} missing in {split}; expected one folder "
                                f"per class: {', '.join(info.classes)}")
    if extra:
        raise ValueError(f"unexpected folder(s) {extra} in {split}; expected only the class folders "
                         f"{', '.join(info.classes)}: move the others away")
    dataset = datasets.ImageFolder(str(split), transform=transform, loader=load_rgb)
    assert tuple(dataset.classes) == info.classes  # sorted names are the official order
    return dataset


def default_transform(name: str, train: bool = False, augment: bool = False):
    """``ToTensor`` + the dataset's own normalization; with ``augment``, padded random crops (and
    flips where a mirrored image keeps its class) for training. Used by the per-image path."""
    info = dataset_info(name)
    steps = []
    if train and augment:
        steps.append(transforms.RandomCrop(info.image_size, padding=info.pad))
        if info.flip:
            steps.append(transforms.RandomHorizontalFlip())
    steps += [transforms.ToTensor(), transforms.Normalize(info.mean, info.std)]
    return transforms.Compose(steps)


def get_dataset(name: str, train: bool = True, root=None, download: bool = True, transform=None):
    """A dataset whose items are ``(image [C, H, W], label)``, read from the first source found.

    Sources in order: torchvision's files in the data folder; the JPEG copy
    (``info.jpeg_folder``); torchvision's download; in fast mode, for CIFAR, a generated
    stand-in (with a warning). Otherwise a ``FileNotFoundError`` says where files were looked for
    (and why a download failed). ``root``: the argument, else ``$COURSEKIT_DATA``, else a per-user
    cache folder. ``transform`` defaults to ``ToTensor`` and the dataset's normalization.
    :func:`source_of` names the source, as results must quote it.
    """
    info = dataset_info(name)
    root = data_root(root)
    transform = transform or default_transform(name)
    if all((root / f).exists() for f in info.files):
        return info.cls(str(root), train=train, transform=transform, download=False)
    if info.jpeg_folder and (root / info.jpeg_folder).is_dir():
        return jpeg_copy(root / info.jpeg_folder, info, train, transform)
    failure = None
    if download:
        try:
            return info.cls(str(root), train=train, transform=transform, download=True)
        except Exception as error:  # offline, or a broken download: its cause goes in the message
            failure = error
    if is_fast() and info.fast_stand_in:
        warnings.warn(f"{name} is not available in {root}: fast mode uses a GENERATED STAND-IN of "
                      f"the same shape. Its results are not {name} results.", stacklevel=2)
        return StandInDataset(name, train=train, transform=transform)
    raise _missing_files_error(name, root, info, failure) from None


def _innermost(data):
    """The dataset under a loader and any number of ``Subset`` wrappers."""
    data = getattr(data, "dataset", data)
    while isinstance(data, Subset):
        data = data.dataset
    return data


def uses_stand_in(data) -> bool:
    """True if a dataset or loader (possibly wrapped in ``Subset``) is a generated stand-in."""
    return bool(getattr(_innermost(data), "stand_in", False))


def source_of(data) -> str:
    """What a dataset or loader was read from, as results must name it: the dataset's name,
    ``"CIFAR-10 (JPEG copy)"``, or ``"GENERATED STAND-IN, not <name>"``.

    Told from what the dataset is: the course's own datasets (the stand-in, the tensor splits)
    carry their ``source``; an ``ImageFolder`` with a dataset's classes is its JPEG copy; a
    torchvision dataset is the dataset whose class it is.
    """
    dataset = _innermost(data)
    if isinstance(getattr(dataset, "source", None), str):
        return dataset.source
    for name, info in DATASETS.items():
        if isinstance(dataset, datasets.ImageFolder):
            if info.jpeg_folder and tuple(dataset.classes) == info.classes:
                return JPEG_COPY
        elif type(dataset) is info.cls:  # exactly: FashionMNIST is a subclass of MNIST
            return name
    raise ValueError(f"{type(dataset).__name__} is none of the course's datasets, so its source is "
                     "unknown: read it with coursekit.data.get_dataset or get_loaders")
