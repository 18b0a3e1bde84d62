"""The first floor of the data path: the datasets' facts, reading their files, naming their source."""

import urllib.error

import pytest
import torch
from torch.utils.data import DataLoader, Subset, TensorDataset

from coursekit import data, sources
from coursekit.sources import (DATASETS, JPEG_COPY, StandInDataset, dataset_info, get_dataset,
                               source_of, stand_in_label, uses_stand_in)


def test_unknown_dataset_lists_known_names():
    with pytest.raises(ValueError, match="known datasets: mnist, fashion_mnist, cifar10, cifar100"):
        get_dataset("svhn")


def test_missing_files_give_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        get_dataset("mnist", root=tmp_path, download=False)
    message = str(info.value)
    assert str(tmp_path) in message
    assert "MNIST/raw/train-images-idx3-ubyte" in message
    assert "COURSEKIT_DATA" in message
    assert info.value.__suppress_context__  # no chained traceback from torchvision


def test_failed_download_gives_the_clear_error_with_its_cause(tmp_path, monkeypatch):
    def offline(self, *args, **kwargs):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr(DATASETS["fashion_mnist"].cls, "download", offline)
    with pytest.raises(FileNotFoundError, match="FashionMNIST/raw/t10k-labels-idx1-ubyte") as info:
        get_dataset("fashion_mnist", root=tmp_path, download=True)
    assert "The download failed: URLError: <urlopen error no network>" in str(info.value)


def test_generated_files_load_through_torchvision(fake_root):
    ds = get_dataset("mnist", root=fake_root, download=False)
    image, label = ds[0]
    assert image.shape == (1, 28, 28) and image.dtype == torch.float32
    assert 0 <= label < 10 and len(ds) == 600
    assert len(get_dataset("fashion_mnist", train=False, root=fake_root, download=False)) == 200


def test_normalization_uses_each_datasets_own_statistics():
    assert dataset_info("mnist").mean != dataset_info("cifar10").mean
    for name, info in DATASETS.items():
        assert len(info.mean) == len(info.std) == info.channels, name


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_statistics_match_the_real_training_images(real_root, name):
    ds = get_dataset(name, root=real_root, download=False)
    pixels = ds.data.float() / 255
    info = dataset_info(name)
    assert pixels.mean().item() == pytest.approx(info.mean[0], abs=1e-3)
    assert pixels.std().item() == pytest.approx(info.std[0], abs=1e-3)
    normalized = torch.stack([ds[i][0] for i in range(2000)])
    assert abs(normalized.mean().item()) < 0.05 and abs(normalized.std().item() - 1) < 0.05


def test_missing_cifar_outside_fast_mode_is_an_error_naming_both_layouts(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSEKIT_FAST", "0")
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py/data_batch_1") as info:
        get_dataset("cifar10", root=tmp_path, download=False)
    assert "CIFAR-10-images/{train,test}/<class>/*.jpg" in str(info.value)


def test_a_missing_or_extra_class_folder_is_named(jpeg_root):
    (jpeg_root / "CIFAR-10-images" / "test" / "frog").rename(jpeg_root / "frog")
    with pytest.raises(FileNotFoundError, match=r"class folder\(s\) \['frog'\] missing"):
        get_dataset("cifar10", train=False, root=jpeg_root, download=False)
    (jpeg_root / "frog").rename(jpeg_root / "CIFAR-10-images" / "test" / "frog")
    (jpeg_root / "CIFAR-10-images" / "test" / "frogs").mkdir()
    with pytest.raises(ValueError, match=r"unexpected folder\(s\) \['frogs'\]"):
        get_dataset("cifar10", train=False, root=jpeg_root, download=False)


def test_the_source_is_told_from_the_dataset_not_written_onto_it(fake_root, jpeg_root, monkeypatch):
    mnist = get_dataset("mnist", root=fake_root, download=False)
    fashion = get_dataset("fashion_mnist", root=fake_root, download=False)
    jpeg = get_dataset("cifar10", root=jpeg_root, download=False)
    for dataset in (mnist, fashion, jpeg):
        assert "source" not in vars(dataset)  # nothing added to torchvision's objects
    assert source_of(mnist) == "mnist"
    assert source_of(fashion) == "fashion_mnist"  # not "mnist", though FashionMNIST subclasses MNIST
    assert source_of(jpeg) == JPEG_COPY
    assert source_of(Subset(Subset(fashion, [0, 1]), [0])) == "fashion_mnist"
    assert source_of(DataLoader(Subset(mnist, [0, 1]), batch_size=2)) == "mnist"
    monkeypatch.setenv("COURSEKIT_FAST", "1")
    with pytest.warns(UserWarning, match="GENERATED STAND-IN"):
        stand_in = get_dataset("cifar10", root=fake_root, download=False)
    assert source_of(stand_in) == stand_in_label("cifar10") and uses_stand_in(stand_in)
    assert not uses_stand_in(mnist)


def test_a_dataset_from_elsewhere_has_no_source_to_name():
    with pytest.raises(ValueError, match="TensorDataset is none of the course's datasets"):
        source_of(TensorDataset(torch.zeros(2, 1, 28, 28), torch.zeros(2)))


def test_the_stand_in_has_the_real_datasets_shape_and_its_own_label():
    ds = StandInDataset("cifar100", train=False, size=50)
    image, label = ds[0]
    assert image.size == (32, 32) and 0 <= label < 100 and len(ds) == 50  # a PIL image without transform
    assert ds.source == "GENERATED STAND-IN, not cifar100"


def test_the_names_notebooks_import_from_data_are_the_sources_own():
    """``from coursekit.data import get_dataset, dataset_info, source_of, ...`` keeps working."""
    for name in ("DATASETS", "DatasetInfo", "JPEG_COPY", "StandInDataset", "dataset_info",
                 "default_transform", "get_dataset", "jpeg_copy", "load_rgb", "source_of",
                 "stand_in_label", "uses_stand_in"):
        assert getattr(data, name) is getattr(sources, name), name
