"""Rebuild the course's results table: train every (model, dataset) pair and measure it.

    python -m coursekit.reproduce --grid reference --datasets mnist,cifar10,cifar100 \\
        --models cnn,vit,deepvit,hybrid --out results

How each pair is built and trained is its run in :mod:`coursekit.runs` (``--epochs``, ``--lr``, ...
change it); ``COURSEKIT_FAST=1`` trains a few steps on tiny subsets (CI).

The method avoids the reference table's flaws: each dataset's own normalization, augmentation on
CIFAR, shuffled training batches, a validation split held out of the training set that picks the
epoch (the test set is scored once, with those weights), and timing after warm-up with
synchronization (:func:`coursekit.bench.inference_time_ms`).

Every finished pair is written at once to ``OUT/pairs/<dataset>__<model>.json`` (atomically), so a
rerun skips it, and every finished epoch of the pair in progress to a checkpoint it resumes from:
an interrupted run loses at most the epoch in progress; ``results.csv``,
``results.md`` and ``accuracy_vs_time.png`` are rebuilt from all finished pairs in ``OUT``.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import hashlib
import io
import json
import sys
import textwrap
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import bench, config
from .data import DATASETS, dataset_info, get_loaders, source_of, uses_stand_in
from .files import save_atomically
from .models import KINDS, build_model, build_run
from .runs import GRIDS, Run, settings
from .train import PRECISIONS, choose_precision, evaluate, fit, step_seconds

# column key -> header in results.md; results.csv uses the keys
COLUMNS = {
    "model": "model", "dataset": "dataset", "data": "data", "stand_in": "stand-in",
    "best_val_acc": "best val acc (%)", "test_acc": "test acc at best val epoch (%)",
    "ms_per_image": "ms/image (batch 1)", "ms_per_batch_256": "ms/batch of 256",
    "parameters": "parameters", "epochs": "epochs", "best_epoch": "best epoch",
    "train_time_s": "training time (s)", "precision": "precision", "device": "device",
}


def default_grid(device) -> str:
    """The grid a machine can train: ``"reference"`` on a GPU, ``"cpu"`` anywhere else."""
    return "reference" if torch.device(device).type == "cuda" else "cpu"


def pair_path(out, model: str, dataset: str) -> Path:
    """Where the finished pair's row and history live: ``out/pairs/<dataset>__<model>.json``."""
    return Path(out) / "pairs" / f"{dataset}__{model}.json"


def load_pairs(out) -> list[dict]:
    """Every finished pair in ``out``: dicts with ``row``, ``history`` and ``settings``."""
    files = sorted((Path(out) / "pairs").glob("*.json"))
    return [json.loads(f.read_text()) for f in files]


def device_label(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"{device.type} ({torch.get_num_threads()} threads)"


def run_pair(run: Run, out, *, device="auto", download: bool = True, progress: bool = True,
             full_test: bool = False) -> dict:
    """Train and measure one pair, unless ``out`` already holds it with the same settings.

    Returns the finished record ``{"row", "history", "settings", "stand_in", "images"}``
    (``settings``: ``run.as_dict()``; ``images``: how many trained, validated and were tested).
    ``full_test``: score every test image even when ``run.subset`` samples the training set (the
    data-size sweep, ``benchmarks/data_size.py``); it applies when the pair is trained.
    Ctrl-C during training raises ``KeyboardInterrupt`` and records nothing: a half-trained pair is
    not a result. But every finished epoch is kept in a checkpoint
    (:func:`checkpoint_path`), and the next call with the same settings resumes after it.
    """
    model, dataset = run.model, run.dataset
    path = pair_path(out, model, dataset)
    if path.exists():
        record = json.loads(path.read_text())
        if record["settings"] == run.as_dict():
            return record
        print(f"{dataset}/{model}: settings changed since the recorded run, training again")
    device = config.get_device(device)
    train_loader, val_loader, test_loader = get_loaders(
        dataset, batch_size=run.batch_size, subset=run.subset, augment=run.augment, seed=run.seed,
        download=download, full_test=full_test)
    stand_in = uses_stand_in(train_loader)
    if stand_in:
        print(f"WARNING: {dataset}: {source_of(train_loader)}. Its numbers say nothing about {dataset}.")
    net = build_run(run)
    checkpoint = checkpoint_path(out, run, source_of(train_loader), device)
    start = time.perf_counter()
    history = fit(net, train_loader, val_loader, epochs=run.epochs, lr=run.lr, device=device, seed=run.seed,
                  label_smoothing=run.label_smoothing, max_steps=run.max_steps, progress=progress,
                  precision=run.precision, checkpoint=checkpoint, resume=True)
    train_time = history.resumed_seconds + time.perf_counter() - start
    if history.interrupted:
        kept = f"its finished epochs are kept in {checkpoint}" if checkpoint.exists() else "no epoch had finished"
        raise KeyboardInterrupt(f"{dataset}/{model} interrupted; {kept}")
    test = evaluate(net, test_loader, device, history.precision)  # best-validation weights, once
    info = dataset_info(dataset)
    shape = (info.channels, info.image_size, info.image_size)
    if run.fast:  # quick timing, and no batch of 256: its three passes cost CI seconds
        ms_1, ms_256 = bench.inference_time_ms(net, shape, 1, device, warmup=1, min_run_time=0.05), None
    else:
        ms_1, ms_256 = (bench.inference_time_ms(net, shape, b, device) for b in (1, 256))
    data = source_of(train_loader)
    if not stand_in and run.subset:
        data += f", {run.subset} images" + (f", FAST MODE ({run.max_steps} batches/epoch)" if run.max_steps else "")
    row = dict(model=model, dataset=dataset, data=data, stand_in=stand_in,
               best_val_acc=round(100 * history.best_val_acc, 2), test_acc=round(100 * test["acc"], 2),
               ms_per_image=round(ms_1, 3),
               ms_per_batch_256=None if ms_256 is None else round(ms_256, 2),
               parameters=bench.count_parameters(net), epochs=len(history.train_loss),
               best_epoch=history.best_epoch + 1, train_time_s=round(train_time, 1),
               precision=history.precision, device=device_label(device))
    images = {k: len(loader.dataset) for k, loader in
              (("train", train_loader), ("val", val_loader), ("test", test_loader))}
    record = dict(row=row, history=history.as_dict(), settings=run.as_dict(), stand_in=stand_in, images=images,
                  date=datetime.date.today().isoformat(), **bench.provenance())
    save_atomically(net.state_dict(), path.with_suffix(".pt"))  # for attention maps later
    save_atomically(json.dumps(record, indent=1), path)  # the "finished" mark, last
    for stale in path.parent.glob(f"{dataset}__{model}-*.ckpt"):  # this run's, and any of older settings
        stale.unlink(missing_ok=True)
    return record


def checkpoint_path(out, run: Run, data: str, device) -> Path:
    """Where a pair's unfinished training is kept, epoch by epoch: ``out/pairs/<dataset>__<model>-<h>.ckpt``,
    ``h`` a digest of its settings, data source and device type, so no other run resumes it."""
    key = json.dumps([run.as_dict(), data, torch.device(device).type], sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return pair_path(out, run.model, run.dataset).with_name(f"{run.dataset}__{run.model}-{digest}.ckpt")


def reproduce(datasets=("mnist", "cifar10", "cifar100"), models=KINDS, out="results", *,
              grid: str | None = None, device="auto", download: bool = True, progress: bool = True,
              **changes) -> list[dict]:
    """Run every (model, dataset) pair not yet finished in ``out``; rebuild the tables; return rows.

    Each pair trains as ``coursekit.runs.settings(grid, dataset, model, **changes)`` says, e.g.
    ``reproduce(["mnist"], ["cnn"], grid="cpu", epochs=3)``; ``grid`` defaults to
    :func:`default_grid` of the device. Files written in ``out``: ``results.csv``, ``results.md``,
    ``accuracy_vs_time.png``, and per pair ``pairs/*.json`` + weights (and ``pairs/*.ckpt`` while
    a pair is unfinished).
    """
    unknown = [m for m in models if m not in KINDS]
    if unknown:
        raise ValueError(f"unknown model kind(s) {unknown}; known kinds: {', '.join(KINDS)}")
    device = config.get_device(device)
    grid = grid or default_grid(device)
    runs = [settings(grid, d, m, **changes) for d in datasets for m in models]  # bad names fail here
    try:
        for run in tqdm(runs, desc="pairs", unit="pair", disable=not progress):
            run_pair(run, out, device=device, download=download, progress=progress)
    finally:  # also after Ctrl-C: the tables show every pair finished so far
        rows = write_results(out)
    return rows


def estimate_seconds(run: Run, device="auto", steps: int = 3) -> float:
    """Estimated seconds to train ``run`` (validation and test included).

    Times ``steps`` training steps on random inputs [batch_size, C, H, W] after one warm-up step,
    in the precision ``fit`` would choose, then scales: 90% of the images train, 10% validate,
    10,000 (or ``subset``) test images, an evaluation batch costing about a third of a training
    step. Data loading is not counted.
    """
    s, device, info = run, config.get_device(device), dataset_info(run.dataset)
    with torch.random.fork_rng():  # leaves the seeded run that follows untouched
        # build_model, not build_run: timing needs no seeded start, and Python's and NumPy's
        # generators (which build_run reseeds, outside fork_rng's reach) stay as they were
        net = build_model(run.model, run.dataset, run.grid, **run.sizes).to(device)
        x = torch.randn(s.batch_size, info.channels, info.image_size, info.image_size, device=device)
        precision = choose_precision(net, x, device) if s.precision == "auto" else s.precision
        step = step_seconds(net, x, precision, steps)
    images = s.subset or info.train_size
    batches = lambda n: -(-round(n) // s.batch_size)  # noqa: E731  (ceiling division)
    train_batches = batches(0.9 * images) if s.max_steps is None else min(s.max_steps, batches(0.9 * images))
    per_epoch = train_batches + batches(0.1 * images) / 3
    return step * (s.epochs * per_epoch + batches(min(images, 10_000)) / 3)


def write_results(out) -> list[dict]:
    """Rebuild ``results.csv``, ``results.md`` and ``accuracy_vs_time.png`` from the finished pairs."""
    records = load_pairs(out)
    rows = [r["row"] for r in records]
    order = list(DATASETS)
    rows.sort(key=lambda r: (KINDS.index(r["model"]), order.index(r["dataset"])))
    if not rows:
        return rows
    out = Path(out)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    save_atomically(buffer.getvalue(), out / "results.csv")
    machines = "; ".join(dict.fromkeys(r.get("machine", "a machine not recorded") for r in records))
    lines = [f"# Results\n\nMeasured with `python -m coursekit.reproduce` on {machines}."]
    if any(r["settings"]["fast"] for r in records):
        lines.append("FAST MODE: tiny subsets and a few training steps, for CI only; these numbers teach nothing.")
    stand_ins = sorted({r["dataset"] for r in rows if r["stand_in"]})
    if stand_ins:
        lines.append(f"> **WARNING: the rows for {', '.join(stand_ins)} were trained and tested on "
                     "GENERATED STAND-IN images, not on the real dataset.** They only show that the "
                     "code runs.")
    lines.append("Accuracies in %: the epoch is chosen on a validation split held out of the training "
                 "set; the test set is scored once with those weights. Inference: median after "
                 "warm-up, eval mode, random inputs.")
    shown = [{COLUMNS[k]: "n/a (fast mode)" if r[k] is None else r[k] for k in COLUMNS} for r in rows]
    table = bench.markdown_table(shown)
    save_atomically("\n\n".join(lines + [table]) + "\n", out / "results.md")
    plot_results(rows).savefig(out / "accuracy_vs_time.png", dpi=120, bbox_inches="tight")
    return rows


def plot_results(rows: list[dict]):
    """A figure: test accuracy per model and dataset (bars), and accuracy against ms per image.

    Colour names the model (legend on the bars), marker shape the data source (legend on the right).
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    fig = Figure(figsize=(11, 4), layout="constrained")
    bars, scatter = fig.subplots(1, 2)
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    models = list(dict.fromkeys(r["model"] for r in rows))
    width = 0.8 / len(models)
    source = {d: next(r["data"] for r in rows if r["dataset"] == d) for d in datasets}  # e.g. "CIFAR-10 (JPEG copy)"
    marker = {d: "os^Dv"[i % 5] for i, d in enumerate(datasets)}
    for j, m in enumerate(models):
        for i, d in enumerate(datasets):
            r = next((r for r in rows if r["model"] == m and r["dataset"] == d), None)
            if r is not None:
                bars.bar(i + j * width, r["test_acc"], width, color=f"C{j}", label=m if i == 0 else None)
                scatter.scatter(r["ms_per_image"], r["test_acc"], color=f"C{j}", marker=marker[d])
    bars.set_xticks([i + 0.4 - width / 2 for i in range(len(datasets))],
                    [textwrap.fill(source[d], 20) for d in datasets])
    bars.set_ylim(0, 115)  # room above 100% for the legend
    bars.set_yticks(range(0, 101, 20))
    bars.set_ylabel("test accuracy (%)")
    bars.set_title("Accuracy at the best validation epoch")
    bars.legend(ncol=len(models), loc="upper center", fontsize=8)
    scatter.set_xscale("log")
    scatter.margins(x=0.1, y=0.08)
    scatter.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))  # 0.1, 0.2, 0.5, 1, 2, 5, ...
    scatter.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    scatter.xaxis.set_minor_formatter(NullFormatter())
    scatter.set_xlabel(f"ms per image, batch 1 ({rows[0]['device']})")
    scatter.set_ylabel("test accuracy (%)")
    scatter.set_title("Accuracy against inference time (colour: model)")
    shapes = [Line2D([], [], color="grey", marker=marker[d], linestyle="", label=textwrap.fill(source[d], 20))
              for d in datasets]
    scatter.legend(handles=shapes, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)
    return fig


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m coursekit.reproduce", description=__doc__.split("\n")[0])
    p.add_argument("--datasets", default="mnist,cifar10,cifar100", help="comma-separated names")
    p.add_argument("--grid", choices=GRIDS, default=None,
                   help="model sizes and run settings (default: reference on a GPU, cpu elsewhere)")
    p.add_argument("--models", default=",".join(KINDS), help="comma-separated kinds")
    p.add_argument("--epochs", type=int, default=None, help="default: the run's (fast mode: 1)")
    p.add_argument("--out", default="results", help="folder for the results (default: results)")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=None, help="default: the run's (fast mode: 16)")
    p.add_argument("--lr", type=float, default=None, help="default: the run's")
    p.add_argument("--seed", type=int, default=None, help="default: the run's (0)")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="default auto: bf16 autocast where it measures faster for a model")
    p.add_argument("--subset", type=int, default=None, help="train on N images (default: all)")
    p.add_argument("--no-download", action="store_true", help="never download missing datasets")
    args = p.parse_args(argv)
    device = config.setup(args.seed or 0, args.device)
    try:
        grid = args.grid or default_grid(device)
        print(f"grid: {grid}")
        rows = reproduce(args.datasets.split(","), args.models.split(","), args.out, grid=grid,
                         device=device, download=not args.no_download, epochs=args.epochs,
                         batch_size=args.batch_size, lr=args.lr, seed=args.seed, subset=args.subset,
                         precision=args.precision)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"Interrupted: finished pairs, and the finished epochs of the pair in progress, are kept in "
              f"{args.out}; run the same command to go on.")
        return 130
    print((Path(args.out) / "results.md").read_text() if rows else "no results")
    return 0


if __name__ == "__main__":
    sys.exit(main())
