"""coursekit.runs: the one table of run settings is well formed, and a run says everything it trains with."""

import dataclasses

import pytest

from coursekit import runs
from coursekit.models import KINDS, build_run
from coursekit.sources import DATASETS


def test_every_row_names_known_datasets_and_run_fields():
    names = {f.name for f in dataclasses.fields(runs.Run)}
    for grid, datasets, models, changes in runs.TABLE:
        assert grid in runs.GRIDS
        assert datasets == runs.ANY or set(datasets) <= set(DATASETS), datasets
        assert models == runs.ANY or set(models) <= set(KINDS), models
        assert set(changes) <= names - {"grid", "dataset", "model", "fast"}, changes


def test_printing_a_run_shows_every_setting_with_its_meaning():
    run = runs.settings("cpu", "cifar10", "hybrid", fast=False)
    text = str(run)
    for f in dataclasses.fields(runs.Run)[4:]:
        assert f"  {f.name} " in text and f.metadata["doc"] in text
    assert "sizes: dim=128, depth=4" in text and "augment         True" in text


def test_sizes_add_up_row_by_row_and_changes_win(monkeypatch):
    monkeypatch.setattr(runs, "TABLE", runs.TABLE + [("cpu", ("mnist",), ("vit",), dict(sizes=dict(depth=2), lr=5e-4))])
    run = runs.settings("cpu", "mnist", "vit", fast=False, lr=1e-2, epochs=None)
    assert run.sizes["depth"] == 2 and run.sizes["patch_size"] == 7 and run.sizes["dim"] == 128
    assert run.lr == 1e-2 and run.epochs == 4  # a change of None leaves the table's value


def test_fast_mode_is_read_from_the_environment_or_given(monkeypatch):
    monkeypatch.setenv("COURSEKIT_FAST", "1")
    fast = runs.settings("cpu", "mnist", "cnn")
    assert (fast.fast, fast.epochs, fast.batch_size, fast.subset, fast.max_steps) == (True, 1, 16, 128, 2)
    assert not runs.settings("cpu", "mnist", "cnn", fast=False).fast


def test_a_run_builds_the_same_model_every_time():
    run = runs.settings("notebook03", "mnist", "vit", fast=False)
    a, b = build_run(run), build_run(run)
    assert all((x == y).all() for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert a.pos_embedding.shape[-2] == 17  # 16 patches of 7x7 and the class token


def test_bad_names_are_clear():
    with pytest.raises(ValueError, match="unknown dataset"):
        runs.settings("cpu", "imagenet", "cnn")
