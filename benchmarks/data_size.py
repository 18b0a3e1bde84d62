"""The data-size lesson measured: the CPU grid's ResNet, ViT and hybrid trained on 10% and 30% of CIFAR-10.

Issue #30 §1. Each model trains with its CPU-grid run, ``coursekit.runs.settings("cpu", "cifar10",
kind)``: the same epochs, learning rate, batch size and augmentation as on the whole training set,
on a class-balanced sample of FRACTION x 50,000 training images that ``get_loaders`` splits 90/10
into training and validation (10%: 4,500 + 500; 30%: 13,500 + 1,500). The epochs are fixed, so
less data means fewer steps, as when the ViT paper trained on subsets of JFT-300M with the same
hyper-parameters. As in ``python -m coursekit.reproduce`` the validation split picks the epoch;
then every one of the 10,000 test images is scored once, whatever the fraction
(``run_pair(..., full_test=True)``). The 100% points are the CPU grid's full runs, read from the
course's shipped weights (``weights/05_cpu_cifar10_<kind>.safetensors``), when a file is there and
was made by the same run.

    PYTHONPATH=. OMP_NUM_THREADS=1 COURSEKIT_DATA=... python benchmarks/data_size.py [--runs runs/data_size]

Trains the missing (kind, fraction) pairs, cheapest first, into ``RUNS/<percent>pct/pairs/`` with
``coursekit.reproduce.run_pair`` (a rerun skips finished pairs and resumes the one in progress
after its last finished epoch) and, after each, rewrites ``--results`` (default
``benchmarks/results/data_size_cifar10_cpu.jsonl``, one line per point) and its figure
(``.png``). Notebook 05 reads the file with ``coursekit.bench.read_jsonl`` and draws it with
``coursekit.viz.plot_data_size``. ``COURSEKIT_FAST=1``: fractions of the fast-mode subset (128
images), 2 batches per epoch, into a temporary folder (never the committed file): seconds, for CI.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

from coursekit import bench, config, weights
from coursekit.files import save_atomically
from coursekit.reproduce import run_pair
from coursekit.runs import settings
from coursekit.sources import dataset_info
from coursekit.viz import plot_data_size

RESULTS = Path(__file__).parent / "results" / "data_size_cifar10_cpu.jsonl"
KINDS = ("vit", "resnet", "hybrid")  # cheapest first
FRACTIONS = (0.1, 0.3)
TEST_IMAGES = 10_000  # CIFAR-10's test split


def subset_run(kind: str, fraction: float):
    """The CPU grid's run of ``kind`` on CIFAR-10, on ``fraction`` of its training images."""
    run = settings("cpu", "cifar10", kind)
    pool = run.subset or dataset_info("cifar10").train_size  # fast mode: its 128 images
    return settings("cpu", "cifar10", kind, subset=round(fraction * pool))


def point(record: dict, fraction: float, images: dict, made_by: str) -> dict:
    """One line of the results file, from a ``run_pair`` record (or a shipped file's)."""
    row, run = record["row"], record["settings"]
    return dict(model=row["model"], dataset=row["dataset"], data=row["data"].split(", ")[0],
                fraction=fraction, train_images=images["train"], val_images=images["val"],
                test_images=images["test"], epochs=row["epochs"], lr=run["lr"], batch_size=run["batch_size"],
                augment=run["augment"], best_epoch=row["best_epoch"], best_val_acc=row["best_val_acc"],
                test_acc=row["test_acc"], train_s=row["train_time_s"], precision=row["precision"],
                threads=record.get("threads"), machine=record.get("machine", "not recorded"),
                date=record.get("date"), made_by=made_by, fast=run["fast"])


def full_points() -> list[dict]:
    """The 100% points: the shipped CPU-grid files of ``KINDS`` made by the runs this script uses."""
    points, n = [], dataset_info("cifar10").train_size
    images = dict(train=n - round(0.1 * n), val=round(0.1 * n), test=TEST_IMAGES)  # get_loaders' split
    for kind in KINDS:
        name = f"05_cpu_cifar10_{kind}"
        try:
            _, info = weights.load(name)
        except (ValueError, FileNotFoundError) as error:
            print(f"100% point of {kind}: MISSING ({error})")
            continue
        if info["run"] != settings("cpu", "cifar10", kind, fast=False).as_dict():
            print(f"100% point of {kind}: LEFT OUT, {name} was made by another run ({info['run']})")
            continue
        made = {k: info[k] for k in ("date", "machine", "threads")}  # older records lack them
        points.append(point({**info["record"], **made}, 1.0, images, f"shipped weights {name}"))
    return points


def write(points: list[dict], results: Path) -> None:
    """The results file (one JSON line per point, by model and size) and its figure beside it."""
    points = sorted(points, key=lambda p: (KINDS.index(p["model"]), p["train_images"]))
    save_atomically("".join(json.dumps(p) + "\n" for p in points), results)
    if points:
        plot_data_size(points).savefig(results.with_suffix(".png"), dpi=120)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=None,
                        help="where pairs are trained and kept (default runs/data_size; fast mode: a temporary folder)")
    parser.add_argument("--results", type=Path, default=None, help=f"the .jsonl to write (default {RESULTS})")
    parser.add_argument("--fractions", default=",".join(map(str, FRACTIONS)), help="of the training set")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    fast = config.is_fast()
    runs = args.runs or (Path(tempfile.mkdtemp(prefix="data_size_")) if fast else Path("runs/data_size"))
    results = args.results or (runs / "data_size_fast.jsonl" if fast else RESULTS)
    if fast and results.resolve() == RESULTS.resolve():
        print(f"error: fast mode never writes {RESULTS}; pass another --results", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    print(f"{bench.environment()}; runs in {runs}, results in {results}", flush=True)
    points = full_points()
    try:
        for fraction in (float(f) for f in args.fractions.split(",")):
            for kind in KINDS:
                run = subset_run(kind, fraction)
                print(f"{kind} on {fraction:.0%} ({run.subset} images): {run.epochs} epochs, lr {run.lr:g}, "
                      f"batch {run.batch_size}, augment {run.augment}", flush=True)
                record = run_pair(run, runs / f"{round(100 * fraction)}pct", device="cpu", download=False,
                                  progress=not fast, full_test=not fast)
                if not fast and (record["stand_in"] or record["images"]["test"] != TEST_IMAGES):
                    raise ValueError(f"{kind} on {fraction:.0%}: not the real CIFAR-10 scored on all "
                                     f"{TEST_IMAGES:,} test images ({record['row']['data']}, {record['images']})")
                points.append(point(record, fraction, record["images"], "benchmarks/data_size.py"))
                print(json.dumps(points[-1]), flush=True)
                write(points, results)
    except KeyboardInterrupt:
        print(f"Interrupted: finished pairs and the finished epochs of the one in progress are kept in "
              f"{runs}; run the same command to go on.")
        return 130
    finally:
        write(points, results)
    columns = ["model", "fraction", "train_images", "epochs", "best_val_acc", "test_acc", "train_s"]
    print(bench.markdown_table(sorted(points, key=lambda p: (KINDS.index(p["model"]), p["fraction"])), columns))
    return 0


if __name__ == "__main__":
    sys.exit(main())
