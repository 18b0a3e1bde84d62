"""The test-set attack on the homework's grade, and what the grader credits it now.

    python benchmarks/test_set_attack.py [--epochs 8] [--threads 1]

A ViT with the reference solution's settings is trained on Fashion-MNIST's 10,000 test images (what
a kernel could do while the grader mounted them, and what weights pasted from elsewhere carry), then
measured as the grader measures: on the test images, and on the training images the homework's
loaders hold out (the test split every kernel now sees instead, :func:`coursekit.grading.tasks.make_kernel_data`).
It prints both accuracies and the ViT's share of the training points before (test accuracy alone) and
now (:func:`coursekit.scorers.credited_accuracy`). Normal mode only: fast mode's thresholds teach nothing.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import nbformat
import torch

from coursekit import homework as hw
from coursekit.bench import environment
from coursekit.config import setup
from coursekit.data import split_indices
from coursekit.models import build_model
from coursekit.scorers import credited_accuracy
from coursekit.tensordata import TensorLoader, load_split
from coursekit.train import evaluate, fit

SOLUTION = Path(__file__).resolve().parent.parent / "notebooks" / "solutions" / "04_fashion_mnist_homework.ipynb"


def solution_config() -> dict:
    """The reference solution's ``vit_config``, read from its config cell."""
    cell = next(c for c in nbformat.read(SOLUTION, as_version=4).cells
                if c.metadata.get("coursekit", {}).get("task") == "config")
    scope: dict = {}
    exec(cell.source.replace("### BEGIN SOLUTION", "").replace("### END SOLUTION", ""), scope)
    return scope["vit_config"]


def share(acc: float) -> float:
    """The ViT's share of the training points at accuracy ``acc`` (the real thresholds)."""
    return min(1.0, max(0.0, (acc - hw.FLOORS["ViT"]) / (hw.THRESHOLDS["ViT"] - hw.FLOORS["ViT"])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = setup(seed=0, device="cpu")
    train, test = load_split("fashion_mnist", train=True), load_split("fashion_mnist", train=False)
    held_out = split_indices(train.targets, train.targets[:0])[1]  # homework.loaders' validation images
    test_loader, held_loader = TensorLoader(test, None, 128), TensorLoader(train, held_out, 128)
    config = solution_config()
    vit = build_model("vit", "fashion_mnist", **config)
    start = time.perf_counter()
    fit(vit, TensorLoader(test, None, 128, shuffle=True), epochs=args.epochs, lr=args.lr, device=device,
        progress=False)
    minutes = (time.perf_counter() - start) / 60
    test_acc, held_acc = (evaluate(vit, loader, device)["acc"] for loader in (test_loader, held_loader))
    counted = credited_accuracy(test_acc, len(test), held_acc, len(held_out))
    record = {"config": config, "epochs": args.epochs, "lr": args.lr, "train_minutes": round(minutes, 2),
              "test_acc": round(test_acc, 4), "held_out_acc": round(held_acc, 4), "counted_acc": round(counted, 4),
              "vit_share_before": round(share(test_acc), 3), "vit_share_now": round(share(counted), 3),
              "environment": environment()}
    print(f"ViT trained on the 10,000 test images: {args.epochs} epochs in {minutes:.1f} min ({environment()})")
    print(f"accuracy on the test images {test_acc:.4f}, on {len(held_out):,} held-out training images {held_acc:.4f}")
    print(f"the ViT's share of the training points: {share(test_acc):.0%} before (test accuracy alone), "
          f"{share(counted):.0%} now (counted as {counted:.4f})")
    print(json.dumps(record))


if __name__ == "__main__":
    main()
