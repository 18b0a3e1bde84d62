"""Data loading: the per-image path (torchvision transforms, DataLoader) against the tensor path.

For each dataset, side by side in one run:
1. images/s of one epoch of training batches (augmented as the course's experiments train that
   dataset: crops and flips on CIFAR), alternating the two paths, median of the repeats;
2. the share of a CNN training run spent waiting for the next batch, with each path.

    python benchmarks/data_throughput.py [--datasets mnist,cifar10] [--repeats 3] [--steps 100]

Needs the real files (COURSEKIT_DATA); the tensor path's cache is built before timing starts.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from coursekit.bench import environment
from coursekit.data import dataset_info, default_transform, get_loaders, source_of
from coursekit.models import build_model


def loaders(name: str, path: str, batch_size: int):
    """The training loader of ``name`` through ``path`` ("per-image" or "tensor")."""
    augment = dataset_info(name).augment
    if path == "tensor":
        return get_loaders(name, batch_size=batch_size, augment=augment, download=False)[0]
    transform = default_transform(name, train=True, augment=augment)  # today's per-image pipeline
    return get_loaders(name, batch_size=batch_size, transform=transform, download=False)[0]


def epoch_images_per_s(loader) -> float:
    start, count = time.perf_counter(), 0
    for _, labels in loader:
        count += len(labels)
    return count / (time.perf_counter() - start)


def waiting_share(loader, name: str, steps: int) -> tuple[float, float]:
    """(share of the time spent waiting for batches, training images/s) over ``steps`` CNN steps."""
    torch.manual_seed(0)
    model = build_model("cnn", name)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batches, waiting, done = iter(loader), 0.0, 0
    start = time.perf_counter()
    for _ in range(steps):
        t = time.perf_counter()
        try:
            images, labels = next(batches)
        except StopIteration:
            batches = iter(loader)
            images, labels = next(batches)
        waiting += time.perf_counter() - t
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        done += len(labels)
    total = time.perf_counter() - start
    return waiting / total, done / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="mnist,cifar10")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=100, help="CNN training steps per path")
    args = parser.parse_args()
    print(f"environment: {environment()}")
    print(f"batch size {args.batch_size}; epoch speed: median of {args.repeats} alternating epochs; "
          f"waiting: {args.steps} CNN training steps (AdamW) after the epochs")
    paths = ("per-image", "tensor")
    for name in args.datasets.split(","):
        start = time.perf_counter()
        built = {p: loaders(name, p, args.batch_size) for p in paths}  # builds the cache if needed
        print(f"\n{source_of(built['tensor'])}: {len(built['tensor'].dataset):,} training images, "
              f"augmented: {dataset_info(name).augment} (loaders ready in {time.perf_counter() - start:.1f} s)")
        speeds = {p: [] for p in paths}
        for _ in range(args.repeats):
            for p in paths:
                speeds[p].append(epoch_images_per_s(built[p]))
        for p in paths:
            share, train_speed = waiting_share(built[p], name, args.steps)
            print(f"  {p:9s}  {statistics.median(speeds[p]):9,.0f} images/s per epoch "
                  f"(runs: {', '.join(f'{s:,.0f}' for s in speeds[p])}); CNN training "
                  f"{train_speed:6,.0f} images/s, {100 * share:4.1f}% of it waiting for data")
        ratio = statistics.median(speeds["tensor"]) / statistics.median(speeds["per-image"])
        print(f"  tensor / per-image: {ratio:.1f}x  (goal: waiting at most 5% of a CNN epoch)")


if __name__ == "__main__":
    main()
