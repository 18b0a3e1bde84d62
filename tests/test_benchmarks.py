"""The benchmark scripts measure what they say: the recipe search trains on the homework's data."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from coursekit import bench, homework, reproduce, train, viz

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.needs_data("fashion_mnist")
def test_recipe_search_sees_the_homework_split_and_normalization(real_root, monkeypatch):
    monkeypatch.setenv("COURSEKIT_FAST", "0")  # the full split, as the search and the notebook use
    recipes = load("homework_recipes")
    data = recipes.DeviceData("cpu")
    train, val, test = homework.loaders()
    assert (len(data.train_x), len(data.val_x), len(data.test_x)) == (54_000, 6_000, 10_000)
    for i in (0, 1234, 5999):
        image, label = val.dataset[i]
        torch.testing.assert_close(data.val_x[i], image)
        assert int(data.val_y[i]) == label
    image, label = train.dataset[777]
    torch.testing.assert_close(data.normalize(data.train_x[777:778])[0], image)
    torch.testing.assert_close(data.test_x[9999], test.dataset[9999][0])


def test_recipe_augmentation_is_a_padded_crop_or_its_mirror():
    recipes = load("homework_recipes")
    torch.manual_seed(0)
    images = torch.rand(64, 28, 28)
    out = recipes.augment(images)
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    for image, crop in zip(padded, out):
        windows = [image[dy:dy + 28, dx:dx + 28] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(crop, w) or torch.equal(crop, w.flip(-1)) for w in windows)
    assert not torch.equal(out, images)  # something moved


def test_every_recipe_is_a_valid_homework_answer():
    recipes = json.loads((BENCHMARKS / "homework_recipes.json").read_text())
    assert len({r["name"] for r in recipes}) == len(recipes)
    for recipe in recipes:
        if recipe.get("kind", "vit") == "vit":
            config = recipe["cfg"]
            n_patches = (28 // config["patch_size"]) ** 2
            result = homework.score_config(config, n_patches)
            assert result["credit"] == 1, (recipe["name"], result["feedback"])


def test_step_time_benchmark_times_a_training_step():
    bench = load("vit_step_time")
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    before = model[1].weight.detach().clone()
    assert bench.step_ms(model, batch_size=8, steps=3, warmup=1) > 0
    assert not torch.equal(model[1].weight, before)  # the optimizer really stepped


def test_the_test_set_attack_trains_the_reference_solutions_vit_and_scores_its_share():
    attack = load("test_set_attack")
    config = attack.solution_config()
    assert homework.score_config(config, (28 // config["patch_size"]) ** 2)["credit"] == 1
    assert attack.share(homework.THRESHOLDS["ViT"]) == 1 and attack.share(homework.FLOORS["ViT"]) == 0
    assert attack.share(0.875) == pytest.approx(0.5)


def test_the_data_size_sweep_trains_each_fraction_once_and_draws_it(jpeg_root, tmp_path, monkeypatch):
    monkeypatch.setenv("COURSEKIT_FAST", "1")
    monkeypatch.setenv("COURSEKIT_DATA", str(jpeg_root))
    monkeypatch.setattr(train, "choose_precision", lambda *args, **kwargs: "fp32")  # CI seconds, not tested here
    sweep = load("data_size")
    results = tmp_path / "points.jsonl"
    assert sweep.main(["--runs", str(tmp_path / "runs"), "--results", str(results)]) == 0
    points = bench.read_jsonl(results)
    trained = {(p["model"], p["fraction"]): p for p in points if p["fast"]}
    assert set(trained) == {(m, f) for m in ("vit", "resnet", "hybrid") for f in (0.1, 0.3)}
    for (model, fraction), p in trained.items():  # fractions of fast mode's 128 images, split 90/10
        assert (p["train_images"], p["val_images"]) == {0.1: (12, 1), 0.3: (34, 4)}[fraction]
        assert p["data"] == "CIFAR-10 (JPEG copy)" and p["epochs"] == 1 and 0 <= p["test_acc"] <= 100
    full = {p["model"]: p for p in points if p["fraction"] == 1.0}  # the shipped CPU grid's runs
    assert {"vit", "hybrid"} <= set(full) and not any(p["fast"] for p in full.values())
    assert {(p["train_images"], p["test_images"]) for p in full.values()} == {(45_000, 10_000)}
    assert results.with_suffix(".png").exists()

    def no_training(*args, **kwargs):
        raise AssertionError("a finished pair was trained again")

    monkeypatch.setattr(reproduce, "fit", no_training)  # a rerun reads every pair back
    assert sweep.main(["--runs", str(tmp_path / "runs"), "--results", str(results)]) == 0
    assert bench.read_jsonl(results) == points
    assert sweep.main(["--results", str(sweep.RESULTS)]) == 2  # fast mode never writes the committed file

    (ax,) = viz.plot_data_size(points).axes
    assert ax.get_xscale() == "log"
    assert [t.get_text().split()[0] for t in ax.get_legend().get_texts()] == ["vit", "resnet", "hybrid"]
