"""Tests for ``python -m coursekit.reproduce`` in fast mode: rows, columns, markers, resuming."""

import csv
import dataclasses
import json
import time

import pytest
import torch

from coursekit import reproduce
from coursekit.bench import count_parameters
from coursekit import runs
from coursekit.models import build_model

GRID = dict(datasets=["mnist", "cifar100"], models=["cnn", "vit"], subset=64, download=False,
            progress=False)


pytestmark = pytest.mark.needs_data("mnist")  # tests never download: a skip, or under CI a failure (conftest.py)


@pytest.fixture
def fast(monkeypatch):
    monkeypatch.setenv("COURSEKIT_FAST", "1")


def counting_fit(monkeypatch, interrupt_on=None):
    """Replace ``fit`` by one that counts its calls; call number ``interrupt_on`` acts as Ctrl-C."""
    calls = []
    real_fit = reproduce.fit

    def fit(*args, **kwargs):
        calls.append(args[0])
        history = real_fit(*args, **kwargs)
        history.interrupted = len(calls) == interrupt_on  # what fit reports after Ctrl-C
        return history

    monkeypatch.setattr(reproduce, "fit", fit)
    return calls


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_fast_grid_writes_rows_columns_and_marks_the_stand_in(fast, tmp_path, capsys):
    with pytest.warns(UserWarning, match="GENERATED STAND-IN"):
        rows = reproduce.reproduce(out=tmp_path, **GRID)
    assert {(r["model"], r["dataset"]) for r in rows} == {
        ("cnn", "mnist"), ("vit", "mnist"), ("cnn", "cifar100"), ("vit", "cifar100")}
    table = read_csv(tmp_path / "results.csv")
    assert len(table) == 4 and list(table[0]) == list(reproduce.COLUMNS)
    for r in table:
        assert 0 <= float(r["best_val_acc"]) <= 100 and 0 <= float(r["test_acc"]) <= 100
        assert float(r["ms_per_image"]) > 0 and int(r["parameters"]) > 0 and r["epochs"] == "1"
        stand_in = r["dataset"] == "cifar100"  # CIFAR-100 is never on these machines
        assert (r["data"] == "GENERATED STAND-IN, not cifar100") == stand_in
        assert r["stand_in"] == str(stand_in)
    markdown = (tmp_path / "results.md").read_text()
    assert "GENERATED STAND-IN, not cifar100" in markdown and "WARNING" in markdown
    assert "FAST MODE" in markdown
    assert "GENERATED STAND-IN, not cifar100" in capsys.readouterr().out
    assert (tmp_path / "accuracy_vs_time.png").stat().st_size > 0


def test_a_finished_pair_is_not_trained_again(fast, tmp_path, monkeypatch):
    grid = dict(GRID, datasets=["mnist"])
    first = reproduce.reproduce(out=tmp_path, **grid)
    calls = counting_fit(monkeypatch)
    again = reproduce.reproduce(out=tmp_path, **grid)
    assert calls == [] and again == first
    # other settings are another experiment: that pair is trained again
    reproduce.reproduce(out=tmp_path, **dict(grid, models=["cnn"], epochs=2))
    assert len(calls) == 1
    assert {r["model"]: r["epochs"] for r in read_csv(tmp_path / "results.csv")} == {"cnn": "2", "vit": "1"}


def test_an_interrupted_run_keeps_finished_pairs_and_resumes(fast, tmp_path, monkeypatch):
    grid = dict(GRID, datasets=["mnist"], models=["vit", "cnn"])
    calls = counting_fit(monkeypatch, interrupt_on=2)  # Ctrl-C while the second pair trains
    with pytest.raises(KeyboardInterrupt):
        reproduce.reproduce(out=tmp_path, **grid)
    assert len(calls) == 2
    assert [(r["model"], r["dataset"]) for r in read_csv(tmp_path / "results.csv")] == [("vit", "mnist")]
    assert not reproduce.pair_path(tmp_path, "cnn", "mnist").exists()
    assert not list((tmp_path / "pairs").glob(".*.tmp"))  # no half-written files left behind

    calls = counting_fit(monkeypatch)
    rows = reproduce.reproduce(out=tmp_path, **grid)
    assert len(calls) == 1 and len(rows) == 2  # only the unfinished pair was trained


def test_a_pair_stopped_mid_training_resumes_after_its_last_finished_epoch(fast, tmp_path, monkeypatch):
    grid = dict(GRID, datasets=["mnist"], models=["cnn"], epochs=2, precision="fp32")  # fp32: no probe batch
    whole = reproduce.reproduce(out=tmp_path / "whole", **grid)
    real_fit = reproduce.fit

    class StopInEpoch2:  # Ctrl-C at the first batch of the second epoch
        def __init__(self, loader):
            self.loader, self.epochs = loader, 0

        def __len__(self):
            return len(self.loader)

        def __iter__(self):
            self.epochs += 1
            for i, batch in enumerate(self.loader):
                if self.epochs == 2 and i == 1:
                    raise KeyboardInterrupt
                yield batch

    monkeypatch.setattr(reproduce, "fit", lambda model, train, *a, **k: real_fit(model, StopInEpoch2(train), *a, **k))
    out = tmp_path / "stopped"
    with pytest.raises(KeyboardInterrupt, match="finished epochs are kept"):
        reproduce.reproduce(out=out, **grid)
    [checkpoint] = (out / "pairs").glob("mnist__cnn-*.ckpt")
    saved = torch.load(checkpoint, weights_only=True)
    saved["history"]["epoch_time"][0] = 1000.0  # a slow first epoch: the resumed total must count it
    torch.save(saved, checkpoint)
    monkeypatch.setattr(reproduce, "fit", real_fit)
    start = time.perf_counter()
    resumed = reproduce.reproduce(out=out, **grid)
    wall = time.perf_counter() - start
    assert [r["test_acc"] for r in resumed] == [r["test_acc"] for r in whole]
    pair = reproduce.pair_path(out, "cnn", "mnist")
    for a, b in zip(torch.load(pair.with_suffix(".pt")).values(),
                    torch.load(reproduce.pair_path(tmp_path / "whole", "cnn", "mnist").with_suffix(".pt")).values()):
        assert torch.equal(a, b)  # the same weights as the run that was never stopped
    assert not list((out / "pairs").glob("*.ckpt"))  # a finished pair keeps no checkpoint
    record = json.loads(pair.read_text())  # its training time counts the epoch trained before the stop
    assert record["history"]["resumed_epochs"] == 1
    assert record["history"]["epoch_time"][0] == 1000.0
    assert 1000 < record["row"]["train_time_s"] <= 1000 + wall + 0.1  # the stopped epoch, and this call


def test_missing_cifar_outside_fast_mode_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COURSEKIT_FAST", "0")
    monkeypatch.setenv("COURSEKIT_DATA", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="cifar10 files were not found"):
        reproduce.reproduce(["cifar10"], ["cnn"], tmp_path / "out", download=False, progress=False)
    code = reproduce.main(["--datasets", "cifar10", "--models", "cnn", "--out", str(tmp_path / "out"),
                           "--no-download"])
    err = capsys.readouterr().err
    assert code == 2 and "cifar10 files were not found" in err and "Traceback" not in err


def test_rows_from_the_jpeg_copy_say_so(fast, jpeg_root, tmp_path, monkeypatch):
    monkeypatch.setenv("COURSEKIT_DATA", str(jpeg_root))
    rows = reproduce.reproduce(["cifar10"], ["cnn"], tmp_path / "out", subset=40, download=False,
                               progress=False)
    assert rows[0]["data"].startswith("CIFAR-10 (JPEG copy), 40 images") and not rows[0]["stand_in"]
    assert "CIFAR-10 (JPEG copy)" in (tmp_path / "out" / "results.md").read_text()


def test_settings_are_stored_and_compared_on_resume(fast, tmp_path):
    settings = runs.settings("reference", "mnist", "cnn", subset=64, epochs=1)
    assert settings.fast and settings.max_steps == 2 and settings.batch_size == 16
    reproduce.reproduce(["mnist"], ["cnn"], tmp_path, grid="reference", subset=64, epochs=1,
                        download=False, progress=False)
    record = reproduce.load_pairs(tmp_path)[0]
    assert runs.Run(**record["settings"]) == settings
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.epochs = 3


def test_bad_names_raise_before_training(tmp_path):
    with pytest.raises(ValueError, match="unknown model kind"):
        reproduce.reproduce(["mnist"], ["transformer"], tmp_path, progress=False)
    with pytest.raises(ValueError, match="unknown dataset"):
        reproduce.reproduce(["imagenet"], ["cnn"], tmp_path, progress=False)


def test_grid_presets_outside_fast_mode(monkeypatch):
    monkeypatch.setenv("COURSEKIT_FAST", "0")
    cpu = runs.settings("cpu", "cifar10", "vit")
    assert (cpu.grid, cpu.epochs, cpu.lr, cpu.fast, cpu.augment) == ("cpu", 12, 2e-3, False, True)
    assert cpu.sizes["patch_size"] == 8 and runs.settings("cpu", "mnist", "vit").sizes["patch_size"] == 7
    assert runs.settings("cpu", "mnist", "vit", epochs=5).epochs == 5
    # one model may differ from its column, and an explicit change still wins
    assert runs.settings("cpu", "cifar10", "deepvit").lr == 1e-3
    assert runs.settings("cpu", "cifar10", "cnn") == dataclasses.replace(cpu, model="cnn", sizes={})
    assert runs.settings("cpu", "cifar10", "deepvit", lr=3e-3).lr == 3e-3
    assert runs.settings("cpu", "mnist", "deepvit").lr == 2e-3
    # the hybrid trains 20 epochs on CIFAR-10 (issue #20's measurement), 4 on MNIST like its column
    hybrid = runs.settings("cpu", "cifar10", "hybrid")
    assert hybrid == dataclasses.replace(cpu, model="hybrid", epochs=20, sizes=hybrid.sizes)
    assert runs.settings("cpu", "mnist", "hybrid").epochs == 4
    assert runs.settings("reference", "cifar10", "cnn") == runs.Run("reference", "cifar10", "cnn", augment=True)
    with pytest.raises(ValueError, match="unknown grid 'gpu'; known grids: reference, cpu"):
        runs.settings("gpu", "mnist", "cnn")
    with pytest.raises(ValueError, match="grid 'notebook03' has no run of 'hybrid' on 'mnist'; "
                                         "it holds: cifar10 vit, mnist cnn, mnist vit"):
        runs.settings("notebook03", "mnist", "hybrid")
    assert "epochs          20" in str(hybrid) and "stem=((32,), (64,))" in str(hybrid)
    # the ResNet at its own sizes and its column's lr: 18 epochs on CIFAR-10, 4 on MNIST like its column
    resnet = runs.settings("cpu", "cifar10", "resnet")
    assert resnet == dataclasses.replace(cpu, model="resnet", epochs=18,
                                         sizes=dict(widths=(16, 32, 64, 128), blocks=(1, 1, 1)))
    assert runs.settings("cpu", "mnist", "resnet").epochs == 4
    assert reproduce.default_grid("cpu") == "cpu" and reproduce.default_grid("cuda") == "reference"


def test_the_grid_sizes_the_models_and_augment_reaches_the_loaders(fast, tmp_path, monkeypatch):
    seen = {}
    real_get_loaders = reproduce.get_loaders

    def get_loaders(name, **kwargs):
        seen[name] = kwargs["augment"]
        return real_get_loaders(name, **kwargs)

    monkeypatch.setattr(reproduce, "get_loaders", get_loaders)
    rows = reproduce.reproduce(["mnist"], ["vit"], tmp_path, grid="cpu", subset=64, augment=True,
                               download=False, progress=False)
    assert rows[0]["parameters"] == count_parameters(build_model("vit", "mnist", "cpu"))
    assert rows[0]["parameters"] != count_parameters(build_model("vit", "mnist", "reference"))
    assert seen == {"mnist": True}  # MNIST's own default is False


def test_estimate_leaves_the_seeded_run_alone(fast):
    settings = runs.settings("cpu", "mnist", "cnn")
    state = torch.random.get_rng_state()
    seconds = reproduce.estimate_seconds(settings, "cpu", steps=1)
    assert 0 < seconds < float("inf")
    assert torch.equal(torch.random.get_rng_state(), state)


def test_a_changed_model_setting_trains_the_pair_again(fast, tmp_path, monkeypatch, capsys):
    calls = counting_fit(monkeypatch)
    run = lambda: reproduce.reproduce(["mnist"], ["vit"], tmp_path, grid="cpu", subset=64,  # noqa: E731
                                      download=False, progress=False)
    run()
    assert reproduce.load_pairs(tmp_path)[0]["settings"]["sizes"]["patch_size"] == 7
    run()
    assert len(calls) == 1  # same run and model settings: kept
    monkeypatch.setattr(runs, "TABLE", runs.TABLE + [("cpu", runs.ANY, ("vit",), dict(sizes=dict(depth=2)))])
    run()
    assert len(calls) == 2 and "settings changed since the recorded run" in capsys.readouterr().out
    assert reproduce.load_pairs(tmp_path)[0]["settings"]["sizes"]["depth"] == 2


def test_the_chart_names_each_data_source():
    rows = [dict(model=m, dataset=d, data=data, stand_in=data.startswith("GENERATED"), test_acc=50.0,
                 ms_per_image=1.0 + i, device="cpu (2 threads)")
            for i, m in enumerate(("cnn", "vit"))
            for d, data in (("cifar10", "CIFAR-10 (JPEG copy)"), ("cifar100", "GENERATED STAND-IN, not cifar100"))]
    bars, scatter = reproduce.plot_results(rows).axes
    ticks = [t.get_text().replace("\n", " ") for t in bars.get_xticklabels()]
    assert ticks == ["CIFAR-10 (JPEG copy)", "GENERATED STAND-IN, not cifar100"]
    shapes = [t.get_text().replace("\n", " ") for t in scatter.get_legend().get_texts()]
    assert shapes == ticks  # marker shape: the data source
    assert [t.get_text() for t in bars.get_legend().get_texts()] == ["cnn", "vit"]  # colour: the model


def test_the_cpu_grids_resnet_trains_in_fast_mode_on_the_jpeg_copy(fast, jpeg_root, tmp_path, monkeypatch):
    monkeypatch.setenv("COURSEKIT_DATA", str(jpeg_root))
    rows = reproduce.reproduce(["cifar10"], ["resnet"], tmp_path, grid="cpu", subset=40, download=False,
                               progress=False)
    (row,) = rows
    resnet = build_model("resnet", "cifar10", "cpu")
    assert (row["model"], row["epochs"], row["stand_in"]) == ("resnet", 1, False)
    assert row["parameters"] == count_parameters(resnet) <= count_parameters(build_model("hybrid", "cifar10", "cpu"))
    assert row["data"].startswith("CIFAR-10 (JPEG copy), 40 images") and 0 <= row["test_acc"] <= 100
    record = reproduce.load_pairs(tmp_path)[0]
    assert record["settings"] == runs.settings("cpu", "cifar10", "resnet", subset=40).as_dict()
    state = torch.load(reproduce.pair_path(tmp_path, "resnet", "cifar10").with_suffix(".pt"))
    resnet.load_state_dict(state)  # the kept weights are the grid's ResNet's
