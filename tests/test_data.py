"""The last floor of the data path: splits and loaders (and the settings config reads)."""

import pytest
import torch
from torch.utils.data import DataLoader

from coursekit import config
from coursekit.data import balanced_indices, get_loaders
from coursekit.sources import StandInDataset, default_transform, get_dataset, uses_stand_in


def test_data_root_order(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSEKIT_DATA", str(tmp_path / "env"))
    assert config.data_root(tmp_path / "arg") == tmp_path / "arg"
    assert config.data_root() == tmp_path / "env"
    monkeypatch.delenv("COURSEKIT_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert config.data_root() == tmp_path / "cache" / "coursekit" / "data"


def test_fast_mode_is_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("COURSEKIT_FAST", "1")
    assert config.is_fast() and config.fast_or(10, 1) == 1
    monkeypatch.setenv("COURSEKIT_FAST", "0")
    assert not config.is_fast() and config.fast_or(10, 1) == 10


def test_loaders_hold_validation_out_of_training(fake_root):
    train, val, test = get_loaders("mnist", batch_size=32, val_fraction=0.2, root=fake_root)
    train_idx, val_idx = set(train.dataset.indices), set(val.dataset.indices)
    assert len(train_idx) == 480 and len(val_idx) == 120 and not train_idx & val_idx
    assert len(test.dataset) == 200 and len(train) == 15
    assert train.shuffle and not val.shuffle and not test.shuffle  # shuffling is always on for training
    images, labels = next(iter(train))
    assert images.shape == (32, 1, 28, 28) and labels.shape == (32,)
    assert sum(len(y) for _, y in test) == 200


def test_tensor_batches_equal_the_per_image_path(fake_root):
    """The default (tensor) loaders give exactly the images and labels of ToTensor + Normalize."""
    tensor_loaders = get_loaders("mnist", batch_size=50, subset=300, root=fake_root)
    own = default_transform("mnist")  # any transform of your own takes the per-image path
    image_loaders = get_loaders("mnist", batch_size=50, subset=300, root=fake_root, transform=own)
    assert isinstance(image_loaders[0], DataLoader)
    for fast, slow in zip(tensor_loaders[1:], image_loaders[1:]):  # unshuffled: batch for batch
        for (x, y), (x2, y2) in zip(fast, slow):
            torch.testing.assert_close(x, x2)
            assert torch.equal(y, y2)
    assert tensor_loaders[0].dataset.indices == image_loaders[0].dataset.indices
    with pytest.raises(ValueError, match="put the augmentation into that transform"):
        get_loaders("mnist", root=fake_root, transform=own, augment=True)


def test_seeded_epochs_repeat_and_differ(fake_root):
    train, _, _ = get_loaders("mnist", batch_size=64, augment=True, root=fake_root)
    torch.manual_seed(5)
    first = [x for x, _ in train]
    torch.manual_seed(5)
    again = [x for x, _ in train]
    later = [x for x, _ in train]  # the next epoch: another order and other crops
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], later[0])


def test_subset_is_balanced_and_reproducible(fake_root):
    train, val, test = get_loaders("mnist", subset=200, seed=3, root=fake_root)
    targets = torch.as_tensor(train.dataset.dataset.targets)
    idx = train.dataset.indices + val.dataset.indices
    assert len(idx) == 200 and len(set(idx)) == 200
    assert torch.bincount(targets[idx], minlength=10).tolist() == [20] * 10
    assert torch.bincount(targets[val.dataset.indices], minlength=10).tolist() == [2] * 10
    assert len(test.dataset) == 200
    again, _, _ = get_loaders("mnist", subset=200, seed=3, root=fake_root)
    other, _, _ = get_loaders("mnist", subset=200, seed=4, root=fake_root)
    assert again.dataset.indices == train.dataset.indices
    assert other.dataset.indices != train.dataset.indices


def test_full_test_scores_every_test_image_of_a_subset_run(fake_root):
    own = default_transform("mnist")  # the per-image path too
    for kwargs in ({}, {"transform": own}):
        train, val, test = get_loaders("mnist", subset=100, root=fake_root, full_test=True, **kwargs)
        _, _, sampled = get_loaders("mnist", subset=100, root=fake_root, **kwargs)
        assert (len(train.dataset), len(val.dataset), len(test.dataset), len(sampled.dataset)) == (90, 10, 200, 100)
        assert [y for _, y in test.dataset] == get_dataset("mnist", False, fake_root).targets.tolist()  # in order


def test_balanced_indices_rejects_bad_sizes():
    with pytest.raises(ValueError, match="subset=0"):
        balanced_indices(torch.arange(10) % 2, 0)
    with pytest.raises(ValueError, match="dataset size 10"):
        balanced_indices(torch.arange(10) % 2, 11)
    with pytest.raises(ValueError, match="val_fraction"):
        get_loaders("mnist", val_fraction=1.0)


def test_augmentation_only_for_training(fake_root):
    names = lambda t: [type(s).__name__ for s in t.transforms]  # noqa: E731
    assert names(default_transform("cifar10", train=True, augment=True)) == [
        "RandomCrop", "RandomHorizontalFlip", "ToTensor", "Normalize"]
    assert "RandomHorizontalFlip" not in names(default_transform("mnist", train=True, augment=True))
    assert names(default_transform("cifar10", train=False, augment=True)) == ["ToTensor", "Normalize"]
    train, val, test = get_loaders("mnist", augment=True, root=fake_root)
    assert (train.pad, train.flip) == (2, False)  # a mirrored digit is another digit
    assert not (val.pad or val.flip or test.pad or test.flip)


def test_missing_cifar_in_fast_mode_is_a_marked_stand_in(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSEKIT_FAST", "1")
    with pytest.warns(UserWarning, match="GENERATED STAND-IN"):
        ds = get_dataset("cifar100", root=tmp_path, download=False)
    assert isinstance(ds, StandInDataset)
    image, label = ds[0]
    assert image.shape == (3, 32, 32) and 0 <= label < 100
    with pytest.warns(UserWarning):
        train, _, _ = get_loaders("cifar100", subset=300, root=tmp_path, download=False)
    assert uses_stand_in(train)


def test_real_mnist_is_not_a_stand_in(fake_root):
    train, _, _ = get_loaders("mnist", root=fake_root)
    assert not uses_stand_in(train)
