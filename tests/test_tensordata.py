"""The JPEG copy of CIFAR-10, the decoded-tensor cache, and whole-batch augmentation."""

import os

import numpy as np
import pytest
import torch
from conftest import CIFAR10_CLASSES as CLASSES, brightness
from PIL import Image

from coursekit import tensordata
from coursekit.data import get_loaders
from coursekit.sources import JPEG_COPY, get_dataset, source_of
from coursekit.tensordata import augment_batch, load_split


def test_the_jpeg_copy_is_read_in_official_label_order(jpeg_root):
    dataset = get_dataset("cifar10", root=jpeg_root, download=False)
    assert dataset.classes == list(CLASSES) and len(dataset) == 40 and source_of(dataset) == JPEG_COPY
    split = load_split("cifar10", train=False, root=jpeg_root, download=False)
    assert split.images.shape == (20, 3, 32, 32) and split.images.dtype == torch.uint8
    assert split.targets.tolist() == [c for c in range(10) for _ in range(2)]
    middle = split.images[:, :, 16, 16].float().mean(1)  # away from the mark
    expected = torch.tensor([brightness(c) for c in split.targets.tolist()]).float()
    assert (middle - expected).abs().max() < 4
    train, _, test = get_loaders("cifar10", batch_size=8, root=jpeg_root, download=False)
    assert source_of(train) == source_of(test) == JPEG_COPY


def test_a_file_that_does_not_decode_is_named(jpeg_root):
    bad = jpeg_root / "CIFAR-10-images" / "train" / "cat" / "0002.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="0002.jpg does not decode as an image"):
        load_split("cifar10", root=jpeg_root, download=False)


def test_the_cache_is_built_once_and_rebuilt_when_the_source_changes(jpeg_root, monkeypatch):
    decoded = []
    real_decode = tensordata._decode
    monkeypatch.setattr(tensordata, "_decode", lambda ds: decoded.append(1) or real_decode(ds))
    first = load_split("cifar10", root=jpeg_root, download=False)
    again = load_split("cifar10", root=jpeg_root, download=False)
    assert len(decoded) == 1 and torch.equal(first.images, again.images)
    cache = jpeg_root.parent / "cache"
    assert [p.name.startswith("cifar10-train-") for p in cache.iterdir()] == [True]
    assert not list(cache.glob(".*.tmp"))  # no half-written file left behind

    changed = jpeg_root / "CIFAR-10-images" / "train" / "dog" / "0001.jpg"
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(changed)
    os.utime(changed, ns=(1, 1))  # a new file with another modification time
    rebuilt = load_split("cifar10", root=jpeg_root, download=False)
    assert len(decoded) == 2 and not torch.equal(rebuilt.images, first.images)
    assert len(list(cache.iterdir())) == 1  # the stale cache file was removed


def test_a_read_only_data_folder_is_never_written(jpeg_root):
    before = sorted(p for p in jpeg_root.rglob("*"))
    load_split("cifar10", root=jpeg_root, download=False)
    assert sorted(p for p in jpeg_root.rglob("*")) == before


def test_a_crop_is_a_window_of_the_padded_image_and_a_flip_is_a_flip():
    images = torch.randint(0, 256, (32, 3, 8, 8), dtype=torch.uint8)
    g = torch.Generator().manual_seed(0)
    out = augment_batch(images, pad=2, flip=True, generator=g)
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    flipped = 0
    for image, crop in zip(padded, out):
        windows = [image[:, dy:dy + 8, dx:dx + 8] for dy in range(5) for dx in range(5)]
        plain = any(torch.equal(crop, w) for w in windows)
        mirrored = any(torch.equal(crop, w.flip(-1)) for w in windows)
        assert plain or mirrored
        flipped += mirrored and not plain
    assert 4 < flipped < 28  # about half are mirrored
    again = augment_batch(images, pad=2, flip=True, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, again)  # a seeded generator repeats exactly
    only_flip = augment_batch(images, flip=True, generator=torch.Generator().manual_seed(1))
    assert all(torch.equal(a, b) or torch.equal(a, b.flip(-1)) for a, b in zip(only_flip, images))
    assert torch.equal(augment_batch(images), images)
    before = images.clone()
    augment_batch(images, flip=True, generator=torch.Generator().manual_seed(2))
    assert torch.equal(images, before), "the caller's batch was changed in place"


def test_a_stand_in_is_never_cached_and_keeps_its_label(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSEKIT_FAST", "1")
    monkeypatch.setenv("COURSEKIT_CACHE", str(tmp_path / "cache"))
    with pytest.warns(UserWarning, match="GENERATED STAND-IN"):
        train, _, _ = get_loaders("cifar100", subset=200, root=tmp_path / "empty", download=False)
    assert source_of(train) == "GENERATED STAND-IN, not cifar100"
    assert not (tmp_path / "cache").exists()
