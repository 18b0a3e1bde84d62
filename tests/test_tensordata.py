"""The JPEG copy of CIFAR-10, the decoded-tensor cache, and whole-batch augmentation."""

import os
import pickle
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import CIFAR10_CLASSES as CLASSES, RunsCode, brightness, make_mnist_like
from PIL import Image
from torchvision.transforms import Normalize

from coursekit import tensordata
from coursekit.data import get_loaders
from coursekit.sources import JPEG_COPY, dataset_info, get_dataset, source_of
from coursekit.tensordata import TensorLoader, TensorSplit, augment_batch, load_split, normalize


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


def test_each_layout_decodes_to_images_n_c_h_w_and_long_labels():
    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 256, (5, 6, 4, 3), dtype=np.uint8)  # torchvision's CIFAR: [N, H, W, C]
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    images, targets = tensordata._decode(SimpleNamespace(data=hwc, targets=labels))
    assert torch.equal(images, torch.from_numpy(hwc).permute(0, 3, 1, 2)) and images.is_contiguous()
    assert targets.dtype == torch.long and targets.tolist() == [3, 1, 4, 1, 5]
    gray = torch.randint(0, 256, (5, 6, 4), dtype=torch.uint8)  # MNIST: [N, H, W]
    assert torch.equal(tensordata._decode(SimpleNamespace(data=gray, targets=labels))[0], gray.unsqueeze(1))
    nchw = torch.randint(0, 256, (5, 3, 6, 4), dtype=torch.uint8)  # the generated stand-in: [N, C, H, W]
    assert torch.equal(tensordata._decode(SimpleNamespace(data=nchw, targets=labels))[0], nchw)


def test_a_colour_image_is_normalized_per_channel_as_torchvision_does(jpeg_root):
    split = load_split("cifar10", train=False, root=jpeg_root, download=False)
    info = dataset_info("cifar10")
    expected = Normalize(info.mean, info.std)(split.images[7].float() / 255)
    image, label = split[7]
    assert torch.allclose(image, expected, atol=1e-6) and label == 3
    batch, labels = next(iter(TensorLoader(split, batch_size=4)))
    assert torch.allclose(batch[3], Normalize(info.mean, info.std)(split.images[3].float() / 255), atol=1e-6)


def test_every_path_keeps_the_name_source_and_class_names(jpeg_root, tmp_path, monkeypatch):
    cached = load_split("cifar10", train=False, root=jpeg_root, download=False)
    again = load_split("cifar10", train=False, root=jpeg_root, download=False)  # read from the cache
    uncached = load_split("cifar10", train=False, root=jpeg_root, download=False, cache=False)
    for split in (cached, again, uncached):
        assert (split.name, split.source, split.classes) == ("cifar10", JPEG_COPY, list(CLASSES))
        assert torch.equal(split.images, cached.images) and torch.equal(split.targets, cached.targets)
    assert [p.name.split("-")[:2] for p in (jpeg_root.parent / "cache").iterdir()] == [["cifar10", "test"]]
    monkeypatch.setenv("COURSEKIT_FAST", "1")
    with pytest.warns(UserWarning, match="GENERATED STAND-IN"):
        stand_in = load_split("cifar100", root=tmp_path / "empty", download=False)
    assert stand_in.stand_in and stand_in.classes == [f"class {c}" for c in range(100)]


def test_uncached_decoding_writes_nothing(jpeg_root):
    load_split("cifar10", root=jpeg_root, download=False, cache=False)
    assert not (jpeg_root.parent / "cache").exists()


def test_load_split_passes_its_arguments_to_the_dataset(fake_root, monkeypatch):
    calls = []
    real = tensordata.get_dataset
    monkeypatch.setattr(tensordata, "get_dataset", lambda *a: calls.append(a) or real(*a))
    load_split("mnist", train=False, root=fake_root)
    load_split("mnist", root=fake_root, download=False)
    assert calls == [("mnist", False, fake_root, True), ("mnist", True, fake_root, False)]


def test_a_changed_idx_file_is_decoded_again(fake_root, monkeypatch):
    monkeypatch.setenv("COURSEKIT_DATA", str(fake_root / "elsewhere"))  # the argument decides, not this
    first = load_split("mnist", train=False, root=fake_root, download=False)
    make_mnist_like(fake_root, "MNIST", seed=5)  # other pixels in the same files
    changed = fake_root / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    os.utime(changed, ns=(1, 1))
    second = load_split("mnist", train=False, root=fake_root, download=False)
    assert not torch.equal(first.images, second.images)


def test_a_cache_that_does_not_load_is_decoded_again_and_never_run(jpeg_root, tmp_path):
    good = load_split("cifar10", train=False, root=jpeg_root, download=False)
    (path,) = (jpeg_root.parent / "cache").iterdir()
    ran = tmp_path / "ran"
    path.write_bytes(pickle.dumps(RunsCode(ran), protocol=2))  # a file that would run code if unpickled freely
    with pytest.warns(UserWarning, match=r"not a readable cache \(UnpicklingError\)") as caught:
        split = load_split("cifar10", train=False, root=jpeg_root, download=False)
    assert outside_coursekit(caught[0].filename)  # the warning points at the caller's line
    assert not ran.exists() and torch.equal(split.images, good.images)
    assert torch.equal(torch.load(path, weights_only=True)["images"], good.images)  # written afresh


def outside_coursekit(filename: str) -> bool:
    """A warning's file is the caller's, not coursekit's own (a mutation tool may add a frame between)."""
    return Path(tensordata.__file__).parent not in Path(filename).parents


def test_an_unwritable_cache_folder_costs_only_a_warning(jpeg_root, tmp_path, monkeypatch):
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("COURSEKIT_CACHE", str(blocked))
    with pytest.warns(UserWarning, match="could not write the decoded cifar10 cache") as caught:
        split = load_split("cifar10", train=False, root=jpeg_root, download=False)
    assert "set COURSEKIT_CACHE to a folder you can write" in str(caught[0].message)
    assert outside_coursekit(caught[0].filename) and len(split) == 20


def test_batch_size_must_be_at_least_one(jpeg_root):
    split = load_split("cifar10", train=False, root=jpeg_root, download=False)
    assert [len(labels) for _, labels in TensorLoader(split, batch_size=1)] == [1] * 20
    assert len(TensorLoader(split, batch_size=6)) == 4
    larger = TensorSplit("cifar10", torch.zeros(257, 3, 32, 32, dtype=torch.uint8), torch.zeros(257), "zeros")
    assert [len(labels) for _, labels in TensorLoader(larger)] == [128, 128, 1]  # 128 by default
    with pytest.raises(ValueError, match="batch_size=0 must be at least 1"):
        TensorLoader(split, batch_size=0)


def plain(split: TensorSplit) -> torch.Tensor:
    return normalize(split.images, split.mean, split.std)


@pytest.mark.parametrize("options", [dict(shuffle=True), dict(pad=2), dict(flip=True)])
def test_an_epoch_draws_one_number_from_torchs_generator(jpeg_root, options):
    """The order and augmentation of an epoch come from one seed drawn from torch's global generator:
    the draws a model makes (initialization, dropout) do not depend on the data's size."""
    split = load_split("cifar10", train=False, root=jpeg_root, download=False)
    loader = TensorLoader(split, batch_size=8, **options)
    torch.manual_seed(0)
    epoch = torch.cat([images for images, _ in loader])
    after = torch.rand(3)
    torch.manual_seed(0)
    torch.randint(2**62, ())
    assert torch.equal(after, torch.rand(3))
    assert not torch.equal(epoch, plain(split))  # each option changes something
    torch.manual_seed(0)
    assert torch.equal(epoch, torch.cat([images for images, _ in loader]))  # and repeats exactly


def test_each_augmentation_does_its_own_part(jpeg_root):
    split = load_split("cifar10", train=False, root=jpeg_root, download=False)
    torch.manual_seed(1)
    cropped = torch.cat([images for images, _ in TensorLoader(split, batch_size=8, pad=2)])
    flipped = torch.cat([images for images, _ in TensorLoader(split, batch_size=8, flip=True)])
    original = plain(split)
    assert not all(torch.equal(a, b) or torch.equal(a, b.flip(-1)) for a, b in zip(cropped, original))
    assert all(torch.equal(a, b) or torch.equal(a, b.flip(-1)) for a, b in zip(flipped, original))
    assert not torch.equal(flipped, original)


def test_shuffled_epochs_differ_and_seeds_are_drawn_from_a_wide_range(jpeg_root):
    split = load_split("cifar10", root=jpeg_root, download=False)
    loader = TensorLoader(split, batch_size=40, shuffle=True)
    orders = set()
    for seed in range(60):
        torch.manual_seed(seed)
        (_, labels), = loader
        orders.add(tuple(labels.tolist()))
    assert sorted(next(iter(orders))) == sorted(split.targets.tolist())
    assert len(orders) == 60  # a seed drawn from a small range would repeat orders within 60 epochs


def test_crops_reach_every_offset_from_zero_to_twice_the_padding():
    images = torch.arange(25, dtype=torch.uint8).view(1, 1, 5, 5).repeat(400, 1, 1, 1)
    crops = augment_batch(images, pad=1, generator=torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(images[0], (1, 1, 1, 1))
    offsets = {(dy, dx) for crop in crops for dy in range(3) for dx in range(3)
               if torch.equal(crop, padded[:, dy:dy + 5, dx:dx + 5])}
    assert offsets == {(dy, dx) for dy in range(3) for dx in range(3)}
