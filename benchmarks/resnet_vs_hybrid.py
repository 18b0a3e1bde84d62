"""Parameters and training time per epoch of the CPU grid's ResNet against its hybrid, side by side.

Both train with ``fit`` (AdamW, one-cycle, fp32) on the real CIFAR-10 training loader of the CPU
grid (batch 128, padded crops and flips) in this one process, on the same threads. Rounds
alternate (hybrid, resnet, hybrid, resnet, ...) so that drift in a shared machine's speed hits
both; each round times ``--steps`` training steps and one pass over the validation split. An
epoch is projected as (training batches x median seconds per step) + median validation pass.
``--resnet`` adds other ResNet sizes to compare (how the grid's was chosen).

    OMP_NUM_THREADS=1 python benchmarks/resnet_vs_hybrid.py --threads 1 [--steps 30] [--rounds 3]
        [--resnet "widths=(16, 32, 64, 128), blocks=(1, 1, 1)"]
"""

from __future__ import annotations

import argparse
import ast
import statistics
import time

import torch

from coursekit.bench import count_parameters, environment, markdown_table
from coursekit.data import get_loaders, source_of
from coursekit.models import build_model
from coursekit.runs import settings
from coursekit.train import evaluate, fit


def parse_sizes(text: str) -> dict:
    """``"widths=(16, 32, 64, 128), blocks=(1, 0, 1)"`` -> ``{"widths": (16, 32, 64, 128), "blocks": (1, 0, 1)}``."""
    call = ast.parse(f"f({text})", mode="eval").body
    return {k.arg: ast.literal_eval(k.value) for k in call.keywords}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=30, help="training steps timed per model and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--resnet", action="append", default=[],
                        help="sizes of another ResNet to time, e.g. 'widths=(16, 32, 64, 128)'")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    run = settings("cpu", "cifar10", "resnet", fast=False)
    hybrid_run = settings("cpu", "cifar10", "hybrid", fast=False)
    if (run.batch_size, run.augment) != (hybrid_run.batch_size, hybrid_run.augment):
        raise ValueError("the grid's ResNet and hybrid train with different batches: time them apart")
    models = {"hybrid": build_model("hybrid", "cifar10", "cpu"), "resnet": build_model("resnet", "cifar10", "cpu")}
    for sizes in args.resnet:
        models[f"resnet {sizes}"] = build_model("resnet", "cifar10", "cpu", **parse_sizes(sizes))
    train, val, _ = get_loaders("cifar10", batch_size=run.batch_size, augment=run.augment, download=False)
    print(f"{environment()}; torch.get_num_threads() = {torch.get_num_threads()}")
    print(f"data: {source_of(train)}, batch {run.batch_size}, augment {run.augment}, "
          f"{len(train)} training batches and {len(val.dataset):,} validation images per epoch; fp32")
    step_s = {name: [] for name in models}
    val_s = {name: [] for name in models}
    for name, model in models.items():  # warm-up: first calls allocate and pick kernels
        fit(model, train, epochs=1, max_steps=2, precision="fp32", progress=False)
    for _ in range(args.rounds):
        for name, model in models.items():
            start = time.perf_counter()
            fit(model, train, epochs=1, max_steps=args.steps, precision="fp32", progress=False)
            step_s[name].append((time.perf_counter() - start) / args.steps)
            start = time.perf_counter()
            evaluate(model, val, "cpu")
            val_s[name].append(time.perf_counter() - start)
    rows = []
    hybrid_epoch = len(train) * statistics.median(step_s["hybrid"]) + statistics.median(val_s["hybrid"])
    for name, model in models.items():
        step = statistics.median(step_s[name])
        epoch = len(train) * step + statistics.median(val_s[name])
        rows.append({"model": name, "parameters": count_parameters(model),
                     "parameters / hybrid's": count_parameters(model) / count_parameters(models["hybrid"]),
                     "s per step": step, "s per validation pass": statistics.median(val_s[name]),
                     "s per epoch (projected)": epoch, "epoch / hybrid's": epoch / hybrid_epoch})
    print(f"medians of {args.rounds} rounds of {args.steps} steps each")
    print(markdown_table(rows, digits=3))


if __name__ == "__main__":
    main()
